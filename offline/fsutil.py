"""Filesystem helpers shared by every capability: crash-safe writes and hashing.

Every file the toolkit writes for a user goes through here, so that a crash, a full disk or a
kill leaves the old state or the new one, never a half-written mix:

- ``atomic_writer`` / ``atomic_write_bytes`` / ``atomic_write_text``: a file written beside its
  destination under a hidden name, fsynced, renamed over it, and the directory fsynced;
- ``build_dir``: a directory built under a hidden name, every file and directory fsynced, then
  swapped in for the old one (``replace_dir``) in one rename;
- ``tree_sha256`` (per-file hashes of a tree, in parallel) and ``files_digest`` (one digest over
  a list of files, names included).

The bundle's archive reader (``offline/bundle/archive.py``) keeps its own writer: it also runs as
a standalone script on a host where nothing of ours is installed yet.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from offline.errors import ResourceError

_CHUNK = 1 << 20


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Return the hex sha256 of ``path``, reading in 1 MiB chunks (hashlib drops the GIL)."""
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            digest.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
    return digest.hexdigest()


def sha256_many(
    paths: Iterable[Path],
    *,
    workers: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[Path, str]:
    """Hash many files in parallel threads; returns ``{path: sha256}``."""
    items = list(paths)
    workers = workers or max(2, os.cpu_count() or 2)
    # Largest first keeps the threads busy until the end.
    items.sort(key=lambda p: p.stat().st_size, reverse=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = pool.map(lambda p: sha256_file(p, on_bytes), items)
        return dict(zip(items, digests, strict=True))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextmanager
def disk_errors(what: Path) -> Iterator[None]:
    """Turn ENOSPC/EACCES while writing ``what`` into a ResourceError with the fix."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ResourceError(
                f"disk full while writing {what}",
                fix="free space on that filesystem or choose another --out/--cache-dir",
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise ResourceError(
                f"cannot write {what}: {exc.strerror}",
                fix="choose a writable location or fix the directory's permissions",
            ) from exc
        raise


def fsync_dir(path: Path) -> None:
    """fsync the directory ``path``: what makes a rename inside it survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path, mode: int = 0o644, buffering: int = -1) -> Iterator[BinaryIO]:
    """Stream into a temporary file beside ``path``; only when the body finishes is it fsynced,
    renamed over ``path`` and the directory fsynced. On any error ``path`` keeps its old content
    and the temporary file is gone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb", buffering=buffering) as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, rename."""
    with atomic_writer(path, mode) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def sync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (and ``root`` itself)."""
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(Path(directory))


def replace_dir(new: Path, target: Path) -> None:
    """Move the finished directory ``new`` to ``target``, replacing an older one there, and
    fsync the parent so the swap survives a crash."""
    os.chmod(new, 0o755)
    if not target.exists():
        os.replace(new, target)
        fsync_dir(target.parent)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def build_dir(target: Path) -> Iterator[Path]:
    """A fresh hidden directory beside ``target`` to build in; when the body finishes, every
    file in it is fsynced and it replaces ``target`` in one rename. On any error it is removed
    and ``target`` stays as it was. The body may move the directory away itself (a rejected
    build kept for inspection): then nothing is swapped in."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with disk_errors(target):
            yield tmp
            if tmp.exists():
                sync_tree(tmp)
                replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tree_sha256(
    root: Path, select: Callable[[Path], bool] | None = None, workers: int | None = None
) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every regular file under ``root`` that ``select``
    keeps (all by default), hashed in parallel threads, in the byte order of the relative path
    (as ``LC_ALL=C sort`` and ``SHA256SUMS`` list them: ``a-b`` before ``a/b``)."""
    found = [
        p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and (select or bool)(p)
    ]
    paths = sorted(found, key=lambda p: p.relative_to(root).as_posix())
    digests = sha256_many(paths, workers=workers)
    return {p.relative_to(root).as_posix(): digests[p] for p in paths}


def files_digest(files: Iterable[Path]) -> str:
    """One sha256 over ``files`` in the order given, each as its name then its bytes: the
    identity of a model directory or of a training input."""
    digest = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                digest.update(view[:n])
    return digest.hexdigest()


def write_sha256sums(root: Path, files: Iterable[tuple[str, str]]) -> None:
    """``root/SHA256SUMS`` in coreutils format for ``(sha256, relative path)`` pairs, plus the
    manifest and its signature when present (they are written before the sums)."""
    entries = list(files)
    for name in ("manifest.json", "manifest.sig"):
        if (root / name).is_file():
            entries.append((sha256_file(root / name), name))
    text = "".join(f"{h}  {p}\n" for h, p in sorted(entries, key=lambda e: e[1]))
    atomic_write_text(root / "SHA256SUMS", text)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` when on one filesystem, else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(dst):
        try:
            os.link(src, dst)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            shutil.copyfile(src, dst)
