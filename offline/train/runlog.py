"""The run's log: messages on stderr, ``train.jsonl`` and TensorBoard, written by rank 0 only.

``train.jsonl`` holds a line per step (``step``, ``loss``, ``lr``...) and one per event
(``{"event": "eval" | "checkpoint" | "rollback" | ...}``); a resumed run appends to it, so a
step run twice (resume, rollback) appears twice and the last line counts. Every message and
record is redacted (``offline.redact``) before it is written: a config value or an error can
carry a credential. The file is a hash chain (:mod:`offline.audit.chain`: ``seq``/``prev`` on
each line, a checkpoint line signed with the site key every 1000 lines and when the run ends):
``offline audit verify logs/train/train.jsonl`` shows a line edited, deleted or cut.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from offline.audit.chain import ChainWriter
from offline.audit.site import site_key
from offline.redact import redact, redact_tree


class RunLog:
    """What rank ``rank`` says and records about the run under ``directory``.

    Other ranks hold one too, so every rank runs the same code; theirs writes nothing.
    """

    def __init__(self, directory: Path, rank: int) -> None:
        self.directory, self.rank = directory, rank
        self.bar: Any = None  # tqdm on a TTY
        self.tb: Any = None  # TensorBoard writer
        self.jsonl: ChainWriter | None = None

    @property
    def path(self) -> Path:
        return self.directory / "train.jsonl"

    def open(self, *, append: bool) -> None:
        """Start ``train.jsonl``: a resumed run continues the chain of the one it continues; a
        new run starts a new chain (the workspace's site key signs its checkpoints)."""
        if self.rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not append:
                for old in [self.path, *self.directory.glob(f"{self.path.name}.*")]:
                    old.unlink(missing_ok=True)
            self.jsonl = ChainWriter(self.path, site_key(workspace=Path.cwd()))

    def say(self, text: str) -> None:
        if self.rank == 0:
            if self.bar is not None:
                self.bar.write(redact(text), file=sys.stderr)
            else:
                sys.stderr.write(redact(text) + "\n")
                sys.stderr.flush()

    def record(self, record: dict[str, Any]) -> None:
        """One line of ``train.jsonl``, with the time it was written."""
        if self.rank == 0:
            assert self.jsonl is not None, "RunLog.open first"
            self.jsonl.write({"time": round(time.time(), 3), **redact_tree(record)})

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.rank == 0 and self.tb is not None:
            self.tb.add_scalar(name, value, step)

    def reopen_tensorboard(self, purge_step: int | None) -> None:
        """A fresh writer; from ``purge_step`` on, the events a resumed or rewound run will
        write again are dropped."""
        if self.rank != 0:
            return
        if self.tb is not None:
            self.tb.close()
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(self.directory / "tensorboard"), purge_step=purge_step)

    def start_progress(self, total: int, initial: int) -> None:
        """A progress bar for the steps, where stderr is a terminal."""
        if self.rank == 0 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", file=sys.stderr)

    def progress(self, loss: float, lr: float) -> bool:
        """One step on the progress bar; False where there is none (say it instead)."""
        if self.bar is None:
            return False
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        self.bar.update(1)
        return True

    def stop_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def close(self) -> None:
        if self.rank == 0:
            if self.tb is not None:
                self.tb.close()
            if self.jsonl is not None:
                self.jsonl.close()

    def losses(self, upto: int) -> list[dict[str, Any]]:
        """Loss by step up to ``upto`` from ``train.jsonl``; a re-run step keeps its last."""
        if self.rank != 0 or not self.path.is_file():
            return []
        by_step: dict[int, dict[str, Any]] = {}
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if "step" in record and "event" not in record and record["step"] <= upto:
                    by_step[record["step"]] = {"step": record["step"], "loss": record["loss"]}
        return [by_step[s] for s in sorted(by_step)]
