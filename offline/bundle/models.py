"""Model weights into the bundle: local directories (or the hub, connected side only).

safetensors files are checked structurally (header parses, every tensor lies inside the file);
pickle-based weights can run code when loaded, so they are refused unless the spec allows them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline.bundle.spec import LoadedSpec, Model
from offline.errors import IntegrityError, NetworkError, NotFoundError, OfflineError

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class ModelSource:
    name: str
    directory: Path
    source: str  # "path:…" or "hub:org/name@revision"
    files: tuple[Path, ...]  # relative to directory


def check_safetensors(path: Path) -> int:
    """Validate a safetensors file's header and offsets; returns the tensor count."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise _bad(path, "shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", raw)
        if length > min(_MAX_HEADER, size - 8):
            raise _bad(path, f"header length {length} is larger than the file")
        try:
            header: dict[str, Any] = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _bad(path, f"header is not JSON ({exc})") from exc
    data_size = size - 8 - length
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, info in tensors.items():
        start, end = info.get("data_offsets", (None, None))
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_size):
            raise _bad(
                path, f"tensor {name!r} has offsets {info.get('data_offsets')} outside the data"
            )
    return len(tensors)


def _bad(path: Path, why: str) -> IntegrityError:
    return IntegrityError(
        f"model file {path} is not a valid safetensors file: {why}",
        fix="re-download or re-export the weights",
    )


def collect_model(model: Model, spec: LoadedSpec, hub_cache: Path) -> ModelSource:
    """Find the model's files and check them; hub models are downloaded into ``hub_cache``."""
    if model.path is not None:
        directory = spec.resolve(model.path)
        if not directory.is_dir():
            raise NotFoundError(
                f"model {model.name!r}: directory {directory} not found",
                fix="fix 'path' in the spec (relative paths are relative to the spec file)",
            )
        source = f"path:{model.path}"
    else:
        directory, source = _from_hub(model, hub_cache)
    files = tuple(
        sorted(p.relative_to(directory) for p in directory.rglob("*") if _wanted(p, directory))
    )
    if not files:
        raise NotFoundError(f"model {model.name!r}: {directory} holds no files")
    _check_files(model, directory, files)
    return ModelSource(model.name, directory, source, files)


def _wanted(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    return path.is_file() and not any(part.startswith(".") for part in rel.parts)


def _check_files(model: Model, directory: Path, files: tuple[Path, ...]) -> None:
    pickles = [str(f) for f in files if f.suffix in PICKLE_SUFFIXES]
    if pickles and not model.allow_pickle:
        raise IntegrityError(
            f"model {model.name!r} has pickle-based weights ({', '.join(pickles)}) that can run "
            "code when loaded",
            fix="convert them to safetensors, or set allow_pickle = true for this model if you "
            "trust the source",
        )
    for rel in files:
        if rel.suffix == ".safetensors":
            check_safetensors(directory / rel)


def _from_hub(model: Model, hub_cache: Path) -> tuple[Path, str]:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise OfflineError("hub models need huggingface_hub: make install") from exc
    assert model.hub is not None
    try:
        local = snapshot_download(
            repo_id=model.hub, revision=model.revision, cache_dir=str(hub_cache)
        )
    except Exception as exc:  # the hub client raises many types; all mean "could not get it"
        cls = NetworkError if "connect" in str(exc).lower() else NotFoundError
        raise cls(
            f"model {model.name!r}: cannot fetch {model.hub}@{model.revision or 'main'}: {exc}",
            fix="check the repo id and revision and that the hub (or HF_ENDPOINT mirror) is "
            "reachable; or download it yourself and use 'path'",
        ) from exc
    path = Path(local)
    return path, f"hub:{model.hub}@{path.name}"
