"""Training examples, the batch collator and the data order that a resume continues exactly.

Three tasks read the split (or labeled) Parquet/JSONL files of the workspace:

- ``sft``: a ``messages`` column (conversations) or ``instruction``/``response`` (with an
  optional ``system``) through the tokenizer's chat template; the loss sees only the
  assistant's tokens (``return_assistant_tokens_mask``), everything else is ``-100``;
- ``pretrain``: plain text, every token is a target;
- ``classification``: text and a label from the configured label set.

:class:`DataOrder` maps a global sample position to an example: epoch ``p // n`` in a permutation
seeded by ``seed + epoch``. A checkpoint stores only the position (and the windows a spike
rollback skipped), so a resumed run sees exactly the samples the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline.errors import ConfigError, DataError, NotFoundError

IGNORE = -100  # label value the loss skips


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int] | int  # per-token targets (LM tasks) or a class index


@dataclass
class Dataset:
    examples: list[Example]
    dropped: int = 0  # rows with nothing to learn from after truncation
    label_names: list[str] = field(default_factory=list)


def read_table(path: Path) -> Any:
    """A Parquet file, a directory of Parquet shards, or a JSONL file, as an Arrow table."""
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    if not path.exists():
        raise NotFoundError(f"{path} does not exist", fix="run `dvc repro` to make the split")
    try:
        if path.is_dir():
            shards = sorted(path.glob("*.parquet"))
            if not shards:
                raise DataError(f"{path} holds no .parquet files")
            return pa.concat_tables([pq.read_table(s) for s in shards], promote_options="default")
        if path.suffix in (".jsonl", ".json"):
            return pj.read_json(path)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def column_texts(table: Any, column: str | None, path: Path) -> list[str]:
    names = table.schema.names
    if column is not None:
        if column not in names:
            raise DataError(
                f"{path} has no column {column!r} (columns: {', '.join(names)})",
                fix="set data.text_column to one of them",
            )
        return [v or "" for v in table.column(column).to_pylist()]
    if "text" in names:
        return [v or "" for v in table.column("text").to_pylist()]
    if "record_id" in names:  # a canonical table of another kind: all of its text
        from offline.data.records import joined_text

        return [t or "" for t in joined_text(table.combine_chunks().to_batches()[0])]
    raise DataError(
        f"{path} has no text column (columns: {', '.join(names)})",
        fix="set data.text_column",
    )


def _conversations(table: Any, path: Path) -> list[list[dict[str, str]]]:
    names = table.schema.names
    if "messages" in names:
        return [
            [{"role": m["role"], "content": m["content"] or ""} for m in (row or [])]
            for row in table.column("messages").to_pylist()
        ]
    if "instruction" in names and "response" in names:
        system = table.column("system").to_pylist() if "system" in names else [None] * len(table)
        rows = zip(
            system,
            table.column("instruction").to_pylist(),
            table.column("response").to_pylist(),
            strict=True,
        )
        return [
            ([{"role": "system", "content": s}] if s else [])
            + [{"role": "user", "content": i or ""}, {"role": "assistant", "content": r or ""}]
            for s, i, r in rows
        ]
    raise DataError(
        f"{path}: task sft needs a messages column or instruction + response columns"
        f" (columns: {', '.join(names)})",
        fix="point data.train at a conversation or instruction dataset, or use task: pretrain",
    )


def load_dataset(
    path: Path,
    task: str,
    tok: Any,
    *,
    max_length: int,
    text_column: str | None = None,
    label_column: str = "label",
    label_names: Sequence[str] | None = None,
) -> Dataset:
    """Tokenize ``path`` for ``task``.

    Raises:
        NotFoundError: ``path`` is missing.
        DataError: the file is empty, lacks the task's columns, or holds labels outside
            ``label_names``.
    """
    table = read_table(path)
    if table.num_rows == 0:
        raise DataError(f"{path} has no rows", fix="check the split and cleaning metrics")
    if task == "sft":
        return _sft(_conversations(table, path), tok, max_length)
    texts = column_texts(table, text_column, path)
    if task == "pretrain":
        enc = tok([t + tok.eos_token for t in texts], truncation=True, max_length=max_length)
        examples = [Example(ids, list(ids)) for ids in enc["input_ids"] if len(ids) > 1]
        return Dataset(examples, dropped=len(texts) - len(examples))
    if label_column not in table.schema.names:
        raise DataError(
            f"{path} has no label column {label_column!r}"
            f" (columns: {', '.join(table.schema.names)})",
            fix="set data.label_column, or train on data/labeled from `offline label pull`",
        )
    labels = [None if v is None else str(v) for v in table.column(label_column).to_pylist()]
    names = list(label_names) if label_names else sorted({v for v in labels if v is not None})
    unknown = sorted({v for v in labels if v is not None and v not in names})
    if unknown:
        raise DataError(
            f"{path}: labels not in the label set: {', '.join(unknown)}"
            f" (label set: {', '.join(names)})",
            fix="add them to data.labels or relabel those rows",
        )
    index = {name: i for i, name in enumerate(names)}
    enc = tok(texts, truncation=True, max_length=max_length)
    examples = [
        Example(ids, index[label])
        for ids, label in zip(enc["input_ids"], labels, strict=True)
        if label is not None and ids
    ]
    if not examples:
        raise DataError(f"{path}: no row has both text and a label")
    return Dataset(examples, dropped=len(texts) - len(examples), label_names=names)


def _sft(conversations: list[list[dict[str, str]]], tok: Any, max_length: int) -> Dataset:
    if not tok.chat_template or "generation" not in tok.chat_template:
        raise ConfigError(
            "the tokenizer's chat template does not mark assistant tokens ({% generation %}),"
            " so the loss cannot be limited to them",
            fix="use a tokenizer whose template has {% generation %} (offline train init-model"
            " writes one)",
        )
    examples = []
    for messages in conversations:
        if not any(m["role"] == "assistant" for m in messages):
            continue
        enc = tok.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            truncation=True,
            max_length=max_length,
        )
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        labels = [i if m else IGNORE for i, m in zip(ids, mask, strict=True)]
        if any(m for m in mask[1:]):  # something to predict after the first token
            examples.append(Example(ids, labels))
    return Dataset(examples, dropped=len(conversations) - len(examples))


def collate(examples: Sequence[Example], pad_id: int, task: str) -> dict[str, Any]:
    """Right-pad to the longest example; padding is masked out of attention and the loss."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        attention[row, : len(e.input_ids)] = 1
    batch = {"input_ids": ids, "attention_mask": attention}
    if task == "classification":
        batch["labels"] = torch.tensor([int(e.labels) for e in examples])  # type: ignore[arg-type]
    else:
        labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
        for row, e in enumerate(examples):
            assert isinstance(e.labels, list)
            labels[row, : len(e.labels)] = torch.tensor(e.labels)
        batch["labels"] = labels
    return batch


def target_tokens(batch: dict[str, Any], task: str) -> int:
    """Tokens the loss is computed on (classification: one per row)."""
    if task == "classification":
        return int(batch["labels"].numel())
    return int((batch["labels"][:, 1:] != IGNORE).sum())


@dataclass
class DataOrder:
    """Global sample positions -> example indices; the run's whole data order in a few ints.

    ``skip`` holds half-open position windows a spike rollback excluded; they stay excluded
    for the rest of the run, resumes included.
    """

    size: int
    seed: int
    shuffle: bool = True
    position: int = 0
    skip: list[tuple[int, int]] = field(default_factory=list)
    _perm: dict[int, list[int]] = field(default_factory=dict, repr=False)

    def _index(self, pos: int) -> int:
        epoch, offset = divmod(pos, self.size)
        if not self.shuffle:
            return offset
        if epoch not in self._perm:
            import torch

            gen = torch.Generator().manual_seed(self.seed + epoch)
            self._perm = {epoch: torch.randperm(self.size, generator=gen).tolist()}
        return self._perm[epoch][offset]

    def take(self, count: int) -> tuple[list[int], tuple[int, int]]:
        """The next ``count`` example indices and the position window they came from."""
        start = self.position
        out: list[int] = []
        pos = start
        while len(out) < count:
            window = next((w for w in self.skip if w[0] <= pos < w[1]), None)
            if window is not None:
                pos = window[1]
                continue
            out.append(self._index(pos))
            pos += 1
        self.position = pos
        return out, (start, pos)

    def state(self) -> dict[str, Any]:
        return {"position": self.position, "skip": [list(w) for w in self.skip]}

    def restore(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
        windows = {tuple(w) for w in self.skip} | {tuple(w) for w in state.get("skip", [])}
        self.skip = sorted((int(a), int(b)) for a, b in windows)
