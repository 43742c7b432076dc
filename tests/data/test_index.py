"""The spillable stores behind dedup: same answers as a dict, in memory or spilled to disk."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from offline.data.index import KeyIndex, RowStore, StringStore, first_occurrence, unique_first

Batch = tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]


def _stream(seed: int, batches: int, size: int, space: int) -> list[Batch]:
    """Batches of (keys, values, insert mask) with many repeats within and across batches."""
    rng = np.random.default_rng(seed)
    out: list[Batch] = []
    for b in range(batches):
        keys = rng.integers(0, space, size).astype(np.uint64)
        # Keys above 2**63 too: the index must not treat them as negative.
        keys[::7] += np.uint64(1 << 63)
        values = np.arange(b * size, (b + 1) * size, dtype=np.int64)
        out.append((keys, values, rng.random(size) < 0.8))
    return out


def _reference(stream: list[Batch]) -> list[list[int]]:
    seen: dict[int, int] = {}
    answers = []
    for keys, values, mask in stream:
        batch = []
        for k, v, m in zip(keys.tolist(), values.tolist(), mask.tolist(), strict=True):
            batch.append(seen.get(k, -1))
            if m and k not in seen:
                seen[k] = v
        answers.append(batch)
    return answers


def _run(index: KeyIndex, stream: list[Batch]) -> list[list[int]]:
    return [index.lookup_insert(k, v, m).tolist() for k, v, m in stream]


def test_key_index_answers_like_a_dict(tmp_path: Path) -> None:
    stream = _stream(seed=1, batches=300, size=200, space=20_000)
    index = KeyIndex(tmp_path, memory_bytes=1 << 30)
    assert _run(index, stream) == _reference(stream)
    assert not index.spilled and not any(tmp_path.iterdir())
    expected = {int(k) for keys, _, mask in stream for k in keys[mask]}
    assert len(index) == len(expected)
    assert index.num_runs <= math.log2(len(expected)) + 2
    index.close()


@pytest.mark.slow
def test_key_index_spills_to_disk_and_answers_the_same(tmp_path: Path) -> None:
    stream = _stream(seed=2, batches=300, size=200, space=20_000)
    budget = 4096
    index = KeyIndex(tmp_path, memory_bytes=budget)
    answers = []
    saw_files = False
    for keys, values, mask in stream:
        answers.append(index.lookup_insert(keys, values, mask).tolist())
        assert index.memory_bytes <= budget
        saw_files = saw_files or any(tmp_path.rglob("*.npy"))
    assert answers == _reference(stream)
    assert index.spilled and saw_files
    index.close()
    assert not any(tmp_path.iterdir())


def test_key_index_first_occurrence_in_a_batch_wins(tmp_path: Path) -> None:
    with KeyIndex(tmp_path, 1 << 20) as index:
        keys = np.array([5, 9, 5, 5, 9, 3], np.uint64)
        values = np.array([10, 11, 12, 13, 14, 15])
        mask = np.array([False, True, True, True, True, True])
        # Position 0 may not insert, so position 2 is the first holder of key 5.
        assert index.lookup_insert(keys, values, mask).tolist() == [-1, -1, -1, 12, 11, -1]
        assert index.lookup(np.array([5, 9, 3, 4], np.uint64)).tolist() == [12, 11, 15, -1]


def test_key_index_merges_large_runs_on_disk(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    index = KeyIndex(tmp_path, memory_bytes=0)
    keys = rng.permutation(np.arange(1, 50_001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    for chunk in np.array_split(keys, 40):
        index.insert(chunk, (chunk >> np.uint64(40)).astype(np.int64))
    probe = np.concatenate([keys[::97], np.array([0, 1, 2], np.uint64)])
    expected = np.r_[(keys[::97] >> np.uint64(40)).astype(np.int64), [-1, -1, -1]]
    assert index.lookup(probe).tolist() == expected.tolist()
    assert index.memory_bytes == 0
    assert index.num_runs <= math.log2(len(keys)) + 2
    index.close()
    assert not any(tmp_path.iterdir())


def test_unique_first_matches_numpy() -> None:
    keys = np.random.default_rng(4).integers(0, 50, 1000).astype(np.uint64)
    uniq, first, inverse = unique_first(keys)
    ref_uniq, ref_first, ref_inverse = np.unique(keys, return_index=True, return_inverse=True)
    assert uniq.tolist() == ref_uniq.tolist()
    assert first.tolist() == ref_first.tolist()
    assert inverse.tolist() == ref_inverse.tolist()
    assert first_occurrence(keys).tolist() == ref_first[ref_inverse].tolist()
    assert len(unique_first(np.array([], np.uint64))[0]) == 0


@pytest.mark.parametrize("budget", [1 << 30, 5000, 0])
def test_row_store_reads_back_what_was_appended(tmp_path: Path, budget: int) -> None:
    rng = np.random.default_rng(5)
    store = RowStore(tmp_path, budget, width=16, dtype=np.uint32)
    rows = [
        rng.integers(0, 2**32, (int(rng.integers(1, 50)), 16), dtype=np.uint32) for _ in range(60)
    ]
    reference: npt.NDArray[Any] = np.zeros((0, 16), np.uint32)
    for chunk in rows:
        store.append(chunk)
        reference = np.concatenate([reference, chunk])
        ids = rng.integers(0, len(reference), 30)
        assert np.array_equal(store.get(ids), reference[ids])
    assert len(store) == len(reference)
    assert store.spilled == (budget < reference.nbytes)
    assert store.spilled == any(tmp_path.rglob("*.rows"))
    store.close()
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("budget", [1 << 20, 0])
def test_string_store_round_trips_unicode(tmp_path: Path, budget: int) -> None:
    store = StringStore(tmp_path, budget)
    values = [f"{i:x}-{'数据' * (i % 3)}-é" for i in range(500)] + [""]
    for start in range(0, len(values), 37):
        store.append(values[start : start + 37])
    assert store.get([0, 499, 500, 3, 3]) == [values[0], values[499], "", values[3], values[3]]
    assert store.get(np.arange(len(values))) == values
    assert store.spilled == (budget == 0)
    store.close()
    assert not any(tmp_path.iterdir())
