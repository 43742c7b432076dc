"""Read a dataset (JSONL, CSV, Parquet; a file or a directory of shards) as canonical batches.

Rows that cannot become a record are not dropped and do not stop the run: each comes back as a
:class:`Quarantined` row (source, the raw row, the reason, a category) for the ledger. Only a file
that cannot be read at all raises :class:`~offline.errors.DataError`, naming the file (and line);
a file in the wrong encoding is one (see :mod:`offline.data.decode` for encodings and BOMs).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from offline.data.decode import Decoding, drop_bom, open_text, printable, scan
from offline.data.params import Dataset
from offline.data.records import schema_for
from offline.errors import DataError, NotFoundError

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
SUFFIXES[".parquet"] = "parquet"
SUFFIXES[".pq"] = "parquet"

# Quarantine categories; validate turns their rates into its checks.
MALFORMED = "malformed"
MISSING = "missing"
WRONG_TYPE = "wrong_type"
OVERSIZED = "oversized"


@dataclass(frozen=True)
class Quarantined:
    """A row that could not be read as a record, kept for the ledger."""

    source: str
    original: str
    reason: str
    category: str
    id: str | None = None


class _Reject(Exception):
    def __init__(self, reason: str, category: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


@dataclass(frozen=True)
class RawLine:
    """One line of a JSONL input as read, not yet parsed: where it is, its text, and why the
    reader refused it (``(reason, category)``), if it did."""

    source: str
    text: str
    refused: tuple[str, str] | None = None


@dataclass
class Chunk:
    """One batch of records and the rows quarantined while reading it."""

    batch: pa.RecordBatch
    quarantined: list[Quarantined]
    # Records read into it: ``batch.num_rows``, unless the batch was left behind in a worker.
    read: int = -1

    @property
    def rows(self) -> int:
        return self.batch.num_rows if self.read < 0 else self.read


def dataset_files(root: Path, name: str, ds: Dataset) -> list[tuple[Path, str]]:
    """The files of a dataset with their formats, in a stable (sorted) order."""
    path = root / ds.path
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if ds.format != "auto":
            found = [p for p in found if SUFFIXES[p.suffix] == ds.format]
        if not found:
            raise NotFoundError(
                f"dataset {name!r}: no .jsonl/.csv/.parquet files under {ds.path}",
                fix=f"put the data there or fix datasets.{name}.path in params.yaml",
            )
        return [(p, SUFFIXES[p.suffix]) for p in found]
    if not path.is_file():
        raise NotFoundError(
            f"dataset {name!r}: {ds.path} does not exist",
            fix=f"create it (`offline data sample --out data/raw`) or fix datasets.{name}.path",
        )
    fmt = ds.format if ds.format != "auto" else SUFFIXES.get(path.suffix)
    if fmt is None:
        raise DataError(
            f"dataset {name!r}: cannot tell the format of {ds.path} from its suffix",
            fix=f"set datasets.{name}.format to jsonl, csv or parquet in params.yaml",
        )
    return [(path, fmt)]


def record_id(fields: dict[str, Any]) -> str:
    """A stable id from a record's mapped content: exact copies share it."""
    blob = json.dumps(fields, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=10).hexdigest()


def _string(row: dict[str, Any], key: str | None, field: str, required: bool) -> str | None:
    if key is None:
        if required:
            raise _Reject(f"missing field: no column is mapped to {field!r}", MISSING)
        return None
    value = row.get(key)
    if value is None:
        if required:
            raise _Reject(f"missing field: {key!r}", MISSING)
        return None
    if isinstance(value, str):
        return value
    # A label may be a number (class ids); text-bearing fields must be strings.
    if not required and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _Reject(f"wrong type: {key!r} is {type(value).__name__}, expected a string", WRONG_TYPE)


def _messages(row: dict[str, Any], ds: Dataset) -> list[dict[str, str]]:
    cols = ds.columns
    key = cols.messages or "messages"
    value = row.get(key)
    if value is None:
        raise _Reject(f"missing field: {key!r}", MISSING)
    if not isinstance(value, list):
        raise _Reject(f"wrong type: {key!r} is {type(value).__name__}, expected a list", WRONG_TYPE)
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise _Reject(f"wrong type: {key}[{i}] is not an object", WRONG_TYPE)
        role_key, content_key = cols.role_key or "role", cols.content_key or "content"
        role, content = msg.get(role_key), msg.get(content_key)
        if role is None or content is None:
            missing = role_key if role is None else content_key
            raise _Reject(f"missing field: {key}[{i}] has no {missing!r}", MISSING)
        if not isinstance(role, str) or not isinstance(content, str):
            raise _Reject(f"wrong type: {key}[{i}] role and content must be strings", WRONG_TYPE)
        out.append({"role": role, "content": content})
    return out


def _mapped(row: dict[str, Any], ds: Dataset) -> dict[str, Any]:
    cols = ds.columns
    if ds.kind == "text":
        return {
            "text": _string(row, cols.text or "text", "text", True),
            "label": _string(row, cols.label, "label", False),
        }
    if ds.kind == "instruction":
        return {
            "system": _string(row, cols.system, "system", False),
            "instruction": _string(row, cols.instruction or "instruction", "instruction", True),
            "response": _string(row, cols.response or "response", "response", True),
        }
    return {"messages": _messages(row, ds), "label": _string(row, cols.label, "label", False)}


def _used_keys(ds: Dataset) -> set[str]:
    cols = ds.columns
    names = {"text": cols.text or "text", "label": cols.label, "id": cols.id}
    if ds.kind == "instruction":
        names = {
            "system": cols.system,
            "instruction": cols.instruction or "instruction",
            "response": cols.response or "response",
            "id": cols.id,
        }
    elif ds.kind == "conversation":
        names = {"messages": cols.messages or "messages", "label": cols.label, "id": cols.id}
    return {v for v in names.values() if v}


class _Builder:
    """Accumulates canonical rows for one dataset and emits fixed-schema batches."""

    def __init__(self, name: str, ds: Dataset) -> None:
        self.name = name
        self.ds = ds
        self.schema = schema_for(ds.kind)
        self.used = _used_keys(ds)
        self.rows: dict[str, list[Any]] = {f.name: [] for f in self.schema}
        self.quarantined: list[Quarantined] = []

    def __len__(self) -> int:
        return len(self.rows["record_id"])

    def add(self, row: Any, source: str, original: str) -> None:
        if not isinstance(row, dict):
            self.reject(source, original, "not an object: the row is not a JSON object", MALFORMED)
            return
        ident = None if self.ds.columns.id is None else row.get(self.ds.columns.id)
        ident = None if ident is None else str(ident)
        try:
            fields = _mapped(row, self.ds)
        except _Reject as exc:
            self.quarantined.append(Quarantined(source, original, exc.reason, exc.category, ident))
            return
        rid = record_id(fields)
        extra = {k: v for k, v in row.items() if k not in self.used}
        for key, value in fields.items():
            self.rows[key].append(value)
        self.rows["record_id"].append(rid)
        self.rows["dataset"].append(self.name)
        self.rows["source"].append(source)
        self.rows["original"].append(original)
        self.rows["id"].append(ident)
        self.rows["cluster"].append(rid)
        self.rows["meta"].append(
            json.dumps(extra, ensure_ascii=False, sort_keys=True, default=str) if extra else None
        )

    def reject(self, source: str, original: str, reason: str, category: str) -> None:
        self.quarantined.append(Quarantined(source, original, reason, category))

    def flush(self) -> Chunk:
        batch = pa.RecordBatch.from_pydict(self.rows, schema=self.schema)
        chunk = Chunk(batch, self.quarantined)
        self.rows = {f.name: [] for f in self.schema}
        self.quarantined = []
        return chunk


def _jsonl_lines(
    path: Path, label: str, max_bytes: int, name: str, ds: Dataset
) -> Iterator[RawLine]:
    """The non-blank lines of a JSONL file, those the reader already refuses (oversized, not
    in the file's encoding) with their reason; parsing is left to :func:`parse_lines`."""
    encoding = ds.encoding
    decoding = Decoding(label, name, encoding)
    with open_text(path, encoding, newline="\n") as fh:
        for lineno, raw in enumerate(fh, 1):
            source = f"{label}:{lineno}"
            line = drop_bom(raw, lineno).rstrip("\r\n")
            if not line.strip():
                continue
            size = len(line.encode("utf-8", "surrogateescape"))
            if size > max_bytes:
                yield RawLine(
                    source,
                    printable(line[:2048], encoding)
                    + f"... [{size} bytes, truncated in the ledger]",
                    (f"oversized: {size} bytes > max_record_bytes {max_bytes}", OVERSIZED),
                )
            elif bad := decoding.check(line, lineno):
                yield RawLine(source, printable(line, encoding), (bad, MALFORMED))
            else:
                yield RawLine(source, line)
    decoding.judge()


def _jsonl_rows(path: Path, label: str, max_bytes: int, builder: _Builder) -> Iterator[None]:
    for line in _jsonl_lines(path, label, max_bytes, builder.name, builder.ds):
        _add_line(line, builder)
        yield


def _add_line(line: RawLine, builder: _Builder) -> None:
    if line.refused is not None:
        builder.reject(line.source, line.text, *line.refused)
    else:
        _json_row(line.text, line.source, builder)


def _json_row(text: str, source: str, builder: _Builder) -> None:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        builder.reject(source, text, f"invalid JSON: {exc.msg} at column {exc.colno}", MALFORMED)
        return
    builder.add(row, source, text)


def _csv_rows(path: Path, label: str, max_bytes: int, builder: _Builder) -> Iterator[None]:
    encoding = builder.ds.encoding
    decoding = Decoding(label, builder.name, encoding)
    with open_text(path, encoding, newline="") as fh:
        reader = csv.reader(drop_bom(line, n) for n, line in enumerate(fh, 1))
        header = _csv_header(path, reader, decoding)
        if header is None:
            return
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise DataError(f"{path}:{reader.line_num}: {exc}") from None
            source = f"{label}:{reader.line_num}"
            original = _csv_line(cells)
            if bad := decoding.check(original, reader.line_num):
                builder.reject(source, printable(original, encoding), bad, MALFORMED)
            elif len(original.encode("utf-8")) > max_bytes:
                builder.reject(
                    source,
                    original[:2048],
                    f"oversized: more than max_record_bytes {max_bytes}",
                    OVERSIZED,
                )
            elif len(cells) != len(header):
                builder.reject(
                    source,
                    original,
                    f"wrong cell count: {len(cells)} cells, the header has {len(header)}",
                    MALFORMED,
                )
            else:
                builder.add(dict(zip(header, cells, strict=True)), source, original)
            yield
    decoding.judge()


def _csv_header(path: Path, reader: Iterator[list[str]], decoding: Decoding) -> list[str] | None:
    """The header row (None for an empty file); column names that do not decode stop the read."""
    try:
        header = next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        raise DataError(f"{path}: cannot read the CSV header: {exc}") from None
    if decoding.check(_csv_line(header), 1):
        raise decoding.error()
    return header


def _csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(cells)
    return buf.getvalue()


def _parquet_rows(path: Path, label: str, max_bytes: int, builder: _Builder) -> Iterator[None]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
    row_no = 0
    for batch in pf.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            row_no += 1
            source = f"{label}:{row_no}"
            original = json.dumps(row, ensure_ascii=False, sort_keys=True, default=str)
            if len(original.encode("utf-8")) > max_bytes:
                builder.reject(
                    source,
                    original[:2048],
                    f"oversized: more than max_record_bytes {max_bytes}",
                    OVERSIZED,
                )
            else:
                builder.add(row, source, original)
            yield


READERS = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}


def read_dataset(
    root: Path, name: str, ds: Dataset, *, batch_rows: int, max_record_bytes: int
) -> Iterator[Chunk]:
    """Stream a text-bearing dataset as canonical batches of at most ``batch_rows`` rows."""
    if jsonl_only(root, name, ds):
        lines = read_lines(root, name, ds, batch_rows=batch_rows, max_record_bytes=max_record_bytes)
        yield from (parse_lines(name, ds, group) for group in lines)
        return
    builder = _Builder(name, ds)
    for path, fmt in dataset_files(root, name, ds):
        label = _label(root, path)
        try:
            for _ in READERS[fmt](path, label, max_record_bytes, builder):
                if len(builder) + len(builder.quarantined) >= batch_rows:
                    yield builder.flush()
        except OSError as exc:
            raise DataError(f"{label}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            # Even surrogateescape cannot map some codecs' bad input (utf-16 halves).
            raise scan(path, label, name, ds.encoding) from None
    if len(builder) or builder.quarantined:
        yield builder.flush()


def _label(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def jsonl_only(root: Path, name: str, ds: Dataset) -> bool:
    """Whether every file of the dataset is JSONL, whose lines :func:`read_lines` can hand out
    unparsed (to parse in other processes, in any order, into the same chunks)."""
    return all(fmt == "jsonl" for _, fmt in dataset_files(root, name, ds))


def read_lines(
    root: Path, name: str, ds: Dataset, *, batch_rows: int, max_record_bytes: int
) -> Iterator[list[RawLine]]:
    """A JSONL dataset's lines in groups of ``batch_rows``: each group is one chunk of
    :func:`read_dataset` once :func:`parse_lines` has parsed it."""
    group: list[RawLine] = []
    for path, _ in dataset_files(root, name, ds):
        label = _label(root, path)
        try:
            for line in _jsonl_lines(path, label, max_record_bytes, name, ds):
                group.append(line)
                if len(group) >= batch_rows:
                    yield group
                    group = []
        except OSError as exc:
            raise DataError(f"{label}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise scan(path, label, name, ds.encoding) from None
    if group:
        yield group


def parse_lines(name: str, ds: Dataset, lines: list[RawLine]) -> Chunk:
    """One chunk from a group of :func:`read_lines`: the records, and the lines quarantined."""
    builder = _Builder(name, ds)
    for line in lines:
        _add_line(line, builder)
    return builder.flush()
