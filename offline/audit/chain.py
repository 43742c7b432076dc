"""Tamper-evident logs: JSON lines that each carry the hash of the line before them, with a
signed checkpoint every so many lines or seconds.

A line is one JSON object; the writer adds ``seq`` (its number in the whole log, across
rotated files) and ``prev`` (the sha256 of the previous line's bytes, or 64 zeros for the
first line the log ever had). Every ``every_lines`` lines or ``every_seconds`` seconds, and when
the log is closed or rotated, it writes a checkpoint line, ``{"seq", "prev", "checkpoint":
{"head", "time", "key", "sig"}}`` (and ``"final": true`` when it closes the log): ``sig`` is the
site key's ed25519 signature over :func:`checkpoint_message` (the checkpoint's ``seq`` and
every field of it: ``head`` is the hash of the line before it), so a log rewritten from some
line on, hashes recomputed, still fails at its next checkpoint unless the writer's key signed
it. Rotation renames the file to ``NAME.SEQ``
(``SEQ``: its first line's number, zero-padded) and the next file starts from the last hash.

:func:`verify` walks the files in ``seq`` order and names the first line that was edited,
deleted, inserted or reordered, a checkpoint whose signature does not hold, and lines after the
last checkpoint (a tail that may have been cut: no signature covers it).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from offline.bundle.sign import public_pem
from offline.errors import ConfigError

GENESIS = "0" * 64
RESERVED = ("seq", "prev", "checkpoint")
EVERY_LINES = 1000
EVERY_SECONDS = 300.0


def line_hash(raw: bytes) -> str:
    """The sha256 (hex) of one line's bytes, its newline left out."""
    return hashlib.sha256(raw).hexdigest()


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the start of the sha256 of its PEM."""
    return hashlib.sha256(public_pem(key)).hexdigest()[:16]


def checkpoint_message(seq: int, mark: dict[str, Any]) -> bytes:
    """What a checkpoint's signature covers: its place in the log and every field of it but the
    signature (the head hash, the time, the key, whether it closes the log)."""
    fields = {k: v for k, v in mark.items() if k != "sig"}
    body = json.dumps({"seq": seq, **fields}, sort_keys=True, separators=(",", ":"))
    return b"deepseek-offline audit checkpoint\n" + body.encode() + b"\n"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ChainWriter:
    """Appends chained JSON lines to ``path`` (thread-safe), picking up where the log ends.

    ``key`` signs the checkpoints (None: they carry the head hash unsigned, which shows edits
    but not a rewrite). ``rotate_bytes``: past this size the file is rotated at the next line.
    """

    def __init__(
        self,
        path: Path,
        key: Ed25519PrivateKey | None = None,
        *,
        every_lines: int = EVERY_LINES,
        every_seconds: float = EVERY_SECONDS,
        rotate_bytes: int | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.key = path, key
        self.every_lines, self.every_seconds, self.rotate_bytes = (
            every_lines,
            every_seconds,
            rotate_bytes,
        )
        self._lock = threading.Lock()
        self._seq, self._prev, repaired = _resume(path)
        self._fh = path.open("ab", buffering=0)
        self._since = 0
        self._last = time.monotonic()
        if repaired is not None:  # the cut-off bytes' size and hash stay on record
            self._append({"event": "resumed after a torn last line", **repaired})
            self._since += 1

    def write(self, record: dict[str, Any]) -> None:
        clash = [k for k in RESERVED if k in record]
        if clash:
            raise ValueError(f"audit record uses the chain's own key(s) {clash}")
        with self._lock:
            if self.rotate_bytes is not None and self._fh.tell() >= self.rotate_bytes:
                self._rotate()
            self._append(record)
            self._since += 1
            due = time.monotonic() - self._last >= self.every_seconds
            if self._since >= self.every_lines or due:
                self._checkpoint()

    def checkpoint(self) -> None:
        """Sign the log's head now (also done on close and rotation)."""
        with self._lock:
            self._checkpoint()

    def close(self) -> None:
        with self._lock:
            if self._fh.closed:
                return
            self._checkpoint(final=True)
            self._fh.close()

    def _append(self, record: dict[str, Any]) -> None:
        line = {"seq": self._seq, "prev": self._prev, **record}
        raw = json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode()
        self._fh.write(raw + b"\n")
        self._seq += 1
        self._prev = line_hash(raw)

    def _checkpoint(self, final: bool = False) -> None:
        mark: dict[str, Any] = {"head": self._prev, "time": _now()}
        if final:
            mark["final"] = True  # the writer closed the log here: nothing may follow
        if self.key is not None:
            mark["key"] = key_id(self.key.public_key())
            mark["sig"] = self.key.sign(checkpoint_message(self._seq, mark)).hex()
        self._append({"checkpoint": mark})
        os.fsync(self._fh.fileno())
        self._since = 0
        self._last = time.monotonic()

    def _rotate(self) -> None:
        if self._since:
            self._checkpoint()
        self._fh.close()
        first = _first_seq(self.path)
        self.path.rename(self.path.with_name(f"{self.path.name}.{first:012d}"))
        self._fh = self.path.open("ab", buffering=0)


def _last_line(path: Path) -> bytes | None:
    """The last complete line of ``path`` (None when it has none)."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        size = min(end, 1 << 20)
        while True:
            fh.seek(end - size)
            block = fh.read(size)
            lines = block.rstrip(b"\n").split(b"\n")
            if len(lines) > 1 or size == end:
                return lines[-1] if lines[-1] else None
            size = min(end, size * 4)


def _first_seq(path: Path) -> int:
    with path.open("rb") as fh:
        first = fh.readline()
    return int(json.loads(first)["seq"]) if first.strip() else 0


def _resume(path: Path) -> tuple[int, str, dict[str, Any] | None]:
    """The next ``seq`` and ``prev`` of the log at ``path`` (its rotated files included), and,
    when its last line was torn (a crash mid-write), what was cut off to continue the chain."""
    candidates = [path] if path.is_file() and path.stat().st_size else []
    if not candidates:
        rotated = sorted(path.parent.glob(f"{path.name}.*"))
        candidates = rotated[-1:]
    if not candidates:
        return 0, GENESIS, None
    repaired = _drop_torn_line(candidates[0])
    last = _last_line(candidates[0])
    if last is None:
        return 0, GENESIS, repaired
    try:
        seq = int(json.loads(last)["seq"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{candidates[0]}: its last line is not a chained audit line; the log cannot be "
            "continued",
            fix="run `offline audit verify` on it, move it aside, and start a new log",
        ) from None
    return seq + 1, line_hash(last), repaired


def _drop_torn_line(path: Path) -> dict[str, Any] | None:
    """Cut a last line that has no newline (the writer died mid-line); say what was cut."""
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return None
        size = min(end, 1 << 20)
        fh.seek(end - size)
        block = fh.read(size)
        cut = block.rfind(b"\n") + 1  # 0: the whole block is the torn line
        torn = block[cut:]
        fh.truncate(end - size + cut)
    return {"torn_line": {"bytes": len(torn), "sha256": line_hash(torn)}}


# --- verification -------------------------------------------------------------------------------


@dataclass
class Problem:
    where: str  # FILE:LINE
    what: str


@dataclass
class Verdict:
    """What :func:`verify` found: every problem (the first one first), and what held."""

    lines: int = 0
    checkpoints: int = 0
    signed: int = 0
    problems: list[Problem] = field(default_factory=list)
    unsigned_tail: int = 0  # lines after the last checkpoint
    closed: bool = False  # the log ends with the writer's closing checkpoint
    tail: str | None = None  # why its end is not that closing checkpoint

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "lines": self.lines,
            "checkpoints": self.checkpoints,
            "signed_checkpoints": self.signed,
            "unsigned_tail": self.unsigned_tail,
            "closed": self.closed,
            "tail": self.tail,
            "problems": [{"where": p.where, "what": p.what} for p in self.problems],
        }


@dataclass
class _Line:
    file: Path
    number: int  # 1-based, in its file
    raw: bytes
    seq: int | None
    prev: str | None
    mark: dict[str, Any] | None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.number}"


def _read(path: Path) -> list[_Line]:
    found = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            raw = raw.rstrip(b"\n")
            try:
                data = json.loads(raw)
                seq = data["seq"] if isinstance(data.get("seq"), int) else None
                prev = data["prev"] if isinstance(data.get("prev"), str) else None
                mark = data.get("checkpoint") if isinstance(data.get("checkpoint"), dict) else None
            except (ValueError, AttributeError):
                seq = prev = mark = None
            found.append(_Line(path, number, raw, seq, prev, mark))
    return found


def verify(
    files: Iterable[Path], key: Ed25519PublicKey | None = None, *, partial: bool = False
) -> Verdict:
    """Check the chain through ``files`` (any order: they are put in ``seq`` order).

    With ``key``, every checkpoint must carry its valid signature; without, signatures are
    not checked (and the verdict says how many checkpoints were signed). The files must hold
    the log from its first line unless ``partial`` (older files removed after their retention
    time): then the chain is checked from the first line given.
    """
    verdict = Verdict()
    runs = [lines for lines in (_read(Path(f)) for f in files) if lines]
    runs.sort(key=lambda lines: lines[0].seq if lines[0].seq is not None else -1)
    expected_seq, expected_prev = None, None
    last_mark = -1
    everything = [line for lines in runs for line in lines]
    for i, line in enumerate(everything):
        verdict.lines += 1
        problem = _judge(line, expected_seq, expected_prev, everything, i, key, partial)
        if problem is not None:
            verdict.problems.append(Problem(line.where, problem))
            break
        if line.mark is not None:
            verdict.checkpoints += 1
            verdict.signed += "sig" in line.mark
            last_mark = i
        expected_seq = (line.seq or 0) + 1
        expected_prev = line_hash(line.raw)
    if not verdict.ok or not everything:
        return verdict
    verdict.unsigned_tail = len(everything) - 1 - last_mark
    end = everything[-1]
    verdict.closed = end.mark is not None and end.mark.get("final") is True
    if verdict.unsigned_tail:
        start = everything[last_mark + 1]
        verdict.tail = (
            f"the last {verdict.unsigned_tail} line(s), from {start.where} (seq {start.seq}) on, "
            "follow the last checkpoint: no signature covers them, and the log is not closed "
            "(its writer still runs, stopped without closing it, or its tail was cut)"
        )
    elif not verdict.closed:
        verdict.tail = (
            f"the log ends at a checkpoint ({end.where}, seq {end.seq}) that is not the closing "
            "one: its writer still runs, or the lines after it were cut"
        )
    return verdict


def _judge(
    line: _Line,
    seq: int | None,
    prev: str | None,
    lines: list[_Line],
    i: int,
    key: Ed25519PublicKey | None,
    partial: bool,
) -> str | None:
    """What is wrong with ``line`` given what the chain expects there (None: nothing)."""
    if line.seq is None or line.prev is None:
        return "not a chained audit line (no seq/prev): inserted or edited"
    if seq is None:  # the first line of the first file
        if (line.seq, line.prev) == (0, GENESIS) or partial:
            pass
        elif line.seq > 0:
            return (
                f"the log starts at seq {line.seq}: its first {line.seq} line(s) are not here "
                "(deleted, or in files not given; --partial checks what is left)"
            )
        else:
            return "the log's first line does not start the chain (edited)"
    elif line.seq == seq - 1:
        return f"seq {line.seq} again: a line was inserted before it"
    elif line.seq < seq:
        return f"seq {line.seq} after seq {seq - 1}: the lines are out of order (reordered)"
    elif line.seq > seq:
        later = next((x for x in lines[i + 1 :] if x.seq == seq), None)
        if later is not None:
            return f"seq {line.seq} where seq {seq} was due ({later.where}): lines reordered"
        return f"seq jumps from {seq - 1} to {line.seq}: {line.seq - seq} line(s) deleted before it"
    elif line.prev != prev:
        before = lines[i - 1]
        if i + 1 < len(lines) and lines[i + 1].prev == line_hash(line.raw):
            return f"the line before it ({before.where}, seq {before.seq}) was edited"
        return (
            f"does not follow {before.where} (seq {before.seq}): it or the line before it "
            "was edited"
        )
    if line.mark is not None:
        head = line.mark.get("head")
        if head != line.prev:
            return "checkpoint's head is not the hash of the line before it"
        if key is not None:
            sig = line.mark.get("sig")
            if not isinstance(sig, str):
                return "checkpoint is not signed"
            try:
                key.verify(bytes.fromhex(sig), checkpoint_message(line.seq, line.mark))
            except (InvalidSignature, ValueError):
                return "checkpoint's signature does not hold (rewritten, or another key)"
    return None
