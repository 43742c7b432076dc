"""The canonical record batch every cleaning step sees, and helpers to read and rewrite its text.

Readers turn each input row into one row of a fixed Arrow schema for its dataset's kind:

- every kind: ``record_id`` (hex digest of the mapped content, so exact copies share it),
  ``dataset``, ``source`` (``file:line`` or ``file:row``), ``original`` (the raw row as read),
  ``id`` (the user's id column, when mapped), ``cluster`` (the ``record_id`` of the row's
  duplicate-cluster representative; its own id until a dedup step says otherwise), ``meta``
  (the unmapped fields as JSON);
- ``text``: ``text`` and ``label``;
- ``instruction``: ``system``, ``instruction``, ``response``;
- ``conversation``: ``messages`` (a list of ``{role, content}``) and ``label``;
- ``tabular``: the mapped time column and value columns (handled by :mod:`offline.data.tabular`).

Steps rewrite text with :func:`map_text` and judge a record by :func:`joined_text`, so one step
serves every text-bearing kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Kind = Literal["text", "instruction", "conversation", "tabular"]
TEXT_KINDS: tuple[Kind, ...] = ("text", "instruction", "conversation")

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

COMMON_FIELDS: list[pa.Field] = [
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("original", pa.string(), nullable=False),
    pa.field("id", pa.string()),
    pa.field("cluster", pa.string(), nullable=False),
    pa.field("meta", pa.string()),
]

KIND_FIELDS: dict[str, list[pa.Field]] = {
    "text": [pa.field("text", pa.string()), pa.field("label", pa.string())],
    "instruction": [
        pa.field("system", pa.string()),
        pa.field("instruction", pa.string()),
        pa.field("response", pa.string()),
    ],
    "conversation": [pa.field("messages", pa.list_(MESSAGE)), pa.field("label", pa.string())],
}

# The text-bearing columns of each kind, in the order joined_text concatenates them.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "instruction": ("system", "instruction", "response"),
    "conversation": ("messages",),
}


def schema_for(kind: str) -> pa.Schema:
    """The canonical schema of a text-bearing ``kind``."""
    return pa.schema(COMMON_FIELDS + KIND_FIELDS[kind])


def kind_of(batch: pa.RecordBatch) -> str:
    """Which kind a canonical batch holds, read off its columns."""
    names = set(batch.schema.names)
    if "messages" in names:
        return "conversation"
    if "instruction" in names:
        return "instruction"
    if "text" in names:
        return "text"
    return "tabular"


def _map_strings(array: pa.Array, fn: Callable[[str], str]) -> pa.Array:
    return pa.array([None if v is None else fn(v) for v in array.to_pylist()], pa.string())


def _rebuild_messages(array: pa.ListArray, fn: Callable[[pa.Array], pa.Array]) -> pa.Array:
    # ``flatten`` holds exactly the visible messages (not a slice's neighbours, not the backing
    # values of a null list), so offsets are rebuilt from the list lengths to match it; ``fn``
    # sees the same elements, in the same order, as ``pc.list_parent_indices`` describes.
    values = array.flatten()
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())
    structs = pa.StructArray.from_arrays(
        [values.field("role"), fn(values.field("content"))], fields=list(MESSAGE)
    )
    return pa.ListArray.from_arrays(offsets, structs, type=pa.list_(MESSAGE), mask=array.is_null())


def _map_messages(array: pa.ListArray, fn: Callable[[str], str]) -> pa.Array:
    return _rebuild_messages(array, lambda contents: _map_strings(contents, fn))


def map_text(batch: pa.RecordBatch, fn: Callable[[str], str]) -> pa.RecordBatch:
    """Apply ``fn`` to every text value of every text-bearing column (message contents too)."""
    kind = kind_of(batch)
    columns = list(batch.columns)
    for name in TEXT_COLUMNS.get(kind, ()):
        i = batch.schema.get_field_index(name)
        if name == "messages":
            columns[i] = _map_messages(batch.column(i), fn)
        else:
            columns[i] = _map_strings(batch.column(i), fn)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def map_text_arrays(batch: pa.RecordBatch, fn: Callable[[pa.Array], pa.Array]) -> pa.RecordBatch:
    """Like :func:`map_text` but ``fn`` takes and returns a whole string array (pyarrow.compute)."""
    kind = kind_of(batch)
    columns = list(batch.columns)
    for name in TEXT_COLUMNS.get(kind, ()):
        i = batch.schema.get_field_index(name)
        col = batch.column(i)
        if name == "messages":
            columns[i] = _rebuild_messages(col, fn)
        else:
            columns[i] = fn(col)
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def joined_text(batch: pa.RecordBatch, sep: str = "\n") -> list[str]:
    """One string per row: the row's text-bearing values joined by ``sep`` (nulls skipped)."""
    kind = kind_of(batch)
    parts: list[list[str]] = [[] for _ in range(batch.num_rows)]
    for name in TEXT_COLUMNS.get(kind, ()):
        values = batch.column(batch.schema.get_field_index(name)).to_pylist()
        for row, value in zip(parts, values, strict=True):
            if value is None:
                continue
            if name == "messages":
                row.extend(m["content"] for m in value if m and m["content"] is not None)
            else:
                row.append(value)
    return [sep.join(p) for p in parts]


def take(batch: pa.RecordBatch, rows: Sequence[int]) -> pa.RecordBatch:
    """The rows of ``batch`` at ``rows``, in that order."""
    return batch.take(pa.array(rows, pa.int64()))
