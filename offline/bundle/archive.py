"""Reassemble split volumes and unpack a bundle archive safely, with Python's standard library only.

This file runs in two places: inside the toolkit (``offline bundle unpack``) and on an isolated host
where nothing of ours is installed yet, as a standalone script next to ``install-offline.sh``::

    python3 offline-archive.py check-parts NAME.parts.json
    python3 offline-archive.py unpack NAME.parts.json|NAME.tar|PARTS_DIR --dest DIR

So it imports nothing outside the standard library except, when present, the toolkit's errors.

Safety: every member is checked before anything is written, and all problems are reported at
once. Absolute names, ``..``, device files, FIFOs, and symlinks or hardlinks that point outside
DEST are refused; a file is never written through a symlink. Each file is written to a temporary
name and renamed. A re-run after an interruption (or a full disk) skips every file already on
disk whose size and sha256 match the archive's manifest (or a journal of finished files, for
archives without one), and reads no more of the volumes than it needs.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import os
import posixpath
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offline.errors import IntegrityError, NotFoundError, ResourceError
else:
    try:
        from offline.errors import IntegrityError, NotFoundError, ResourceError
    except ImportError:  # standalone on a host without the toolkit

        class _Error(Exception):
            exit_code = 1

            def __init__(self, message: str, *, fix: str | None = None) -> None:
                super().__init__(message)
                self.message, self.fix = message, fix

        class IntegrityError(_Error):
            exit_code = 7

        class NotFoundError(_Error):
            exit_code = 4

        class ResourceError(_Error):
            exit_code = 8


JOURNAL = ".offline-unpack.journal"
_CHUNK = 1 << 20


# --- volumes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class PartsIndex:
    index: Path
    archive: str
    size: int
    sha256: str
    parts: tuple[Part, ...]


def find_index(src: Path) -> Path:
    """``NAME.parts.json``, or the one such file in directory ``src``."""
    if src.is_file():
        return src
    if src.is_dir():
        found = sorted(src.glob("*.parts.json"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise IntegrityError(
                f"{src} holds several volume sets ({names})", fix="name the .parts.json to use"
            )
    raise NotFoundError(
        f"{src}: no bundle archive, volume index (*.parts.json) or bundle directory there",
        fix="copy every volume of the bundle, with its .parts.json, into one directory",
    )


def read_index(path: Path) -> PartsIndex:
    try:
        data = json.loads(path.read_text())
        parts = tuple(
            Part(path.parent / _plain_name(p["name"]), int(p["size"]), str(p["sha256"]))
            for p in data["parts"]
        )
        return PartsIndex(path, data["archive"], int(data["size"]), data["sha256"], parts)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(
            f"{path} is not a readable volume index ({exc})",
            fix="copy NAME.parts.json again from the connected side",
        ) from exc


def _plain_name(name: str) -> str:
    if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
        raise ValueError(f"bad part name {name!r}")
    return name


def sha256_path(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def check_parts(index: PartsIndex) -> list[str]:
    """Every volume's presence, size and sha256; one line per problem (empty when all good)."""
    problems: list[str] = []
    expected = {p.sha256: p.path.name for p in index.parts}
    for part in index.parts:
        name = part.path.name
        if not part.path.is_file():
            problems.append(f"{name}: missing")
            continue
        size = part.path.stat().st_size
        if size < part.size:
            problems.append(f"{name}: truncated ({size} of {part.size} bytes)")
            continue
        if size > part.size:
            problems.append(f"{name}: too long ({size} bytes, expected {part.size})")
            continue
        actual = sha256_path(part.path)
        if actual == part.sha256:
            continue
        other = expected.get(actual)
        if other is not None:
            problems.append(f"{name}: holds the content of {other} (volumes swapped or renamed)")
        else:
            problems.append(f"{name}: corrupt (sha256 {actual}, expected {part.sha256})")
    return problems


def require_parts(index: PartsIndex) -> None:
    problems = check_parts(index)
    if problems:
        raise IntegrityError(
            f"volume set {index.index.name}: " + "; ".join(problems),
            fix="copy the named volumes again from the connected side",
        )


class PartsReader(io.RawIOBase):
    """The volumes read as one seekable file, without concatenating them on disk."""

    def __init__(self, parts: tuple[Part, ...]) -> None:
        super().__init__()
        self.parts = parts
        self.starts: list[int] = []
        total = 0
        for part in parts:
            self.starts.append(total)
            total += part.size
        self.size, self.pos = total, 0
        self._open: tuple[int, Any] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def _handle(self, i: int) -> Any:
        if self._open is None or self._open[0] != i:
            self._close_handle()
            self._open = (i, self.parts[i].path.open("rb"))
        return self._open[1]

    def _close_handle(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.pos >= self.size or not len(view):
            return 0
        i = max(j for j, start in enumerate(self.starts) if start <= self.pos)
        fh = self._handle(i)
        offset = self.pos - self.starts[i]
        fh.seek(offset)
        n = fh.readinto(view[: min(len(view), self.parts[i].size - offset)])
        self.pos += n
        return int(n)

    def close(self) -> None:
        self._close_handle()
        super().close()


# --- unpacking -------------------------------------------------------------------------------


@dataclass
class UnpackResult:
    dest: Path
    written: int = 0
    skipped: int = 0
    bytes_written: int = 0
    problems: list[str] = field(default_factory=list)


def _open_archive(src: Path) -> tuple[Any, str]:
    """A seekable file for the tar and a label for messages; volumes are checked first."""
    if src.is_file() and not src.name.endswith(".parts.json"):
        return src.open("rb"), src.name
    index = read_index(find_index(src))
    require_parts(index)
    return io.BufferedReader(PartsReader(index.parts), buffer_size=_CHUNK), index.archive


def _prefix(members: list[tarfile.TarInfo]) -> str:
    """The one top-level directory all members share (our archives have one), else ''."""
    tops = {m.name.split("/", 1)[0] for m in members}
    if len(tops) == 1 and any("/" in m.name for m in members):
        return tops.pop() + "/"
    return ""


def _relative(name: str, prefix: str) -> str:
    rel = name[len(prefix) :] if prefix and name.startswith(prefix) else name
    return rel.rstrip("/")


def check_members(members: list[tarfile.TarInfo], prefix: str) -> list[str]:
    """Every reason to refuse this archive, one per offending member."""
    problems: list[str] = []
    names = {_relative(m.name, prefix) for m in members}
    for m in members:
        rel = _relative(m.name, prefix)
        if m.name.startswith("/") or rel.startswith("/"):
            problems.append(f"{m.name}: absolute path")
            continue
        if ".." in rel.split("/"):
            problems.append(f"{m.name}: '..' in the path")
            continue
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            problems.append(f"{m.name}: device file or special member (type {m.type!r})")
            continue
        if m.issym():
            target = m.linkname
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            if target.startswith("/") or joined == ".." or joined.startswith("../"):
                problems.append(f"{m.name}: symlink to {target} points outside the destination")
        elif m.islnk():
            target = _relative(m.linkname, prefix)
            norm = posixpath.normpath(target)
            if target.startswith("/") or norm.startswith("..") or target not in names:
                problems.append(f"{m.name}: hardlink to {m.linkname} points outside the archive")
    return problems


def _journal(dest: Path) -> dict[str, tuple[int, str]]:
    done: dict[str, tuple[int, str]] = {}
    try:
        text = (dest / JOURNAL).read_text()
    except FileNotFoundError:
        return done
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            done[entry["path"]] = (int(entry["size"]), str(entry["sha256"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the interruption
    return done


def _manifest_hashes(tar: tarfile.TarFile, prefix: str) -> dict[str, tuple[int, str]]:
    """The sizes and sha256s the archive's own manifest gives (read first, at random access).

    They only decide what need not be written again; the signed manifest is checked after.
    """
    try:
        source = tar.extractfile(prefix + "manifest.json")
        files = json.load(source)["files"] if source else []
        return {f["path"]: (int(f["size"]), str(f["sha256"])) for f in files}
    except (KeyError, ValueError, TypeError):
        return {}


def _inside(dest_real: str, path: Path) -> bool:
    real = os.path.realpath(path)
    return real == dest_real or real.startswith(dest_real + os.sep)


def _already_there(path: Path, m: tarfile.TarInfo, known: tuple[int, str] | None) -> bool:
    """Written by an earlier run (journal) and still intact (size and sha256 re-checked)."""
    if known is None or not path.is_file() or path.is_symlink():
        return False
    return path.stat().st_size == known[0] == m.size and sha256_path(path) == known[1]


def _write_member(tar: tarfile.TarFile, m: tarfile.TarInfo, path: Path) -> tuple[int, str]:
    tmp = path.with_name(f".{path.name}.unpacking")
    digest = hashlib.sha256()
    source = tar.extractfile(m)
    if source is None:
        raise IntegrityError(f"{m.name}: unreadable member")
    try:
        with tmp.open("wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o755 if m.mode & 0o111 else 0o644)
        os.utime(tmp, (m.mtime, m.mtime))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return m.size, digest.hexdigest()


def unpack(src: Path, dest: Path, *, on_bytes: Callable[[int], None] | None = None) -> UnpackResult:
    """Extract the bundle archive (or volume set) ``src`` into ``dest``; resumable.

    Raises:
        IntegrityError: bad volumes or unsafe members (nothing is written then).
        ResourceError: disk full or not writable (a re-run continues where this stopped).
    """
    fh, label = _open_archive(src)
    result = UnpackResult(dest)
    with fh, tarfile.open(fileobj=fh, mode="r:") as tar:
        members = tar.getmembers()
        prefix = _prefix(members)
        problems = check_members(members, prefix)
        if problems:
            raise IntegrityError(
                f"{label}: refusing to unpack: " + "; ".join(problems),
                fix="the archive was not written by `offline bundle build`; get it again",
            )
        try:
            _extract(tar, members, prefix, dest, result, on_bytes)
        except OSError as exc:
            raise _os_error(exc, dest) from exc
    (dest / JOURNAL).unlink(missing_ok=True)
    return result


def _extract(
    tar: tarfile.TarFile,
    members: list[tarfile.TarInfo],
    prefix: str,
    dest: Path,
    result: UnpackResult,
    on_bytes: Callable[[int], None] | None,
) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    dest_real = os.path.realpath(dest)
    done = _manifest_hashes(tar, prefix) | _journal(dest)
    links: list[tuple[tarfile.TarInfo, Path]] = []
    with (dest / JOURNAL).open("a") as journal:
        for m in members:
            rel = _relative(m.name, prefix)
            if not rel:
                continue
            path = dest / rel
            if not _inside(dest_real, path.parent):
                raise IntegrityError(
                    f"{m.name}: its directory leads outside {dest} through a symlink",
                    fix="unpack into an empty directory",
                )
            if m.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            if m.issym() or m.islnk():
                links.append((m, path))
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                path.unlink()
            if _already_there(path, m, done.get(rel)):
                result.skipped += 1
                if on_bytes is not None:
                    on_bytes(m.size)
                continue
            size, sha = _write_member(tar, m, path)
            journal.write(json.dumps({"path": rel, "size": size, "sha256": sha}) + "\n")
            journal.flush()
            result.written += 1
            result.bytes_written += size
            if on_bytes is not None:
                on_bytes(size)
    try:
        for m, path in links:
            _make_link(m, path, dest, dest_real, prefix)
            result.written += 1
        # A chain of links can escape where each one alone looks harmless.
        escaping = [m.name for m, path in links if m.issym() and not _inside(dest_real, path)]
        if escaping:
            raise IntegrityError(
                f"refusing symlinks that resolve outside {dest}: {', '.join(escaping)}",
                fix="the archive was not written by `offline bundle build`; get it again",
            )
    except IntegrityError:
        # every symlink under DEST, found without following any: none is left to point out
        for top, dirs, names in os.walk(dest_real):
            for name in dirs + names:
                if os.path.islink(os.path.join(top, name)):
                    os.unlink(os.path.join(top, name))
        raise


def _make_link(m: tarfile.TarInfo, path: Path, dest: Path, dest_real: str, prefix: str) -> None:
    """Create one link member, judged against the links created before it: its directory, and
    (a hard link's) source, must resolve inside DEST *now*, and a new symlink must too, so no
    later member can write, replace or delete anything through an earlier link."""
    refuse = "the archive was not written by `offline bundle build`; get it again"
    if not _inside(dest_real, path.parent):
        raise IntegrityError(
            f"{m.name}: its directory leads outside {dest} through a symlink", fix=refuse
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    if m.islnk():
        source = dest / _relative(m.linkname, prefix)
        if not _inside(dest_real, source):
            raise IntegrityError(
                f"{m.name}: hardlink to {m.linkname} leads outside {dest} through a symlink",
                fix=refuse,
            )
        if source.is_dir() and not source.is_symlink():
            raise IntegrityError(f"{m.name}: hardlink to the directory {m.linkname}", fix=refuse)
        os.link(source, path, follow_symlinks=False)
        return
    os.symlink(m.linkname, path)
    if not _inside(dest_real, path):
        raise IntegrityError(f"refusing symlinks that resolve outside {dest}: {m.name}", fix=refuse)


def _os_error(exc: OSError, dest: Path) -> Exception:
    if exc.errno == errno.ENOSPC:
        return ResourceError(
            f"disk full while unpacking into {dest}",
            fix="free space there and run the same command again; finished files are kept",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ResourceError(
            f"cannot write into {dest}: {exc.strerror}",
            fix="choose a writable --dest or fix its permissions",
        )
    return exc


# --- standalone command line ---------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="offline-archive", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-parts", help="check every volume's size and sha256")
    check.add_argument("src", type=Path)
    up = sub.add_parser("unpack", help="check the volumes, then unpack safely")
    up.add_argument("src", type=Path)
    up.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "check-parts":
            index = read_index(find_index(args.src))
            require_parts(index)
            print(f"{len(index.parts)} volumes of {index.archive}: all present and intact")
        else:
            result = unpack(args.src, args.dest)
            print(
                f"unpacked into {result.dest}: {result.written} files written, "
                f"{result.skipped} already there"
            )
    except (IntegrityError, NotFoundError, ResourceError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
