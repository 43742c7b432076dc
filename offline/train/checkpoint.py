"""Crash-consistent checkpoints: full training state and light weights-only snapshots.

Layout under ``checkpoint.dir``::

    full/step-00000100/state/...      DeepSpeed's engine, optimizer and scheduler files
    full/step-00000100/rng/rank-0.pt  each rank's RNG states
    full/step-00000100/manifest.json  sha256 and size of every file above, step, data position
    full/latest                       name of the newest complete full checkpoint
    light/step-00000050/model.safetensors + manifest.json

A checkpoint is written under a hidden temporary name, every file is fsynced, the manifest is
written last, then the directory is renamed into place and ``latest`` is replaced atomically.
A crash at any point leaves either the old set or the old set plus one complete new
checkpoint; a full disk removes the partial one and leaves the previous checkpoint valid.
``--resume auto`` takes the newest checkpoint whose manifest verifies and says which it skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline.fsutil import atomic_write_bytes, replace_dir, sha256_file, sync_tree, tree_sha256

MANIFEST = "manifest.json"
STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def seal(tmp: Path, meta: dict[str, Any]) -> None:
    """fsync every file of ``tmp`` and write its manifest (hashes, sizes, ``meta``) last."""
    sync_tree(tmp)
    files: dict[str, dict[str, Any]] = {
        name: {"sha256": digest, "bytes": (tmp / name).stat().st_size}
        for name, digest in tree_sha256(tmp).items()
    }
    manifest = {"format": 1, "created": time.time(), **meta, "files": files}
    atomic_write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())


def verify(directory: Path) -> str | None:
    """``None`` when ``directory``'s manifest verifies, else what is wrong with it."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return "no manifest (an interrupted write)"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest: {exc}"
    for rel, entry in manifest.get("files", {}).items():
        path = directory / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != entry["bytes"]:
            return f"{rel} has {path.stat().st_size} bytes, the manifest says {entry['bytes']}"
        if sha256_file(path) != entry["sha256"]:
            return f"{rel} does not match its sha256"
    return None


def read_manifest(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / MANIFEST).read_text())
    return data


@dataclass
class Found:
    path: Path
    step: int
    skipped: list[tuple[Path, str]]  # newer checkpoints that failed verification, and why


class Channel:
    """One series of checkpoints (``full`` or ``light``) under a directory, newest kept."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self.keep = keep

    def steps(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (by name), newest first."""
        if not self.root.is_dir():
            return []
        found = []
        for child in self.root.iterdir():
            match = STEP_DIR.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
        return sorted(found, reverse=True)

    def newest_valid(self, before: int | None = None) -> Found | None:
        """The newest checkpoint whose manifest verifies (optionally at a step below ``before``)."""
        skipped: list[tuple[Path, str]] = []
        for step, path in self.steps():
            if before is not None and step >= before:
                continue
            problem = verify(path)
            if problem is None:
                return Found(path, step, skipped)
            skipped.append((path, problem))
        return None

    def begin(self, step: int) -> Path:
        """A fresh temporary directory for the checkpoint of ``step``."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{step_name(step)}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return tmp

    def commit(self, tmp: Path, step: int, meta: dict[str, Any]) -> Path:
        """Seal ``tmp``, rename it into place, point ``latest`` at it, drop the oldest."""
        seal(tmp, {"step": step, **meta})
        final = self.root / step_name(step)
        replace_dir(tmp, final)  # re-reached after a rollback: the new state replaces the old
        atomic_write_bytes(self.root / "latest", final.name.encode())
        for _, path in self.steps()[self.keep :]:
            shutil.rmtree(path, ignore_errors=True)
        return final

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    def discard_after(self, step: int) -> None:
        """Drop checkpoints newer than ``step`` (a rollback's abandoned branch)."""
        for found, path in self.steps():
            if found > step:
                shutil.rmtree(path, ignore_errors=True)
