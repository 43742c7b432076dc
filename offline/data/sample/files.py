"""Writing the sample: :func:`generate` (the four files, atomically) and :func:`iter_tickets`."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from offline.data.sample.conversations import conversation_lines
from offline.data.sample.plan import new_key
from offline.data.sample.sensors import sensor_rows
from offline.data.sample.text import Key, Record
from offline.data.sample.tickets import ticket_lines
from offline.errors import ConfigError
from offline.fsutil import atomic_writer, disk_errors

MIN_ROWS = 100
SENSOR_ROWS = 480
KEY_FILE = "SAMPLE.json"


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SampleFile:
    """One written file: its name, how many records (lines or CSV rows) and bytes, its sha256."""

    name: str
    records: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SampleManifest:
    """What :func:`generate` wrote: the directory, its files, and a tally of planted problems."""

    out: Path
    rows: int
    seed: int
    files: tuple[SampleFile, ...]
    planted: dict[str, int]
    key: Path

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` output."""
        return {
            "out": str(self.out),
            "rows": self.rows,
            "seed": self.seed,
            "key": str(self.key),
            "files": [asdict(f) for f in self.files],
            "planted": dict(self.planted),
        }


class _Sink:
    """A binary file being written through a same-directory temp file; tallies lines and bytes."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.lines = 0
        self.size = 0

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.digest.update(data)
        self.lines += 1
        self.size += len(data)


@contextmanager
def _atomic(path: Path) -> Iterator[_Sink]:
    """Stream into a temp file beside ``path``; fsync and rename only when the body succeeds."""
    with atomic_writer(path, buffering=1 << 20) as fh:
        yield _Sink(fh)


def _write(path: Path, lines: Iterator[bytes], records: int | None = None) -> SampleFile:
    with _atomic(path) as sink:
        for line in lines:
            sink.write(line)
    count = sink.lines if records is None else records
    return SampleFile(path.name, count, sink.size, sink.digest.hexdigest())


def _check_rows(rows: int) -> None:
    if rows < MIN_ROWS:
        raise ConfigError(
            f"offline data sample: rows={rows} is too few to plant every kind of problem",
            fix=f"use rows >= {MIN_ROWS} (the default is 2000)",
        )


def _check_args(out: Path, rows: int) -> None:
    _check_rows(rows)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"offline data sample: {out} exists and is not a directory",
            fix="choose a directory (it is created when missing)",
        )


def _seeds(seed: int) -> tuple[int, int, int]:
    # One independent stream per file: the tickets never depend on how conversations are drawn.
    master = random.Random(seed)
    return master.getrandbits(64), master.getrandbits(64), master.getrandbits(64)


def iter_tickets(rows: int = 2000, seed: int = 0) -> Iterator[Record]:
    """Yield the ticket records :func:`generate` writes for these arguments, in file order.

    Lines that are not JSON (broken syntax, invalid UTF-8) are skipped; the other planted rows
    (duplicates, PII, noise, a missing or mistyped ``text``, the oversized record) are included.
    Useful to build an in-memory benchmark corpus without touching the disk.
    """
    _check_rows(rows)
    key = new_key(rows, seed, 0)
    for _, record in ticket_lines(random.Random(_seeds(seed)[0]), rows, key):
        if record is not None:
            yield record


def _planted(key: Key) -> dict[str, int]:
    counts = {
        name: len(key[name])
        for name in (
            "exact_duplicates",
            "near_duplicates",
            "pii",
            "decoys",
            "malformed",
            "conversation_issues",
        )
    }
    counts.update({f"noise.{name}": len(rows) for name, rows in key["noise"].items()})
    counts.update(
        {
            f"sensors.{name}": len(key["sensors"][name])
            for name in ("missing", "outliers", "unparseable")
        }
    )
    return counts


def generate(out: Path, rows: int = 2000, seed: int = 0) -> SampleManifest:
    """Write the sample datasets and their answer key into ``out``.

    Args:
        out: Directory to write into; created when missing. Our four file names are replaced
            (atomically, one by one); other files there are left alone.
        rows: Number of lines in ``tickets.jsonl``; ``conversations.jsonl`` gets half as many.
        seed: Seed of every random choice; the same arguments give byte-identical files.

    Returns:
        The files written and a tally of every planted problem (details are in ``SAMPLE.json``).

    Raises:
        ConfigError: ``rows`` is below :data:`MIN_ROWS` or ``out`` is not a directory.
    """
    out = Path(out)
    _check_args(out, rows)
    with disk_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    conversations = max(MIN_ROWS // 2, rows // 2)
    key = new_key(rows, seed, conversations)
    t_seed, c_seed, s_seed = _seeds(seed)
    tickets = (line for line, _ in ticket_lines(random.Random(t_seed), rows, key))
    files = [
        _write(out / "tickets.jsonl", tickets),
        _write(
            out / "conversations.jsonl",
            conversation_lines(random.Random(c_seed), conversations, key),
        ),
    ]
    cells = sensor_rows(random.Random(s_seed), SENSOR_ROWS, key)
    csv_lines = (
        ",".join(r).encode() + b"\n" for r in [["timestamp", "temperature", "pressure"], *cells]
    )
    files.append(_write(out / "sensors.csv", csv_lines, records=len(cells)))
    key["files"] = {
        f.name: {"records": f.records, "bytes": f.bytes, "sha256": f.sha256} for f in files
    }
    text = json.dumps(key, ensure_ascii=False, indent=1) + "\n"
    with _atomic(out / KEY_FILE) as sink:
        sink.write(text.encode("utf-8"))
    return SampleManifest(out, rows, seed, tuple(files), _planted(key), out / KEY_FILE)
