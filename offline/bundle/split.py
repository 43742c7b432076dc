"""Split a bundle into fixed-size volumes (USB sticks, DVDs), each checkable on its own.

The volumes are consecutive slices of one uncompressed tar of the bundle directory, so
``cat NAME.tar.part* > NAME.tar`` reassembles it; ``NAME.parts.json`` and ``NAME.parts.sha256``
(coreutils format) give every part's size and sha256 and the whole archive's.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from offline.errors import ConfigError
from offline.fsutil import atomic_write_text, disk_errors

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
# FAT32, the file system most USB sticks are sold with, holds files of at most 4 GiB - 1 byte.
FAT32_MAX_FILE = 4 * 1024**3 - 1
FAT32_SAFE_PART = "3.9GiB"


def parse_size(text: str) -> int:
    """``4GiB`` → 4294967296; ``700MB`` → 700000000; a bare number is bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match[2].lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"--max-part-size {text!r} is not a size",
            fix=f"use e.g. {FAT32_SAFE_PART} (fits FAT32) or 700MB",
        )
    size = int(float(match[1]) * _UNITS[unit])
    if size < 1024 * 1024:
        raise ConfigError(
            f"--max-part-size {text!r} is below 1 MiB", fix=f"use e.g. {FAT32_SAFE_PART}"
        )
    return size


def fat32_warning(part_size: int) -> str | None:
    """A warning when volumes of ``part_size`` bytes do not fit on FAT32 media, else None."""
    if part_size <= FAT32_MAX_FILE:
        return None
    return (
        f"--max-part-size {part_size / 1024**3:g}GiB ({part_size} bytes) writes volumes that "
        f"FAT32 cannot hold (at most {FAT32_MAX_FILE} bytes, 4 GiB - 1, per file), the file "
        f"system most USB sticks come with; use --max-part-size {FAT32_SAFE_PART} for FAT32 "
        "media (exFAT, NTFS and ext4 hold larger files)"
    )


class _PartWriter:
    """A write-only file object that rolls over to a new part every ``part_size`` bytes."""

    def __init__(
        self,
        directory: Path,
        stem: str,
        part_size: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.directory, self.stem, self.part_size = directory, stem, part_size
        self.on_bytes = on_bytes
        self.parts: list[dict[str, Any]] = []
        self.whole = hashlib.sha256()
        self._fh: Any = None
        self._hash = hashlib.sha256()
        self._left = 0

    def _roll(self) -> None:
        self._close_part()
        name = f"{self.stem}.part{len(self.parts) + 1:03d}"
        self._fh = (self.directory / name).open("wb")
        self._hash, self._left = hashlib.sha256(), self.part_size
        self.parts.append({"name": name, "size": 0, "sha256": ""})

    def _close_part(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self.parts[-1]["sha256"] = self._hash.hexdigest()
            self._fh = None

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.whole.update(view)
        if self.on_bytes is not None:
            self.on_bytes(len(data))
        while view:
            if self._fh is None or self._left == 0:
                self._roll()
            chunk = view[: self._left]
            self._fh.write(chunk)
            self._hash.update(chunk)
            self._left -= len(chunk)
            self.parts[-1]["size"] += len(chunk)
            view = view[len(chunk) :]
        return len(data)

    def __enter__(self) -> _PartWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close_part()


def _write_tar(fileobj: _PartWriter, bundle_dir: Path, stem: str, mtime: int) -> None:
    """A deterministic tar stream: sorted names, owner root, one mtime."""
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path in sorted(bundle_dir.rglob("*")):
            arcname = str(Path(stem) / path.relative_to(bundle_dir))
            info = tar.gettarinfo(str(path), arcname=arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            if info.islnk():  # a hard-linked file goes in whole: the unpacker refuses links
                info.type, info.linkname, info.size = tarfile.REGTYPE, "", path.stat().st_size
            if info.isfile():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)


def write_parts(
    bundle_dir: Path,
    parts_dir: Path,
    stem: str,
    part_size: int,
    mtime: int,
    on_bytes: Callable[[int], None] | None = None,
) -> Path:
    """Write ``bundle_dir`` as a tar split into parts; returns the path of the JSON index."""
    parts_dir.mkdir(parents=True, exist_ok=True)
    writer = _PartWriter(parts_dir, f"{stem}.tar", part_size, on_bytes)
    with disk_errors(parts_dir), writer:
        _write_tar(writer, bundle_dir, stem, mtime)
    index = {
        "format_version": 1,
        "archive": f"{stem}.tar",
        "size": sum(p["size"] for p in writer.parts),
        "sha256": writer.whole.hexdigest(),
        "part_size": part_size,
        "parts": writer.parts,
        "reassemble": f"cat {stem}.tar.part* > {stem}.tar",
    }
    index_path = parts_dir / f"{stem}.parts.json"
    atomic_write_text(index_path, json.dumps(index, indent=2) + "\n")
    sums = "".join(f"{p['sha256']}  {p['name']}\n" for p in writer.parts)
    atomic_write_text(parts_dir / f"{stem}.parts.sha256", sums)
    return index_path
