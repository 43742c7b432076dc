"""What the server runs: an ``offline export`` directory, verified and opened through
:mod:`offline.deploy.artifact`, behind one interface for every backend (``input_ids`` at the
export's fixed length -> logits) and, for an eager causal LM, the model itself for generation
with a KV cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline.deploy import artifact
from offline.deploy.artifact import AUTO_ORDER, BACKENDS
from offline.deploy.artifact import verify as verify_manifest

__all__ = ["AUTO_ORDER", "BACKENDS", "ServedModel", "load_model", "verify_manifest"]


@dataclass
class ServedModel:
    id: str  # the name clients send as "model"
    version: str  # id@<manifest sha256 prefix>: in every response and metric
    kind: str  # "causal-lm" or "sequence-classification"
    backend: str
    path: Path
    seq_len: int
    labels: list[str] | None
    tokenizer: Any
    pad_id: int
    eos_id: int | None
    forward: Callable[[Any], Any]  # (n, seq_len) int64 numpy -> float32 numpy logits
    created: int = 0
    lm: Any = None  # eager causal LM: served with a KV cache and continuous batching
    max_context: int = 0  # tokens a generation may hold (prompt and reply)
    stop_ids: frozenset[int] = frozenset()
    defaults: dict[str, Any] = field(default_factory=dict)  # generation_config's sampling
    device: str = "cpu"
    decoder: Any = None  # a decoder artifact: the same engine, over the artifact's KV cache

    def pad(self, rows: list[list[int]]) -> Any:
        import numpy as np

        ids = np.full((len(rows), self.seq_len), self.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row[: self.seq_len]
        return ids


def load_model(
    directory: Path, backend: str = "auto", name: str | None = None, device: str = "cpu"
) -> ServedModel:
    """Verify ``directory`` against its manifest and load it with ``backend`` ("auto": an
    eager causal LM when its source model is there, since only it has a KV cache; otherwise
    the fastest artifact for this host).

    Raises:
        NotFoundError: no export directory, or (eager) no source model.
        ConfigError: no artifact of that backend for this host.
        IntegrityError: a file differs from the manifest (the server must not start).
    """
    if backend == "auto":
        card = artifact.read_card(directory)
        if card["kind"] == "causal-lm" and artifact.source_dir(card, directory) is not None:
            backend = "eager"
    opened = artifact.open_export(directory, backend, device, generate=True)
    card, tok = opened.card, opened.tokenizer
    model_id = name or directory.resolve().name
    defaults = artifact.generation_defaults(card)
    stop_ids = set(defaults.pop("stop_ids", []))
    if tok.eos_token_id is not None:
        stop_ids.add(int(tok.eos_token_id))
    return ServedModel(
        id=model_id,
        version=f"{model_id}@{opened.digest[:12]}",
        kind=card["kind"],
        backend=opened.backend,
        path=directory,
        seq_len=int(card["seq_len"]),
        labels=card.get("labels"),
        tokenizer=tok,
        pad_id=int(card["pad_token_id"] if card.get("pad_token_id") is not None else 0),
        eos_id=tok.eos_token_id,
        forward=opened.forward,
        created=int((directory / artifact.MANIFEST).stat().st_mtime),
        lm=opened.lm,
        decoder=opened.decoder,
        # a window artifact is a function of seq_len tokens; only a KV cache reaches further
        max_context=(
            artifact.max_context(card)
            if opened.lm is not None or opened.decoder is not None
            else int(card["seq_len"])
        ),
        stop_ids=frozenset(stop_ids),
        defaults=defaults,
        device=opened.device,
    )
