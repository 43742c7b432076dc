"""Model weights into the bundle: local directories (or the hub, connected side only).

The spec's ``include``/``exclude`` patterns choose the files (offline/bundle/patterns.py); a
pattern that matches nothing, or a choice with no weights left, is an error. safetensors files
are checked structurally (header parses, every tensor lies inside the file); pickle-based weights
can run code when loaded, so they are refused unless the spec allows them, and a model whose only
weights are pickles gets a warning.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from offline.bundle.patterns import Selection, select
from offline.bundle.spec import LoadedSpec, Model
from offline.errors import ConfigError, IntegrityError, NetworkError, NotFoundError, OfflineError

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
WEIGHT_SUFFIXES = {".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt"}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class ModelSource:
    name: str
    directory: Path
    source: str  # "path:…" or "hub:org/name@revision"
    files: tuple[Path, ...]  # the files taken, relative to directory
    left_out: tuple[Path, ...] = ()  # what the exclude/include patterns left behind
    warnings: tuple[str, ...] = ()


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
    files = [p.relative_to(directory).as_posix() for p in directory.rglob("*")]
    files = sorted(f for f in files if _wanted(directory, f))
    if not files:
        raise NotFoundError(f"model {model.name!r}: {directory} holds no files")
    chosen = _choose(model, directory, files)
    _check_files(model, directory, chosen)
    return ModelSource(
        model.name,
        directory,
        source,
        tuple(Path(f) for f in chosen.taken),
        tuple(Path(f) for f in chosen.left_out),
        _pickle_warning(model, chosen.taken),
    )


def _wanted(root: Path, rel: str) -> bool:
    # Dot files and directories (.git, .cache/huggingface) are never part of a model.
    return (root / rel).is_file() and not any(part.startswith(".") for part in rel.split("/"))


def _choose(model: Model, directory: Path, files: list[str]) -> Selection:
    chosen = select(files, model.include, model.exclude)
    if chosen.unmatched:
        raise ConfigError(
            f"model {model.name!r}: {', '.join(chosen.unmatched)} "
            f"{'matches' if len(chosen.unmatched) == 1 else 'match'} no file in {directory}",
            fix="fix the pattern in this [[model]] entry of the spec: a relative POSIX path "
            "where * and ? stay within one directory and ** spans any (README 'Bundle spec')",
        )
    if (model.include or model.exclude) and not _weights(chosen.taken):
        behind = ", ".join(_weights(chosen.left_out)) or "none: the directory holds none"
        raise ConfigError(
            f"model {model.name!r}: include {model.include} and exclude {model.exclude} take "
            f"no weights file (*{', *'.join(sorted(WEIGHT_SUFFIXES))}) from {directory}; "
            f"weights left out: {behind}",
            fix="change include/exclude so that the model's weights are taken",
        )
    return chosen


def _weights(files: tuple[str, ...]) -> list[str]:
    return [f for f in files if PurePosixPath(f).suffix in WEIGHT_SUFFIXES]


def _check_files(model: Model, directory: Path, chosen: Selection) -> None:
    pickles = [f for f in chosen.taken if PurePosixPath(f).suffix in PICKLE_SUFFIXES]
    if pickles and not model.allow_pickle:
        raise IntegrityError(
            f"model {model.name!r} has pickle-based weights ({', '.join(pickles)}) that can run "
            "code when loaded",
            fix=_pickle_fix(chosen, pickles),
        )
    for rel in chosen.taken:
        if rel.endswith(".safetensors"):
            check_safetensors(directory / rel)


def _pickle_fix(chosen: Selection, pickles: list[str]) -> str:
    fix = (
        "convert them to safetensors, or set allow_pickle = true for this model if you trust "
        "the source"
    )
    if not any(f.endswith(".safetensors") for f in (*chosen.taken, *chosen.left_out)):
        return fix
    suffixes = ", ".join(f'"*{s}"' for s in sorted({PurePosixPath(f).suffix for f in pickles}))
    return (
        f"the model also ships safetensors: exclude = [{suffixes}] leaves the pickles out; or {fix}"
    )


def _pickle_warning(model: Model, files: tuple[str, ...]) -> tuple[str, ...]:
    weights = _weights(files)
    if not weights or any(PurePosixPath(f).suffix not in PICKLE_SUFFIXES for f in weights):
        return ()
    return (
        f"model {model.name!r}: its only weights are pickles ({', '.join(weights)}), which run "
        "code when loaded; convert them to safetensors (transformers: "
        "save_pretrained(DIR, safe_serialization=True)) and bundle those instead",
    )


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
