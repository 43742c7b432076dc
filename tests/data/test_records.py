"""Rewriting message contents keeps every row's messages with its row."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from offline.data.records import MESSAGE, joined_text, map_text, map_text_arrays


def conversations() -> pa.RecordBatch:
    messages = [
        [{"role": "user", "content": "a1"}, {"role": "assistant", "content": "a2"}],
        None,
        [],
        [{"role": "user", "content": "d1"}],
        [{"role": "user", "content": "e1"}, {"role": "assistant", "content": "e2"}],
    ]
    return pa.RecordBatch.from_arrays([pa.array(messages, pa.list_(MESSAGE))], names=["messages"])


def test_map_text_on_a_sliced_batch_keeps_rows_aligned() -> None:
    batch = conversations().slice(1, 4)
    out = map_text(batch, str.upper)
    assert out.column("messages").to_pylist() == [
        None,
        [],
        [{"role": "user", "content": "D1"}],
        [{"role": "user", "content": "E1"}, {"role": "assistant", "content": "E2"}],
    ]
    seen: list[list[str]] = []

    def upper(array: pa.Array) -> pa.Array:
        seen.append(array.to_pylist())
        return pc.utf8_upper(array)

    again = map_text_arrays(batch, upper)
    assert again.column("messages").to_pylist() == out.column("messages").to_pylist()
    assert seen == [["d1", "e1", "e2"]]
    assert joined_text(again) == ["", "", "D1", "E1\nE2"]
