"""Filesystem helpers shared by every capability: atomic writes and parallel hashing."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

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


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def replace_dir(new: Path, target: Path) -> None:
    """Move the finished directory ``new`` to ``target``, replacing an older one there."""
    os.chmod(new, 0o755)
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    import shutil

    shutil.rmtree(old, ignore_errors=True)


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
            import shutil

            shutil.copyfile(src, dst)
