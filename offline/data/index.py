"""Spillable stores for streaming deduplication: a key index and append-only row stores.

A dedup step sees its input one batch at a time and must remember every kept record it has seen.
These stores hold that memory in numpy arrays under a byte budget and move it to memory-mapped
files in a private folder of ``workdir`` once the budget is spent, so a corpus larger than memory
still streams through:

- :class:`KeyIndex` maps ``uint64`` keys to ``int64`` values, first-seen wins. It is a small
  log-structured merge tree: each insert adds a sorted run, runs of similar size are merged so
  that there are only logarithmically many, and lookups are ``searchsorted`` calls per run.
- :class:`RowStore` keeps fixed-width rows (MinHash signatures) by position.
- :class:`StringStore` keeps strings (record ids) by position.

Every store is deterministic and removes its files on ``close()``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

# Merges copy at most this many entries at a time, so merging runs on disk stays in bounded memory.
_MERGE_CHUNK = 1 << 20
# A run is merged into its predecessor unless the predecessor is this many times larger; sizes
# then shrink geometrically along the list, which keeps the number of runs logarithmic.
_FANOUT = 2
_ENTRY_BYTES = 16  # one uint64 key and one int64 value


class _SpillDir:
    """A private folder under ``workdir``, made on first use and removed by :meth:`remove`."""

    def __init__(self, workdir: Path, prefix: str) -> None:
        self._workdir = Path(workdir)
        self._prefix = prefix
        self._path: Path | None = None
        self._seq = 0

    def new_file(self, suffix: str) -> Path:
        if self._path is None:
            self._workdir.mkdir(parents=True, exist_ok=True)
            self._path = Path(tempfile.mkdtemp(prefix=self._prefix, dir=self._workdir))
        self._seq += 1
        return self._path / f"{self._seq:08d}{suffix}"

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


@dataclass
class _Run:
    """Sorted, unique keys and their values; in memory, or memory-mapped from ``files``."""

    keys: U64
    values: I64
    files: tuple[Path, ...] = ()

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def memory_bytes(self) -> int:
        return 0 if self.files else len(self) * _ENTRY_BYTES


def unique_first(keys: U64) -> tuple[U64, I64, I64]:
    """The sorted distinct keys, the position of each one's first occurrence, and the inverse.

    Like ``np.unique(keys, return_index=True, return_inverse=True)`` but several times faster:
    a plain sort, then the smallest position within each run of equal keys.
    """
    order = np.argsort(keys)
    sorted_keys = keys[order]
    if not len(keys):
        return sorted_keys, order.astype(np.int64), order.astype(np.int64)
    new_run = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    starts = np.flatnonzero(new_run)
    inverse = np.empty(len(keys), np.int64)
    inverse[order] = np.cumsum(new_run) - 1
    first = np.minimum.reduceat(order, starts).astype(np.int64)
    return sorted_keys[starts], first, inverse


def first_occurrence(keys: U64) -> I64:
    """For each position, the position of the first equal key (itself when it is the first)."""
    _, first, inverse = unique_first(keys)
    return first[inverse]


class KeyIndex:
    """``uint64`` keys to ``int64`` values, first-seen wins, spilled to disk past a byte budget.

    A new run, or the result of a merge, stays in memory only if it fits in what is left of the
    budget while its inputs are still held; otherwise it is written out. Memory therefore never
    exceeds the budget (plus one merge chunk), and large merged runs go to disk before the budget
    is full.

    Args:
        workdir: where the spill folder is made (only once the budget is exceeded).
        memory_bytes: the most bytes of keys and values kept in memory; further runs are written
            as ``.npy`` files and memory-mapped.
    """

    def __init__(self, workdir: Path, memory_bytes: int) -> None:
        self._dir = _SpillDir(workdir, "keyindex-")
        self._budget = max(0, int(memory_bytes))
        self._runs: list[_Run] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def memory_bytes(self) -> int:
        """Bytes of keys and values held in memory now."""
        return sum(r.memory_bytes for r in self._runs)

    @property
    def num_runs(self) -> int:
        """How many sorted runs a lookup searches."""
        return len(self._runs)

    @property
    def spilled(self) -> bool:
        """Whether any run lives on disk."""
        return any(r.files for r in self._runs)

    def lookup(self, keys: npt.ArrayLike) -> I64:
        """The stored value of each key, or -1 where the key is absent."""
        q = np.ascontiguousarray(keys, dtype=np.uint64)
        found = np.full(len(q), -1, dtype=np.int64)
        if not self._runs or not len(q):
            return found
        # Sorted queries walk each run in order: ten times faster than random probes.
        order = np.argsort(q)
        q = q[order]
        for run in self._runs:
            pos = np.searchsorted(run.keys, q)
            np.minimum(pos, len(run) - 1, out=pos)
            hit = np.flatnonzero(np.asarray(run.keys[pos]) == q)
            found[hit] = run.values[pos[hit]]
        out = np.empty_like(found)
        out[order] = found
        return out

    def insert(self, keys: npt.ArrayLike, values: npt.ArrayLike) -> None:
        """Store keys that are not in the index yet (check with :meth:`lookup` first).

        Within one call a repeated key keeps the value of its first occurrence.
        """
        k = np.ascontiguousarray(keys, dtype=np.uint64)
        v = np.ascontiguousarray(values, dtype=np.int64)
        if not len(k):
            return
        uniq, first, _ = unique_first(k)
        self._runs.append(self._place(uniq, v[first]))
        self._compact()

    def lookup_insert(
        self, keys: npt.ArrayLike, values: npt.ArrayLike, insert_mask: npt.ArrayLike | None = None
    ) -> I64:
        """Look keys up and insert the new ones, in stream order.

        Args:
            keys: the batch's keys.
            values: the value to store for each key, should it be new.
            insert_mask: which positions may be inserted (default: all); the others are only
                looked up.

        Returns:
            For each position, the value of the key's earliest inserted occurrence (an earlier
            batch, or an earlier position of this batch), or -1.
        """
        k = np.ascontiguousarray(keys, dtype=np.uint64)
        v = np.ascontiguousarray(values, dtype=np.int64)
        mask = np.ones(len(k), bool) if insert_mask is None else np.asarray(insert_mask, bool)
        out = self.lookup(k)
        new = np.flatnonzero((out < 0) & mask)
        if len(new):
            firsts = new[first_occurrence(k[new])]
            later = firsts < new
            out[new[later]] = v[firsts[later]]
            self.insert(k[new[~later]], v[new[~later]])
        # Keys that may not be inserted still see an earlier insertable twin in the same batch.
        self._resolve_masked(k, v, mask, out)
        return out

    def close(self) -> None:
        """Drop every run and remove the spill folder."""
        self._runs = []
        self._dir.remove()

    def _resolve_masked(self, k: U64, v: I64, mask: npt.NDArray[np.bool_], out: I64) -> None:
        lookers = np.flatnonzero((out < 0) & ~mask)
        inserters = np.flatnonzero(mask)
        if not len(lookers) or not len(inserters):
            return
        ins_keys, first, _ = unique_first(k[inserters])
        first_pos = inserters[first]
        pos = np.minimum(np.searchsorted(ins_keys, k[lookers]), len(ins_keys) - 1)
        ok = (ins_keys[pos] == k[lookers]) & (first_pos[pos] < lookers)
        out[lookers[ok]] = v[first_pos[pos[ok]]]

    def _place(self, keys: U64, values: I64) -> _Run:
        """A run kept in memory if the budget allows, else written out and memory-mapped."""
        if self.memory_bytes + len(keys) * _ENTRY_BYTES <= self._budget:
            return _Run(keys, values)
        kpath, vpath = self._dir.new_file(".keys.npy"), self._dir.new_file(".values.npy")
        np.save(kpath, keys)
        np.save(vpath, values)
        return _load(kpath, vpath)

    def _compact(self) -> None:
        while len(self._runs) >= 2 and len(self._runs[-2]) <= _FANOUT * len(self._runs[-1]):
            a, b = self._runs[-2:]
            # The inputs stay counted while the merged run is placed, so memory never overshoots.
            merged = self._merge(a, b)
            self._runs[-2:] = [merged]
            _unlink(a, b)

    def _merge(self, a: _Run, b: _Run) -> _Run:
        """One sorted run from two with disjoint keys, written a bounded chunk at a time."""
        n = len(a) + len(b)
        kpath: Path | None = None
        vpath: Path | None = None
        keys: Any
        values: Any
        if self.memory_bytes + n * _ENTRY_BYTES <= self._budget:
            keys, values = np.empty(n, np.uint64), np.empty(n, np.int64)
        else:
            kpath, vpath = self._dir.new_file(".keys.npy"), self._dir.new_file(".values.npy")
            keys = _open_npy(kpath, np.uint64, n)
            values = _open_npy(vpath, np.int64, n)
        done = 0
        for chunk_keys, chunk_values in _merged_chunks(a, b):
            keys[done : done + len(chunk_keys)] = chunk_keys
            values[done : done + len(chunk_keys)] = chunk_values
            done += len(chunk_keys)
        if kpath is None or vpath is None:
            return _Run(keys, values)
        keys.flush()
        values.flush()
        del keys, values
        return _load(kpath, vpath)


def _merged_chunks(a: _Run, b: _Run) -> Iterator[tuple[U64, I64]]:
    """The entries of two sorted runs with disjoint keys, in order, a few chunks at a time."""
    ia = ib = 0
    while ia < len(a) or ib < len(b):
        ak, av = _chunk(a, ia)
        bk, bv = _chunk(b, ib)
        if not len(ak) or not len(bk):
            yield (ak, av) if len(ak) else (bk, bv)
            ia, ib = ia + len(ak), ib + len(bk)
            continue
        # Everything up to the smaller of the two chunk ends is final: later entries are larger.
        limit = min(ak[-1], bk[-1])
        na = int(np.searchsorted(ak, limit, "right"))
        nb = int(np.searchsorted(bk, limit, "right"))
        yield _interleave(ak[:na], av[:na], bk[:nb], bv[:nb])
        ia, ib = ia + na, ib + nb


def _chunk(run: _Run, start: int) -> tuple[U64, I64]:
    stop = start + _MERGE_CHUNK
    return np.asarray(run.keys[start:stop]), np.asarray(run.values[start:stop])


def _interleave(ak: U64, av: I64, bk: U64, bv: I64) -> tuple[U64, I64]:
    """Merge two sorted, disjoint key arrays (and their values)."""
    keys = np.concatenate([ak, bk])
    # A stable sort (timsort) finds the two sorted halves and merges them in one linear pass.
    order = np.argsort(keys, kind="stable")
    return keys[order], np.concatenate([av, bv])[order]


def _open_npy(path: Path, dtype: type[np.generic], n: int) -> Any:
    """A writable memory-mapped ``.npy`` file of ``n`` values."""
    opener: Any = np.lib.format.open_memmap
    return opener(path, mode="w+", dtype=dtype, shape=(n,))


def _load(kpath: Path, vpath: Path) -> _Run:
    return _Run(np.load(kpath, mmap_mode="r"), np.load(vpath, mmap_mode="r"), (kpath, vpath))


def _unlink(*runs: _Run) -> None:
    for run in runs:
        for path in run.files:
            path.unlink(missing_ok=True)


class RowStore:
    """Append-only rows of a fixed width, read back by position; one file once over budget.

    Args:
        workdir: where the spill folder is made (only once the budget is exceeded).
        memory_bytes: the most bytes held in memory; past it every row goes to one file that is
            read back through ``np.memmap``.
        width: values per row.
        dtype: the values' type.
    """

    def __init__(
        self, workdir: Path, memory_bytes: int, width: int, dtype: npt.DTypeLike = np.uint32
    ) -> None:
        self._dir = _SpillDir(workdir, "rowstore-")
        self._budget = max(0, int(memory_bytes))
        self._dtype = np.dtype(dtype)
        self._width = width
        self._mem: npt.NDArray[Any] = np.empty((0, width), self._dtype)
        self._len = 0
        self._path: Path | None = None
        self._file: Any = None
        self._map: npt.NDArray[Any] | None = None

    def __len__(self) -> int:
        return self._len

    @property
    def spilled(self) -> bool:
        """Whether the rows live in a file."""
        return self._path is not None

    @property
    def memory_bytes(self) -> int:
        """Bytes of rows held in memory now."""
        return int(self._mem.nbytes)

    def append(self, rows: npt.ArrayLike) -> None:
        """Add rows (shape ``(m, width)``) at the end."""
        arr = np.ascontiguousarray(rows, dtype=self._dtype).reshape(-1, self._width)
        if not len(arr):
            return
        end = self._len + len(arr)
        if self._path is None and end * self._width * self._dtype.itemsize > self._budget:
            self._spill()
        if self._file is not None:
            self._file.write(arr.tobytes())
        else:
            self._grow(end)
            self._mem[self._len : end] = arr
        self._len = end

    def get(self, ids: npt.ArrayLike) -> npt.NDArray[Any]:
        """The rows at positions ``ids``, shape ``(len(ids), width)``."""
        return np.asarray(self._rows()[np.asarray(ids, dtype=np.int64)])

    def span(self, start: int, stop: int) -> npt.NDArray[Any]:
        """The rows ``start:stop`` (a view of the file when spilled)."""
        return self._rows()[start:stop]

    def close(self) -> None:
        """Drop the rows and remove the spill file."""
        if self._file is not None:
            self._file.close()
        self._file = self._map = self._path = None
        self._mem = np.empty((0, self._width), self._dtype)
        self._len = 0
        self._dir.remove()

    def _rows(self) -> npt.NDArray[Any]:
        if self._file is None:
            return self._mem[: self._len]
        if self._map is None or len(self._map) != self._len:
            assert self._path is not None
            self._file.flush()
            shape = (self._len, self._width)
            self._map = np.memmap(self._path, dtype=self._dtype, mode="r", shape=shape)
        return self._map

    def _grow(self, end: int) -> None:
        if end <= len(self._mem):
            return
        cap = max(end, 2 * len(self._mem), 1024)
        row_bytes = self._width * self._dtype.itemsize
        cap = max(end, min(cap, self._budget // max(1, row_bytes)))
        grown = np.empty((cap, self._width), self._dtype)
        grown[: self._len] = self._mem[: self._len]
        self._mem = grown

    def _spill(self) -> None:
        self._path = self._dir.new_file(".rows")
        self._file = open(self._path, "wb")  # noqa: SIM115 - held open for appends until close()
        self._file.write(self._mem[: self._len].tobytes())
        self._mem = np.empty((0, self._width), self._dtype)


class StringStore:
    """Append-only strings read back by position, under the same budget and spill rules.

    Args:
        workdir: where the spill folder is made.
        memory_bytes: the budget, shared between the UTF-8 bytes and their offsets.
    """

    def __init__(self, workdir: Path, memory_bytes: int) -> None:
        self._ends = RowStore(workdir, memory_bytes // 4, 1, np.int64)
        self._bytes = RowStore(workdir, memory_bytes - memory_bytes // 4, 1, np.uint8)
        self._total = 0

    def __len__(self) -> int:
        return len(self._ends)

    @property
    def spilled(self) -> bool:
        """Whether any part lives on disk."""
        return self._ends.spilled or self._bytes.spilled

    def append(self, values: list[str]) -> None:
        """Add strings at the end."""
        encoded = [v.encode("utf-8") for v in values]
        lengths = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
        self._ends.append(self._total + np.cumsum(lengths))
        self._bytes.append(np.frombuffer(b"".join(encoded), np.uint8))
        self._total += int(lengths.sum())

    def get(self, ids: npt.ArrayLike) -> list[str]:
        """The strings at positions ``ids``."""
        idx = np.asarray(ids, dtype=np.int64)
        ends = self._ends.get(idx).ravel()
        starts = np.where(idx > 0, self._ends.get(np.maximum(idx - 1, 0)).ravel(), 0)
        return [
            self._bytes.span(int(s), int(e)).tobytes().decode("utf-8")
            for s, e in zip(starts, ends, strict=True)
        ]

    def close(self) -> None:
        """Drop the strings and remove the spill files."""
        self._ends.close()
        self._bytes.close()
        self._total = 0
