"""Canonical record batches for step tests, built the way the readers build them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from offline.data.records import schema_for
from offline.data.steps.base import Context


def make_batch(kind: str, rows: list[Any]) -> pa.RecordBatch:
    """A canonical batch: ``rows`` are texts, (system, instruction, response) or message lists
    of ``(role, content)`` pairs."""
    n = len(rows)
    data: dict[str, list[Any]] = {
        "record_id": [f"r{i}" for i in range(n)],
        "dataset": ["d"] * n,
        "source": [f"in.jsonl:{i + 1}" for i in range(n)],
        "original": ["{}"] * n,
        "id": [None] * n,
        "cluster": [f"r{i}" for i in range(n)],
        "meta": [None] * n,
    }
    if kind == "text":
        data |= {"text": rows, "label": [None] * n}
    elif kind == "instruction":
        columns = ("system", "instruction", "response")
        data |= {name: [r[i] for r in rows] for i, name in enumerate(columns)}
    else:
        messages = [None if r is None else [{"role": a, "content": b} for a, b in r] for r in rows]
        data |= {"messages": messages, "label": [None] * n}
    return pa.RecordBatch.from_pydict(data, schema=schema_for(kind))


def ctx(kind: str = "text") -> Context:
    return Context(workdir=Path("."), dataset="d", kind=kind)
