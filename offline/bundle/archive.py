"""Reassemble split volumes and unpack a bundle archive safely, with Python's standard library only.

This file runs in two places: inside the toolkit (``offline bundle unpack``) and on an isolated host
where nothing of ours is installed yet, as a standalone script next to ``install-offline.sh``::

    python3 offline-archive.py check-parts NAME.parts.json
    python3 offline-archive.py unpack NAME.parts.json|NAME.tar|PARTS_DIR --dest DIR
                                      [--max-unpacked-size 40G]

So it imports nothing outside the standard library except, when present, the toolkit's errors,
and needs nothing newer than Python 3.11.0 (no PEP 706 extraction filters).

Safety: this runs before the signature is checked, so the archive is hostile until then. A bundle
archive holds regular files and directories only, and that is all this accepts: every link
(symbolic or hard), device, FIFO and sparse member is refused, as are absolute names, ``..``,
names that are not printable UTF-8, a name given twice, a file where a later member needs a
directory, a member whose declared size runs past the end of the archive, an archive without its
end-of-archive marker, and members that add up to more than the archive holds (or than
``--max-unpacked-size``). Every member is checked before anything is written, all problems are
reported at once, and a refused archive leaves DEST as it was. DEST itself must hold no symlink.
Each file is written to a temporary name (created exclusively, never through a link) and renamed.
A re-run after an interruption (or a full disk) skips every file already on disk whose size and
sha256 match the archive's manifest (or a journal of finished files, for archives without one),
and reads no more of the volumes than it needs.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import json
import math
import os
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
            Part(path.parent / _plain_name(p["name"]), _count(p["size"]), str(p["sha256"]))
            for p in data["parts"]
        )
        return PartsIndex(path, data["archive"], _count(data["size"]), data["sha256"], parts)
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise IntegrityError(
            f"{path} is not a readable volume index ({exc})",
            fix="copy NAME.parts.json again from the connected side",
        ) from exc


def _count(value: object) -> int:
    """A byte count from hostile JSON: a non-negative integer, nothing else."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a byte count")
    return value


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

_REFUSE = "the archive was not written by `offline bundle build`; get it again from its source"
_END_MARKER = 512  # an archive ends with zero blocks; a missing one means it was cut short
# Far beyond any bundle (a few thousand files), low enough that a forged header stream cannot
# exhaust memory or time.
MAX_MEMBERS = 200_000
MAX_NAME_BYTES, MAX_COMPONENT_BYTES, MAX_DEPTH = 4096, 255, 64
_TAR_ERRORS = (tarfile.TarError, EOFError, ValueError, OverflowError, RecursionError, MemoryError)


@dataclass
class UnpackResult:
    dest: Path
    written: int = 0
    skipped: int = 0
    bytes_written: int = 0
    problems: list[str] = field(default_factory=list)


def show(name: object) -> str:
    """A name from the archive, safe to print: control characters and stray bytes escaped."""
    text = str(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if len(text) > 300:
        text = f"{text[:200]}...{text[-80:]}"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def parse_size(text: str) -> int:
    """``40G``, ``512M``, ``1.5T`` or a plain byte count → bytes (powers of 1024)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    clean = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = clean[-1:] if clean[-1:] in units else ""
    try:
        value = float(clean[: len(clean) - len(unit)])
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ValueError(f"{text!r} is not a size; use e.g. 40G, 512M or a number of bytes")
    return int(value * units[unit])


def _open_archive(src: Path) -> tuple[Any, str, int]:
    """A seekable file for the tar, a label for messages and its size; volumes are checked first."""
    if src.is_file() and not src.name.endswith(".parts.json"):
        return src.open("rb"), show(src.name), src.stat().st_size
    index = read_index(find_index(src))
    require_parts(index)
    reader = PartsReader(index.parts)
    return io.BufferedReader(reader, buffer_size=_CHUNK), show(index.archive), reader.size


def _prefix(members: list[tarfile.TarInfo]) -> str:
    """The one top-level directory all members share (our archives have one), else ''."""
    tops = {m.name.split("/", 1)[0] for m in members}
    if len(tops) == 1 and any("/" in m.name for m in members):
        return tops.pop() + "/"
    return ""


def _relative(name: str, prefix: str) -> str:
    if prefix and name.rstrip("/") == prefix.rstrip("/"):
        return ""  # the top directory itself
    rel = name[len(prefix) :] if prefix and name.startswith(prefix) else name
    return rel.rstrip("/")


def _kind(m: tarfile.TarInfo) -> str:
    if m.issym():
        return f"a symlink (to {show(m.linkname)})"
    if m.islnk():
        return f"a hard link (to {show(m.linkname)})"
    if m.ischr() or m.isblk():
        return "a device file"
    if m.isfifo():
        return "a FIFO"
    return f"a special member (type {m.type!r})"


def _name_problem(m: tarfile.TarInfo, rel: str) -> str | None:
    """Why this member's name alone is refused, if it is."""
    try:
        m.name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not UTF-8"
    if not m.name.isprintable():
        return "its name holds control characters"
    if m.name.startswith("/") or rel.startswith("/"):
        return "absolute path"
    parts = rel.split("/") if rel else []
    if ".." in parts:
        return "'..' in the path"
    if "" in parts or "." in parts:
        return "an empty or '.' part in the path (the same name can be spelled only one way)"
    if len(m.name.encode()) > MAX_NAME_BYTES or len(parts) > MAX_DEPTH:
        return f"a name longer than {MAX_NAME_BYTES} bytes or deeper than {MAX_DEPTH} directories"
    if any(len(part.encode()) > MAX_COMPONENT_BYTES for part in parts):
        return f"a part of its name is longer than {MAX_COMPONENT_BYTES} bytes"
    base = rel.rsplit("/", 1)[-1]
    if base == JOURNAL or (base.startswith(".") and base.endswith(".unpacking")):
        return "a name the unpacker reserves for its own files"
    return None


def _member_problem(m: tarfile.TarInfo, rel: str, archive_size: int) -> str | None:
    """Why this one member is refused, if it is (name, type, size)."""
    problem = _name_problem(m, rel)
    if problem is not None:
        return problem
    if not (m.isfile() or m.isdir()):
        return f"{_kind(m)}: a bundle holds only files and directories"
    if m.issparse():
        return "a sparse file: a bundle never holds one"
    if m.size < 0:
        return f"a negative size ({m.size})"
    if isinstance(m.mtime, float) and not math.isfinite(m.mtime):
        return f"a modification time that is not a number ({m.mtime})"
    if not rel and not m.isdir():
        return "the archive's top level is a file, not a directory"
    if m.isfile() and m.offset_data + m.size > archive_size:
        return (
            f"declares {m.size} bytes, but the archive ends {max(archive_size - m.offset_data, 0)}"
            " bytes into it (truncated, or a forged size)"
        )
    return None


def check_members(
    members: list[tarfile.TarInfo], prefix: str, archive_size: int, limit: int | None = None
) -> list[str]:
    """Every reason to refuse this archive, one per offending member (empty when it is safe)."""
    problems: list[str] = []
    kinds: dict[str, bool] = {}  # rel -> is a directory
    for m in members:
        rel = _relative(m.name, prefix)
        problem = _member_problem(m, rel, archive_size)
        if problem is None and rel in kinds:
            problem = "the archive holds this name twice"
        if problem is not None:
            problems.append(f"{show(m.name)}: {problem}")
            continue  # already refused: its ancestors need no look
        kinds.setdefault(rel, m.isdir())
    for rel in kinds:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if kinds.get(above) is False:
                problems.append(
                    f"{show(prefix + rel)}: {show(prefix + above)} is a file in this archive, "
                    "not a directory"
                )
                break
    total = sum(m.size for m in members if m.isfile())
    cap = archive_size if limit is None else min(limit, archive_size)
    if total > cap:
        what = "the archive's own size" if cap == archive_size else "--max-unpacked-size"
        problems.append(f"its files add up to {total} bytes, more than {what} ({cap} bytes)")
    return problems


def _read_members(
    tar: tarfile.TarFile, fh: Any, label: str, archive_size: int
) -> list[tarfile.TarInfo]:
    """Every member header, and proof that the archive ends where a tar must end."""
    damaged = IntegrityError(
        f"{label}: not a complete tar archive (damaged or cut short)", fix=_REFUSE
    )
    members: list[tarfile.TarInfo] = []
    try:
        while (m := tar.next()) is not None:
            members.append(m)
            if m.size < 0 or tar.offset <= m.offset:  # a header pointing back: it would loop
                damaged.message = f"{label}: {show(m.name)}: a negative size ({m.size})"
                raise damaged
            if len(members) > MAX_MEMBERS:
                damaged.message = (
                    f"{label}: more than {MAX_MEMBERS} members; no bundle has that many"
                )
                raise damaged
    except _TAR_ERRORS as exc:
        damaged.message = f"{label}: not a readable tar archive ({exc}; damaged or cut short)"
        raise damaged from exc
    end = tar.offset
    fh.seek(end)
    marker = fh.read(_END_MARKER)
    if end + _END_MARKER > archive_size or marker != bytes(_END_MARKER):
        damaged.message = (
            f"{label}: no readable member header or end-of-archive marker at byte {end} "
            f"of {archive_size} (the archive is damaged or was cut short)"
        )
        raise damaged
    return members


def _symlinks_in(dest: Path) -> list[str]:
    """Symlinks already under DEST, found without following any (this never creates one)."""
    found: list[str] = []
    if dest.is_symlink() and not dest.exists():
        return [str(dest)]
    for top, dirs, names in os.walk(dest):
        found += [
            os.path.join(top, n) for n in dirs + names if os.path.islink(os.path.join(top, n))
        ]
    return found


def unpack(
    src: Path,
    dest: Path,
    *,
    max_size: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> UnpackResult:
    """Extract the bundle archive (or volume set) ``src`` into ``dest``; resumable.

    Args:
        src: ``NAME.tar``, ``NAME.parts.json`` or a directory holding the volumes.
        dest: the directory to unpack into; created if missing.
        max_size: refuse archives whose files add up to more bytes than this.
        on_bytes: called with the byte count of each file written or found intact.

    Raises:
        IntegrityError: bad volumes, a damaged archive, or refused members (nothing is written).
        ResourceError: disk full or not writable (a re-run continues where this stopped).
    """
    fh, label, archive_size = _open_archive(src)
    result = UnpackResult(dest)
    with fh:
        try:
            tar = tarfile.open(fileobj=fh, mode="r:")  # noqa: SIM115 (closed by the with below)
        except _TAR_ERRORS as exc:
            raise IntegrityError(f"{label}: not a tar archive ({exc})", fix=_REFUSE) from exc
        with tar:
            members = _read_members(tar, fh, label, archive_size)
            prefix = _prefix(members)
            problems = check_members(members, prefix, archive_size, max_size)
            if problems:
                more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
                raise IntegrityError(
                    f"{label}: refusing to unpack: " + "; ".join(problems[:20]) + more, fix=_REFUSE
                )
            links = _symlinks_in(dest) if os.path.lexists(dest) else []
            if links:
                raise IntegrityError(
                    f"{dest} already holds symlinks ({', '.join(map(show, links[:5]))}), "
                    "which an unpacked bundle never has",
                    fix="unpack into a new, empty directory",
                )
            try:
                _extract(tar, members, prefix, dest, result, on_bytes)
            except OSError as exc:
                raise _os_error(exc, dest) from exc
    (dest / JOURNAL).unlink(missing_ok=True)
    return result


def _manifest_hashes(tar: tarfile.TarFile, prefix: str) -> dict[str, tuple[int, str]]:
    """The sizes and sha256s the archive's own manifest gives (read first, at random access).

    They only decide what need not be written again; the signed manifest is checked after.
    """
    try:
        source = tar.extractfile(prefix + "manifest.json")
        files = json.load(source)["files"] if source else []
        return {f["path"]: (int(f["size"]), str(f["sha256"])) for f in files}
    except (KeyError, ValueError, TypeError, OverflowError, RecursionError, tarfile.TarError):
        return {}


def _journal(dest: Path) -> dict[str, tuple[int, str]]:
    done: dict[str, tuple[int, str]] = {}
    try:
        text = (dest / JOURNAL).read_text(errors="replace")
    except FileNotFoundError:
        return done
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            done[entry["path"]] = (int(entry["size"]), str(entry["sha256"]))
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError):
            continue  # a line cut short by the interruption
    return done


def _inside(dest_real: str, path: Path) -> bool:
    real = os.path.realpath(path)
    return real == dest_real or real.startswith(dest_real + os.sep)


def _already_there(path: Path, m: tarfile.TarInfo, known: tuple[int, str] | None) -> bool:
    """Written by an earlier run (journal) and still intact (size and sha256 re-checked)."""
    if known is None or not path.is_file() or path.is_symlink():
        return False
    return path.stat().st_size == known[0] == m.size and sha256_path(path) == known[1]


def _write_member(tar: tarfile.TarFile, m: tarfile.TarInfo, path: Path) -> tuple[int, str]:
    # Not offline.fsutil.atomic_writer: this file runs standalone before the toolkit exists,
    # and a member is created exclusively, never through a link (see the module docstring).
    tmp = path.with_name(f".{path.name}.unpacking")
    digest = hashlib.sha256()
    source = tar.extractfile(m)
    if source is None:
        raise IntegrityError(f"{show(m.name)}: unreadable member", fix=_REFUSE)
    tmp.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while written < m.size and (chunk := source.read(min(_CHUNK, m.size - written))):
                digest.update(chunk)
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        if written != m.size:
            raise IntegrityError(
                f"{show(m.name)}: the archive ends inside this file ({written} of {m.size} bytes)",
                fix=_REFUSE,
            )
        os.chmod(tmp, 0o755 if m.mode & 0o111 else 0o644)
        mtime = min(max(int(m.mtime), 0), 1 << 33)  # a forged header's date cannot overflow
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written, digest.hexdigest()


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
    with (dest / JOURNAL).open("a") as journal:
        for m in members:
            rel = _relative(m.name, prefix)
            if not rel:
                continue
            path = dest / rel
            if not _inside(dest_real, path.parent):  # DEST changed under us: never follow
                raise IntegrityError(
                    f"{show(m.name)}: its directory leads outside {dest} through a symlink",
                    fix="unpack into a new, empty directory",
                )
            if m.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
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


def _os_error(exc: OSError, dest: Path) -> Exception:
    if exc.errno == errno.ENOSPC:
        return ResourceError(
            f"disk full while unpacking into {dest}",
            fix="free space there and run the same command again; finished files are kept",
        )
    where = show(exc.filename) if exc.filename else str(dest)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ResourceError(
            f"cannot write into {dest} ({where}): {exc.strerror}",
            fix="choose a writable --dest or fix its permissions",
        )
    return ResourceError(
        f"cannot unpack into {dest}: {where}: {exc.strerror or exc}",
        fix="unpack into a new, empty directory",
    )


# --- standalone command line ---------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="offline-archive", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-parts", help="check every volume's size and sha256")
    check.add_argument("src", type=Path)
    up = sub.add_parser("unpack", help="check the volumes, then unpack safely")
    up.add_argument("src", type=Path)
    up.add_argument("--dest", type=Path, required=True)
    up.add_argument(
        "--max-unpacked-size",
        type=parse_size,
        metavar="SIZE",
        help="refuse an archive whose files add up to more than SIZE (e.g. 40G)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "check-parts":
            index = read_index(find_index(args.src))
            require_parts(index)
            print(f"{len(index.parts)} volumes of {index.archive}: all present and intact")
        else:
            result = unpack(args.src, args.dest, max_size=args.max_unpacked_size)
            print(
                f"unpacked into {result.dest}: {result.written} files written, "
                f"{result.skipped} already there"
            )
    except (IntegrityError, NotFoundError, ResourceError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # the source itself cannot be read
        print(
            f"error: cannot read {show(exc.filename or args.src)}: {exc.strerror}", file=sys.stderr
        )
        print("  fix: check the path and its permissions", file=sys.stderr)
        return ResourceError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
