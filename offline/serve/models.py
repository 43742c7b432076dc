"""What the server runs: an ``offline export`` directory, verified against its manifest, behind
one interface for every backend (``input_ids`` at the export's fixed length -> logits).

Nothing is loaded that the manifest does not list with a matching sha256. Weights are read
from safetensors (eager), TorchScript archives, ``torch.export`` archives or TVM libraries;
pickled weight files are never opened.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline.errors import ConfigError, IntegrityError, NotFoundError
from offline.fsutil import sha256_file

BACKENDS = ("eager", "torchscript", "pt2", "tvm")
AUTO_ORDER = ("tvm", "torchscript", "pt2")  # fastest first (see the export card)


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

    def pad(self, rows: list[list[int]]) -> Any:
        import numpy as np

        ids = np.full((len(rows), self.seq_len), self.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row[: self.seq_len]
        return ids


def verify_manifest(directory: Path, needed: list[str]) -> str:
    """Check every file ``manifest.json`` lists, and that ``needed`` are among them.

    Returns:
        The sha256 of ``manifest.json`` itself (the model version).

    Raises:
        NotFoundError: no export directory or no manifest.
        IntegrityError: a file is missing, differs from its sha256, or is not listed.
    """
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise NotFoundError(
            f"--model {directory}: no manifest.json, so its files cannot be verified",
            fix="serve an `offline export` output directory (e.g. models/export/classifier-int8)",
        )
    try:
        files: dict[str, str] = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{manifest_path} is not a manifest ({exc})", fix="export the model again"
        ) from None
    for rel, expected in sorted(files.items()):
        path = directory / rel
        if not path.is_file():
            raise IntegrityError(
                f"{path} is listed in {manifest_path} but missing", fix="export the model again"
            )
        if sha256_file(path) != expected:
            raise IntegrityError(
                f"{path} does not match its sha256 in {manifest_path}: refusing to load it",
                fix="restore the file from the bundle or export the model again",
            )
    unlisted = [n for n in needed if n not in files]
    if unlisted:
        raise IntegrityError(
            f"{directory}: {', '.join(unlisted)} not in manifest.json: refusing to load",
            fix="export the model again (the manifest lists every file it writes)",
        )
    return sha256_file(manifest_path)


def _card(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise NotFoundError(
            f"--model {directory} does not exist",
            fix="run `offline export ... --out DIR` (or `dvc repro export`) and pass that DIR",
        )
    card_path = directory / "export_card.json"
    if not card_path.is_file():
        raise NotFoundError(
            f"--model {directory} has no export_card.json",
            fix="serve an `offline export` output directory (e.g. models/export/trained-int8)",
        )
    card: dict[str, Any] = json.loads(card_path.read_text())
    return card


def _host_target() -> str:
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())


def _pick(card: dict[str, Any], backend: str, directory: Path) -> dict[str, Any] | None:
    """The card's artifact for ``backend`` on this host (None for eager)."""
    if backend == "eager":
        return None
    here = [a for a in card["artifacts"] if a["target"] == _host_target()]
    order = AUTO_ORDER if backend == "auto" else (backend,)
    for fmt in order:
        for art in here:
            if art["format"] == fmt:
                return dict(art)
    found = ", ".join(f"{a['format']} ({a['target']})" for a in card["artifacts"]) or "none"
    raise ConfigError(
        f"--model {directory} has no {backend} artifact for {_host_target()} (it has: {found})",
        fix=f"export it: offline export --format {backend if backend != 'auto' else 'tvm'}"
        f" --out {directory}, or pick --backend among the formats it has",
    )


def _source_dir(card: dict[str, Any], directory: Path) -> Path:
    """The eager model the export was made from: the card's path, as given or relative to a
    parent of the export directory (a workspace moved as a whole still works)."""
    given = Path(card["model"])
    candidates = [given] + [p / given for p in directory.resolve().parents]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise NotFoundError(
        f"--backend eager needs the source model {given} of {directory}, which is not there",
        fix="serve from the workspace that made the export, or use --backend torchscript|pt2|tvm",
    )


def load_model(directory: Path, backend: str = "auto", name: str | None = None) -> ServedModel:
    """Verify ``directory`` against its manifest and load it with ``backend``.

    Raises:
        NotFoundError: no export directory, or (eager) no source model.
        ConfigError: no artifact of that backend for this host.
        IntegrityError: a file differs from the manifest (the server must not start).
    """
    if backend not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown --backend {backend}", fix=f"use {', '.join(BACKENDS)}")
    card = _card(directory)
    art = _pick(card, backend, directory)
    tokenizer_files = [
        p.relative_to(directory).as_posix()
        for p in sorted((directory / "tokenizer").glob("*"))
        if p.is_file()
    ]
    needed = ["export_card.json", *tokenizer_files] + ([art["path"]] if art else [])
    digest = verify_manifest(directory, needed)
    forward = _forward(directory, card, art)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True)
    model_id = name or directory.resolve().name
    return ServedModel(
        id=model_id,
        version=f"{model_id}@{digest[:12]}",
        kind=card["kind"],
        backend=art["format"] if art else "eager",
        path=directory,
        seq_len=int(card["seq_len"]),
        labels=card.get("labels"),
        tokenizer=tok,
        pad_id=int(card["pad_token_id"] if card.get("pad_token_id") is not None else 0),
        eos_id=tok.eos_token_id,
        forward=forward,
        created=int((directory / "manifest.json").stat().st_mtime),
    )


def _forward(directory: Path, card: dict[str, Any], art: dict[str, Any] | None) -> Any:
    import torch

    from offline.deploy import export as ex

    if art is None:
        source = _source_dir(card, directory)
        if ex._digest(source) != card["source_sha256"]:
            raise IntegrityError(
                f"{source} has changed since {directory} was exported (source sha256 differs)",
                fix="export again from the current model, or restore the model it was made from",
            )
        run: Callable[[Any], Any] = ex.load(source).model
    else:
        path = directory / art["path"]
        loader = {"torchscript": ex.load_torchscript, "pt2": ex.load_pt2, "tvm": ex.load_tvm}
        run = loader[art["format"]](path)

    def forward(ids: Any) -> Any:
        with torch.inference_mode():
            out = run(torch.from_numpy(ids))
        return out.float().numpy()

    return forward
