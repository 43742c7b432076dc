"""The export directory, and the one module that writes, reads and verifies it.

An ``offline export`` directory holds:

- ``export_card.json`` (and ``EXPORT_CARD.md``): what was exported from which source model
  (its sha256), the kind of model, its fixed ``seq_len`` for artifacts, its ``max_context`` for
  generation with a KV cache, its generation defaults (stop ids, sampling), every artifact with
  its gate figures;
- ``tokenizer/``, the artifacts themselves, ``parity_sample.npz`` for the edge self-test;
- ``manifest.json``: the sha256 of every other file. Nothing is loaded that it does not list
  with a matching sha256.

``offline export`` writes it (:func:`write_card`, :func:`write_manifest`); ``offline serve``,
``offline evaluate``, the demo and the edge runner read it (:func:`read_card`, :func:`verify`,
:func:`open_export`). Only the standard library is imported at module level: the edge package
ships this file beside ``run_edge.py``.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from offline.errors import ConfigError, IntegrityError, NotFoundError
except ImportError:  # on an edge device, beside run_edge.py

    class _Error(Exception):
        def __init__(self, message: str, *, fix: str = "") -> None:
            super().__init__(f"{message}\n  fix: {fix}" if fix else message)

    ConfigError = IntegrityError = NotFoundError = _Error  # type: ignore[misc,assignment]

CARD, CARD_MD, MANIFEST, TOKENIZER = (
    "export_card.json",
    "EXPORT_CARD.md",
    "manifest.json",
    "tokenizer",
)
BACKENDS = ("eager", "torchscript", "pt2", "tvm")
AUTO_ORDER = ("tvm", "torchscript", "pt2")  # fastest first (see the export card)


# -- writing -------------------------------------------------------------------------------
def source_digest(model_dir: Path) -> str:
    """The sha256 of a model directory's weights and configuration (its .safetensors and .json
    files, names included): what a card records and the eager backend checks."""
    from offline.fsutil import files_digest  # host only: the edge runner never reads a source

    return files_digest(
        sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".json"))
    )


def write_card(directory: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write ``card`` as export_card.json and EXPORT_CARD.md in ``directory``, credentials
    masked (see ``offline.redact``); returns the card as written."""
    from offline.deploy.export import card_markdown
    from offline.redact import redact_tree

    shown: dict[str, Any] = redact_tree(card)
    (directory / CARD).write_text(json.dumps(shown, indent=2) + "\n")
    (directory / CARD_MD).write_text(card_markdown(shown))
    return shown


def write_manifest(directory: Path, target: str, skip_suffix: str = ".tar") -> list[Path]:
    """``manifest.json`` listing the sha256 of every file under ``directory`` (but itself and
    files ending in ``skip_suffix``); returns the files it lists."""
    from offline.fsutil import atomic_write_text, tree_sha256  # host only, as every writer

    files = tree_sha256(
        directory, lambda p: p.name != MANIFEST and not p.name.endswith(skip_suffix)
    )
    manifest = {"target": target, "files": files}
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return [directory / name for name in files]


# -- reading -------------------------------------------------------------------------------
def host_target() -> str:
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine(), platform.machine())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(directory: Path) -> dict[str, Any]:
    """The export card of ``directory``.

    Raises:
        NotFoundError: no such directory, or no card in it.
        IntegrityError: the card is not JSON.
    """
    if not directory.is_dir():
        raise NotFoundError(
            f"--model {directory} does not exist",
            fix="run `offline export ... --out DIR` (or `dvc repro export`) and pass that DIR",
        )
    path = directory / CARD
    if not path.is_file():
        raise NotFoundError(
            f"--model {directory} has no {CARD}",
            fix="serve an `offline export` output directory (e.g. models/export/trained-int8)",
        )
    try:
        card: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise IntegrityError(f"{path} is not JSON ({exc})", fix="export the model again") from None
    return card


def verify(directory: Path, needed: list[str]) -> str:
    """Check every file ``manifest.json`` lists, and that ``needed`` are among them.

    Returns:
        The sha256 of ``manifest.json`` itself (the model version).

    Raises:
        NotFoundError: no manifest.
        IntegrityError: a file is missing, differs from its sha256, or is not listed.
    """
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise NotFoundError(
            f"--model {directory}: no {MANIFEST}, so its files cannot be verified",
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
        if _sha256(path) != expected:
            raise IntegrityError(
                f"{path} does not match its sha256 in {manifest_path}: refusing to load it",
                fix="restore the file from the bundle or export the model again",
            )
    unlisted = [n for n in needed if n not in files]
    if unlisted:
        raise IntegrityError(
            f"{directory}: {', '.join(unlisted)} not in {MANIFEST}: refusing to load",
            fix="export the model again (the manifest lists every file it writes)",
        )
    return _sha256(manifest_path)


def host_formats(card: dict[str, Any]) -> list[str]:
    """The artifact formats of ``card`` this host can run."""
    return list(
        dict.fromkeys(a["format"] for a in card["artifacts"] if a["target"] == host_target())
    )


def pick_decoder(card: dict[str, Any], backend: str) -> dict[str, Any] | None:
    """The card's decoder (a causal LM with its KV cache) for ``backend`` on this host."""
    order = AUTO_ORDER if backend == "auto" else (backend,)
    here = [a for a in card["artifacts"] if a["target"] == host_target() and a.get("decoder")]
    for fmt in order:
        for art in here:
            if art["format"] == fmt:
                return dict(art)
    return None


def pick_artifact(
    card: dict[str, Any], backend: str, directory: Path, generate: bool = False
) -> dict[str, Any] | None:
    """The card's artifact for ``backend`` on this host (None for eager); with ``generate``,
    a causal LM's decoder when it has one."""
    if backend not in ("auto", *BACKENDS):
        raise ConfigError(f"unknown --backend {backend}", fix=f"use {', '.join(BACKENDS)}")
    if backend == "eager":
        return None
    found_decoder = (
        pick_decoder(card, backend) if generate and card["kind"] == "causal-lm" else None
    )
    if found_decoder is not None:
        return found_decoder
    here = [a for a in card["artifacts"] if a["target"] == host_target() and not a.get("decoder")]
    order = AUTO_ORDER if backend == "auto" else (backend,)
    for fmt in order:
        for art in here:
            if art["format"] == fmt:
                return dict(art)
    found = ", ".join(f"{a['format']} ({a['target']})" for a in card["artifacts"]) or "none"
    raise ConfigError(
        f"--model {directory} has no {backend} artifact for {host_target()} (it has: {found})",
        fix=f"export it: offline export --format {backend if backend != 'auto' else 'tvm'}"
        f" --out {directory}, or pick --backend among the formats it has",
    )


def source_dir(card: dict[str, Any], directory: Path) -> Path | None:
    """The eager model the export was made from: the card's path, as given or relative to a
    parent of the export directory (a workspace moved as a whole still works); None if gone."""
    given = Path(card["model"])
    for candidate in [given] + [p / given for p in directory.resolve().parents]:
        if (candidate / "config.json").is_file():
            return candidate
    return None


def max_context(card: dict[str, Any]) -> int:
    """Tokens (prompt and reply) a generation may hold with a KV cache; an export made before
    cards recorded it gives its fixed length."""
    return int(card.get("max_context") or card["seq_len"])


def generation_defaults(card: dict[str, Any]) -> dict[str, Any]:
    """The source model's generation_config.json as the card records it: ``stop_ids`` and the
    sampling defaults it sets (temperature, top_p, top_k, repetition_penalty)."""
    return dict(card.get("generation") or {})


# -- opening -------------------------------------------------------------------------------
@dataclass
class Opened:
    """An export directory verified and loaded with one backend."""

    directory: Path
    card: dict[str, Any]
    backend: str  # the format loaded, or "eager"
    digest: str  # sha256 of manifest.json
    tokenizer: Any
    forward: Callable[[Any], Any]  # (n, seq_len) int64 numpy -> float32 numpy logits
    lm: Any = None  # eager causal LM: the transformers model, for generation with a KV cache
    device: str = "cpu"
    decoder: Any = None  # a decoder artifact (offline.deploy.decoder.Runner), same purpose

    @property
    def kind(self) -> str:
        return str(self.card["kind"])

    @property
    def seq_len(self) -> int:
        return int(self.card["seq_len"])

    @property
    def labels(self) -> list[str] | None:
        return self.card.get("labels")

    @property
    def pad_id(self) -> int:
        pad = self.card.get("pad_token_id")
        return int(pad) if pad is not None else 0

    @property
    def version(self) -> str:
        return f"{self.directory.resolve().name}@{self.digest[:12]}"

    def pad(self, rows: list[list[int]]) -> Any:
        """``rows`` right-padded (and cut) to the export's fixed length."""
        import numpy as np

        ids = np.full((len(rows), self.seq_len), self.pad_id, dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row[: self.seq_len]
        return ids


def open_export(
    directory: Path, backend: str = "auto", device: str = "cpu", generate: bool = False
) -> Opened:
    """Verify ``directory`` against its manifest and load it with ``backend``; ``generate``
    (the server) loads a causal LM's decoder where the export has one, else the fixed-length
    artifact (what evaluation scores).

    ``device`` "cuda" loads the eager backend on the GPU in bf16 (artifacts run on the CPU).

    Raises:
        NotFoundError: no export directory, or (eager) no source model.
        ConfigError: no artifact of that backend for this host.
        IntegrityError: a file differs from the manifest (the server must not start).
    """
    card = read_card(directory)
    art = pick_artifact(card, backend, directory, generate)
    tokenizer_files = [
        p.relative_to(directory).as_posix()
        for p in sorted((directory / TOKENIZER).glob("*"))
        if p.is_file()
    ]
    needed = [CARD, *tokenizer_files] + ([art["path"]] if art else [])
    digest = verify(directory, needed)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory / TOKENIZER, local_files_only=True)
    if art is None:
        lm, forward = _eager(card, directory, device)
        return Opened(directory, card, "eager", digest, tok, forward, lm, device)
    if art.get("decoder"):
        from offline.deploy import decoder

        runner = decoder.load(directory / art["path"], art["format"], art["decoder"])
        return Opened(directory, card, art["format"], digest, tok, _no_window, decoder=runner)
    return Opened(
        directory, card, art["format"], digest, tok, _artifact(directory / art["path"], art)
    )


def _eager(card: dict[str, Any], directory: Path, device: str) -> tuple[Any, Callable[[Any], Any]]:
    import torch

    from offline.deploy import export as ex

    source = source_dir(card, directory)
    if source is None:
        raise NotFoundError(
            f"--backend eager needs the source model {card['model']} of {directory},"
            " which is not there",
            fix="serve from the workspace that made the export,"
            " or use --backend torchscript|pt2|tvm",
        )
    if source_digest(source) != card["source_sha256"]:
        raise IntegrityError(
            f"{source} has changed since {directory} was exported (source sha256 differs)",
            fix="export again from the current model, or restore the model it was made from",
        )
    wrapper = ex.load(source).model
    inner = wrapper.inner
    if device == "cuda":
        inner.to(dtype=torch.bfloat16, device="cuda")

    def forward(ids: Any) -> Any:
        with torch.inference_mode():
            out = wrapper(torch.from_numpy(ids).to(device))
        return out.float().cpu().numpy()

    return (inner if card["kind"] == "causal-lm" else None), forward


def _no_window(ids: Any) -> Any:
    raise ConfigError(
        "a decoder artifact generates with its KV cache; it has no fixed-length forward",
        fix="use the generation routes, or serve a window artifact with --backend",
    )


class TvmDecoder:
    """The ``prefill`` and ``decode`` entries of a TVM decoder library (see
    ``offline.deploy.decoder``) on DLPack arrays, numpy or torch: the caller's cache goes in
    without a copy, the outputs come back as TVM tensors for its ``from_dlpack``. One row per
    call; ``prefill`` takes exactly ``chunk`` tokens (left padded), ``decode`` one."""

    def __init__(self, path: Path, chunk: int) -> None:
        import tvm
        from tvm import relax

        self._tensor = tvm.runtime.from_dlpack
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
        self.chunk = chunk

    def __call__(self, ids: Any, start: Any, pads: Any, past: list[Any]) -> list[Any]:
        entry = "decode" if ids.shape[1] == 1 else "prefill"
        if entry == "prefill" and ids.shape[1] != self.chunk:
            raise ValueError(f"prefill takes {self.chunk} tokens, not {ids.shape[1]}")
        out = self.vm[entry](*[self._tensor(x) for x in (ids, start, pads, *past)])
        return list(out)


def _artifact(path: Path, art: dict[str, Any]) -> Callable[[Any], Any]:
    import torch

    from offline.deploy import export as ex

    loader = {"torchscript": ex.load_torchscript, "pt2": ex.load_pt2, "tvm": ex.load_tvm}
    run = loader[art["format"]](path)

    def forward(ids: Any) -> Any:
        with torch.inference_mode():
            out = run(torch.from_numpy(ids))
        return out.float().numpy()

    return forward
