"""A content-addressed download cache: blobs by sha256, plus small metadata records.

Layout under the cache root::

    blobs/sha256/ab/abcdef...   immutable files, named by their own hash
    meta/<kind>/<key>.json      what a key (a lock input, an image ref) resolved to
    locks/<key>/pylock.toml     cached resolutions
    tmp/                        partial downloads (same filesystem, so ingest is a rename)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from offline.errors import IntegrityError
from offline.fsutil import atomic_write_text, disk_errors, sha256_file


def default_cache_dir() -> Path:
    """``$DEEPSEEK_OFFLINE_CACHE``, else ``$XDG_CACHE_HOME/deepseek-offline``, else ~/.cache."""
    if env := os.environ.get("DEEPSEEK_OFFLINE_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepseek-offline"


class Cache:
    """Content-addressed store; a blob's name is its sha256, so a hit needs no network."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def tmp_dir(self) -> Path:
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_tmp_file(self, suffix: str = "") -> Path:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir(), suffix=suffix)
        os.close(fd)
        return Path(name)

    def ingest(self, src: Path, expected_sha256: str | None = None, *, what: str = "") -> str:
        """Move ``src`` into the store after checking its hash; returns the sha256."""
        actual = sha256_file(src)
        if expected_sha256 is not None and actual != expected_sha256.lower():
            src.unlink(missing_ok=True)
            raise IntegrityError(
                f"{what or src.name}: sha256 {actual} does not match the expected "
                f"{expected_sha256}",
                fix="the source changed or the transfer was corrupted; retry, or re-lock "
                "with --refresh if the index really publishes a new file",
            )
        dest = self.blob_path(actual)
        with disk_errors(dest):
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(src, 0o444)
            os.replace(src, dest)
        return actual

    def meta_path(self, kind: str, key: str) -> Path:
        return self.root / "meta" / kind / f"{key}.json"

    def read_meta(self, kind: str, key: str) -> dict[str, Any] | None:
        path = self.meta_path(kind, key)
        if not path.is_file():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def write_meta(self, kind: str, key: str, data: dict[str, Any]) -> None:
        atomic_write_text(self.meta_path(kind, key), json.dumps(data, indent=2, sort_keys=True))
