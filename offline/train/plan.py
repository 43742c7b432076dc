"""What a run is, decided once before it starts: its identity, precision and DeepSpeed JSON.

The identity is a digest of everything that changes what the weights become (the config less
the fields in ``_NOT_IDENTITY``, the data and model contents, the world size); checkpoints are
kept under it and only a run with the same identity resumes them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline.fsutil import files_digest
from offline.train.config import TrainConfig, deepspeed_config, resolve_precision

# Fields that do not change what the weights become; every other field is part of the run's
# identity, and checkpoints are only resumed by a run with the same identity.
_NOT_IDENTITY = {
    "output_dir",
    "log_dir",
    "metrics_file",
    "plot_file",
    "eval_every",
    "eval_batches",
    "checkpoint",
    "guards",
    "activation_checkpointing",
}


def _file_digest(path: Path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return files_digest(files)


def _model_digest(path: Path) -> str:
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for file in sorted(path.iterdir()):
        if file.is_file():
            digest.update(f"{file.name}:{file.stat().st_size}".encode())
    return digest.hexdigest()


def run_identity(cfg: TrainConfig, root: Path, world_size: int) -> tuple[str, dict[str, Any]]:
    """A short id of what the run computes: config, data and model contents, world size."""
    ident = {k: v for k, v in cfg.model_dump().items() if k not in _NOT_IDENTITY}
    ident["world_size"] = world_size
    ident["model_digest"] = _model_digest(root / cfg.model)
    ident["data_digest"] = {
        name: _file_digest(root / value)
        for name, value in (("train", cfg.data.train), ("validation", cfg.data.validation))
        if value
    }
    text = json.dumps(ident, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12], ident


@dataclass(frozen=True)
class Plan:
    """The numbers a run of ``cfg`` on ``world_size`` ranks of ``accelerator`` derives once."""

    run_id: str
    identity: dict[str, Any]  # what ``run_id`` digests (the card shows its digests)
    run_dir: Path  # checkpoints and the tokenized data, under checkpoint.dir
    precision: str  # ``cfg.precision`` resolved for the accelerator
    deepspeed: dict[str, Any]  # the JSON given to ``deepspeed.initialize``
    per_step: int  # examples one optimizer step takes over all ranks

    @classmethod
    def make(cls, cfg: TrainConfig, root: Path, world_size: int, accelerator: str) -> Plan:
        precision = resolve_precision(cfg.precision, accelerator)
        ds_config = deepspeed_config(cfg, world_size, accelerator)
        run_id, identity = run_identity(cfg, root, world_size)
        return cls(
            run_id=run_id,
            identity=identity,
            run_dir=root / cfg.checkpoint.dir / run_id,
            precision=precision,
            deepspeed=ds_config,
            per_step=cfg.micro_batch_size * cfg.gradient_accumulation_steps * world_size,
        )
