"""``clean.executor: ray``: the whole chain on the cluster, the dedup indexes included, in rounds.

The chain is cut at its stateful steps (the dedup indexes, :attr:`StepSpec.shuffle`): segment
``r`` is the per-batch steps before stateful step ``r``. Each chunk of input goes through the
rounds as one Ray task per round:

- round ``r``: apply the decisions of stateful step ``r - 1`` to the chunk's rows, run segment
  ``r``'s per-batch steps, take step ``r``'s per-row keys (``StepSpec.prepare``) and hand the
  rows' keys out to the partitions of step ``r``;
- a ``key`` step (exact dedup) is partitioned by the key: one task per partition runs a fresh
  instance of the step over its rows in source order. The rows of one key meet in one
  partition, and a row's fate depends only on the earlier rows of its key, so every decision
  is the one a single process makes;
- a ``bands`` step (near dedup) is partitioned by band key: each partition links the rows that
  share a band key; the runner joins the links into connected components (a row that shares
  no band key with another is in none and is kept); the chunks hand the rows of each
  component to one resolving task, which runs a fresh instance of the step over its
  components in source order. A row's fate depends only on the rows linked to it, so again
  every decision is a single process's;
- the last round applies the last stateful step's decisions and runs the per-batch steps after
  it; the runner takes the chunks back in source order and writes them.

So the shards, the ledger and the counts are those of ``local`` with one worker, byte for
byte. The runner holds the chunks' object references, one round's decisions (a position, a
reason and a cluster per duplicate) and, for a ``bands`` step, the links between rows that
share a band key; the corpus stays in the cluster's object store, which Ray spills to disk
past its memory. A row's position is ``chunk << 32 | row``: source order.
"""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from offline.data.cluster import TASK_RETRIES, Cluster, payload_bytes
from offline.data.io import Chunk, Quarantined, RawLine, parse_lines
from offline.data.params import Dataset, Params
from offline.data.steps.base import Context, Outcome, Prepared, Scrubber, Step
from offline.data.steps.registry import registry

if TYPE_CHECKING:
    from offline.data.clean import StepStats

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
POS_SHIFT = 32
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class Setup:
    """What every task rebuilds the run's steps from, once per worker process."""

    clean: dict[str, Any]
    dataset: dict[str, Any]
    ctx: Context
    names: list[str]
    partitions: int = 1  # of each stateful step: the cluster's CPUs
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Built:
    params: Params
    dataset: Dataset
    names: list[str]
    steps: dict[int, Step]  # the per-batch ones, by place in the chain (the stateful ones are
    # built fresh by each resolving task)
    segments: list[tuple[list[int], int | None]]
    pii: Scrubber | None


_BUILT: tuple[str, Built] | None = None


def segments_of(names: list[str]) -> list[tuple[list[int], int | None]]:
    """The chain as (per-batch step indexes, the stateful step after them or None)."""
    specs = registry()
    found: list[tuple[list[int], int | None]] = []
    run: list[int] = []
    for i, name in enumerate(names):
        if specs[name].stateful:
            found.append((run, i))
            run = []
        else:
            run.append(i)
    found.append((run, None))
    return found


def _built(setup: Setup) -> Built:
    global _BUILT
    if _BUILT is None or _BUILT[0] != setup.token:
        ctx = setup.ctx
        params = Params.model_validate(
            {"datasets": {ctx.dataset: setup.dataset}, "clean": setup.clean}
        )
        specs = registry()
        steps = {
            i: specs[n].build(params.clean.step_params(n), ctx)
            for i, n in enumerate(setup.names)
            if not specs[n].stateful
        }
        pii = next((s for s in steps.values() if isinstance(s, Scrubber)), None)
        dataset = params.datasets[ctx.dataset]
        built = Built(params, dataset, setup.names, steps, segments_of(setup.names), pii)
        _BUILT = (setup.token, built)
    return _BUILT[1]


@dataclass
class State:
    """One chunk between rounds: its rows still kept, their positions, the keys of the next
    stateful step, and what happened to it so far."""

    batch: pa.RecordBatch
    pos: I64
    prepared: Any
    stats: list[StepStats]
    ledger: list[pa.RecordBatch]
    read: int
    quarantined: list[Quarantined]


@dataclass
class Part:
    """Rows of one chunk for one resolving task: positions, ids, clusters, and their keys."""

    pos: I64
    record_id: pa.Array
    cluster: pa.Array
    prepared: Any


@dataclass
class Decisions:
    """A stateful step's verdict on the rows it rejected or tagged, by position."""

    pos: I64
    reasons: list[str | None]
    clusters: list[str | None]

    @classmethod
    def concat(cls, parts: list[Decisions]) -> Decisions:
        pos = np.concatenate([p.pos for p in parts]) if parts else np.zeros(0, np.int64)
        reasons = [r for p in parts for r in p.reasons]
        clusters = [c for p in parts for c in p.clusters]
        order = np.argsort(pos, kind="stable")
        return cls(pos[order], [reasons[i] for i in order], [clusters[i] for i in order])

    def of_chunk(self, chunk: int) -> Decisions:
        lo, hi = np.searchsorted(self.pos, [chunk << POS_SHIFT, (chunk + 1) << POS_SHIFT])
        return Decisions(self.pos[lo:hi], self.reasons[lo:hi], self.clusters[lo:hi])


@dataclass
class Resolved:
    decisions: Decisions
    counts: dict[str, int]
    tallies: dict[str, int]
    shuffled: int  # bytes this task took in


def _take(prepared: Any, rows: I64) -> Any:
    if isinstance(prepared, tuple):
        return tuple(_take(p, rows) for p in prepared)
    return prepared[rows]


def _concat(prepared: list[Any]) -> Any:
    if isinstance(prepared[0], tuple):
        return tuple(_concat([p[i] for p in prepared]) for i in range(len(prepared[0])))
    return np.concatenate(prepared)


def _split(which: I64, n: int) -> list[I64]:
    """Row indexes per partition ``0..n-1``, each in row order."""
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(n + 1))
    return [order[a:b] for a, b in pairwise(bounds.tolist())]


def _apply_decisions(b: Built, state: State, step_index: int, decided: Decisions) -> None:
    """Stateful step ``step_index``'s decisions on the chunk, as the runner tallies a step."""
    from offline.data.clean import _apply, scrub_columns

    batch = state.batch
    rows = np.searchsorted(state.pos, decided.pos)
    reasons: list[str | None] = [None] * batch.num_rows
    i = batch.schema.get_field_index("cluster")
    clusters = batch.column(i).to_pylist()
    for row, reason, cluster in zip(rows.tolist(), decided.reasons, decided.clusters, strict=True):
        reasons[row] = reason
        clusters[row] = cluster
    columns = list(batch.columns)
    columns[i] = pa.array(clusters, batch.schema.field(i).type)
    outcome = Outcome(pa.RecordBatch.from_arrays(columns, schema=batch.schema), reasons)
    name = b.names[step_index]
    state.batch, ledger, kept = _apply(name, batch, outcome, state.stats[step_index])
    if ledger is not None:
        state.ledger.append(scrub_columns(ledger, ("original",), b.pii))
    if kept is not None:
        state.pos = state.pos[np.asarray(kept, np.int64)]
    state.prepared = None


def _round(setup: Setup, r: int, chunk: int, work: Any, decided: Decisions | None) -> Any:
    """Round ``r`` of one chunk: the state, then one part per partition of the next step."""
    from offline.data.clean import StepStats, _apply, scrub_columns

    b = _built(setup)
    if r == 0:
        read = parse_lines(setup.ctx.dataset, b.dataset, work) if isinstance(work, list) else work
        n = read.batch.num_rows
        state = State(
            read.batch,
            (np.int64(chunk) << POS_SHIFT) + np.arange(n, dtype=np.int64),
            None,
            [StepStats() for _ in b.names],
            [],
            read.rows,
            read.quarantined,
        )
    else:
        state = work
        previous = b.segments[r - 1][1]
        assert previous is not None and decided is not None
        _apply_decisions(b, state, previous, decided)
    per_batch, stateful = b.segments[r]
    for i in per_batch:
        if state.batch.num_rows == 0:
            break
        step = b.steps[i]
        state.batch, ledger, kept = _apply(
            step.name, state.batch, step(state.batch), state.stats[i]
        )
        if ledger is not None:
            state.ledger.append(scrub_columns(ledger, ("original",), b.pii))
        if kept is not None:
            state.pos = state.pos[np.asarray(kept, np.int64)]
    if stateful is None:
        return state
    spec = registry()[setup.names[stateful]]
    parts = setup.partitions
    if state.batch.num_rows == 0:
        empty: list[Any] = [None] * parts
        return (state, *empty)
    assert spec.prepare is not None
    state.prepared = spec.prepare(b.params.clean.step_params(spec.name), state.batch)
    if spec.shuffle == "key":
        return (state, *_key_parts(state, parts))
    return (state, *_band_parts(state, parts))


def _key_parts(state: State, parts: int) -> list[Part]:
    keys: U64 = state.prepared
    ids, clusters = state.batch.column("record_id"), state.batch.column("cluster")
    out = []
    for rows in _split((keys % np.uint64(parts)).astype(np.int64), parts):
        picked = pa.array(rows, pa.int64())
        out.append(Part(state.pos[rows], ids.take(picked), clusters.take(picked), keys[rows]))
    return out


def _band_parts(state: State, parts: int) -> list[tuple[U64, I64]]:
    _, bands = state.prepared
    keys: U64 = bands.ravel()
    pos = np.repeat(state.pos, bands.shape[1])
    return [
        (keys[rows], pos[rows])
        for rows in _split((keys % np.uint64(parts)).astype(np.int64), parts)
    ]


def _links(*parts: tuple[U64, I64] | None) -> tuple[I64, int]:
    """Pairs of rows that share a band key (each row linked to the next of its key)."""
    found = [p for p in parts if p is not None and len(p[0])]
    size = payload_bytes(found)
    if not found:
        return np.zeros((0, 2), np.int64), size
    keys = np.concatenate([k for k, _ in found])
    pos = np.concatenate([p for _, p in found])
    order = np.lexsort((pos, keys))
    keys, pos = keys[order], pos[order]
    same = (keys[1:] == keys[:-1]) & (pos[1:] != pos[:-1])
    pairs = np.stack([pos[:-1][same], pos[1:][same]], axis=1)
    return (np.unique(pairs, axis=0) if len(pairs) else pairs.astype(np.int64)), size


def components(links: I64) -> tuple[I64, I64]:
    """The rows of ``links`` (sorted) and, per row, the first row of its connected component."""
    if not len(links):
        empty = np.zeros(0, np.int64)
        return empty, empty
    rows, inverse = np.unique(links.ravel(), return_inverse=True)
    a, b = inverse.reshape(-1, 2).T
    label = np.arange(len(rows))
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        while True:  # point every row at its label's label until nothing moves
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, label):
            return rows, rows[label]
        label = new


def _gather(state: State, pos: I64, groups: I64, count: int) -> Any:
    """The chunk's rows at ``pos``, as one part per group of components."""
    rows = np.searchsorted(state.pos, pos)
    ids, clusters = state.batch.column("record_id"), state.batch.column("cluster")
    out = []
    for g in range(count):
        sel = rows[groups == g]
        picked = pa.array(sel, pa.int64())
        out.append(
            Part(
                state.pos[sel], ids.take(picked), clusters.take(picked), _take(state.prepared, sel)
            )
        )
    return out[0] if count == 1 else tuple(out)


def _resolve(setup: Setup, step_index: int, *parts: Part | None) -> Resolved:
    """A fresh instance of stateful step ``step_index`` over the rows of ``parts``, in source
    order; its decisions on the rows it rejected or tagged."""
    b = _built(setup)
    found = [p for p in parts if p is not None and len(p.pos)]
    spec = registry()[setup.names[step_index]]
    params = b.params.clean.step_params(spec.name)
    with tempfile.TemporaryDirectory(prefix="offline-clean-") as tmp:
        ctx = Context(Path(tmp), setup.ctx.dataset, setup.ctx.kind)
        step = cast("Prepared", spec.build(params, ctx))
        counts: dict[str, int] = {}
        decided = Decisions(np.zeros(0, np.int64), [], [])
        if found:
            pos = np.concatenate([p.pos for p in found])
            order = np.argsort(pos, kind="stable")
            ids = pa.concat_arrays([p.record_id for p in found]).take(pa.array(order))
            before = pa.concat_arrays([p.cluster for p in found]).take(pa.array(order))
            mini = pa.RecordBatch.from_arrays([ids, before], names=["record_id", "cluster"])
            outcome = step.apply(mini, _take(_concat([p.prepared for p in found]), order))
            counts = dict(outcome.counts)
            after = outcome.batch.column("cluster").to_pylist()
            was = before.to_pylist()
            picked = [
                i
                for i, (reason, c0, c1) in enumerate(zip(outcome.reasons, was, after, strict=True))
                if reason is not None or c0 != c1
            ]
            decided = Decisions(
                pos[order][picked],
                [outcome.reasons[i] for i in picked],
                [after[i] for i in picked],
            )
        tallies = cast("Step", step).close()
    return Resolved(decided, counts, tallies, payload_bytes(found))


@dataclass
class Finals:
    """What the stateful steps tallied across their resolving tasks."""

    counts: dict[int, Counter[str]] = field(default_factory=dict)
    tallies: dict[int, Counter[str]] = field(default_factory=dict)


def run(
    cluster: Cluster,
    jobs: Iterable[list[RawLine] | Chunk],
    setup: Setup,
    what: str,
    finals: Finals,
) -> Iterator[State]:
    """Every chunk of ``jobs`` through every round; the final states in source order."""
    import ray

    partitions = setup.partitions = max(1, cluster.cpus)
    segments = segments_of(setup.names)
    options: Any = {"num_cpus": 1, "memory": cluster.memory_mb << 20, "max_retries": TASK_RETRIES}
    round_task = ray.remote(**options)(_round)
    resolve = ray.remote(**options)(_resolve)
    links = ray.remote(**options)(_links)
    gather = ray.remote(**options)(_gather)
    shared = ray.put(setup)

    def submit(r: int, c: int, work: Any, decided: Decisions | None) -> tuple[Any, list[Any]]:
        stateful = segments[r][1] is not None
        refs: Any = round_task.options(num_returns=1 + partitions * stateful).remote(
            shared, r, c, work, decided
        )
        if not stateful:
            return refs, []
        return refs[0], list(refs[1:])

    states: list[Any] = []
    parts: list[list[Any]] = []
    for c, work in enumerate(jobs):
        cluster.transfer.batches += 1
        cluster.transfer.sent += payload_bytes(work)
        state, out = submit(0, c, work, None)
        states.append(state)
        parts.append(out)
    for r, (_, stateful) in enumerate(segments[:-1]):
        assert stateful is not None
        spec = registry()[setup.names[stateful]]
        if spec.shuffle == "key":
            resolving = [
                resolve.remote(shared, stateful, *(p[k] for p in parts)) for k in range(partitions)
            ]
        else:
            linked = [links.remote(*(p[k] for p in parts)) for k in range(partitions)]
            got = [cluster.get(ref, what) for ref in linked]
            cluster.transfer.shuffled += sum(size for _, size in got)
            rows, roots = components(np.concatenate([pairs for pairs, _ in got]))
            groups = ((roots.astype(np.uint64) * _MIX) >> np.uint64(40)).astype(
                np.int64
            ) % partitions
            by_group: list[list[Any]] = [[] for _ in range(partitions)]
            for c, state in enumerate(states):
                lo, hi = np.searchsorted(rows, [c << POS_SHIFT, (c + 1) << POS_SHIFT])
                if lo == hi:
                    continue
                gathered: Any = gather.options(num_returns=partitions).remote(
                    state, rows[lo:hi], groups[lo:hi], partitions
                )
                for g, ref in enumerate([gathered] if partitions == 1 else gathered):
                    by_group[g].append(ref)
            resolving = [resolve.remote(shared, stateful, *refs) for refs in by_group]
        done: list[Resolved] = [cluster.get(ref, what) for ref in resolving]
        cluster.transfer.shuffled += sum(d.shuffled for d in done)
        counts = finals.counts.setdefault(stateful, Counter())
        tallies = finals.tallies.setdefault(stateful, Counter())
        for d in done:
            counts.update(d.counts)
            tallies.update(d.tallies)
        decisions = Decisions.concat([d.decisions for d in done])
        submitted = [
            submit(r + 1, c, state, decisions.of_chunk(c)) for c, state in enumerate(states)
        ]
        states = [s for s, _ in submitted]
        parts = [p for _, p in submitted]
    for ref in states:
        final: State = cluster.get(ref, what)
        cluster.transfer.received += payload_bytes(final.batch) + payload_bytes(final.ledger)
        yield final
