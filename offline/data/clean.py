"""The clean stage: stream each dataset through the step chain and keep a ledger of every decision.

The runner owns what steps must not: it counts rows in/out per step, writes kept rows as zstd
Parquet shards (``data/clean/<dataset>-00000.parquet``), writes every rejected row with the step
and the reason (``data/rejected/<dataset>-00000.parquet``, the decision ledger), and writes
``metrics/clean.json``. Outputs are built under temporary names and swapped in at the end, so a
failed run leaves the previous outputs whole. Same input and params give byte-identical shards.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from offline.data import tabular
from offline.data.cluster import Cluster
from offline.data.distributed import Finals, Setup
from offline.data.distributed import run as run_on_cluster
from offline.data.executor import ordered_map, resolve_workers
from offline.data.io import (
    Chunk,
    Quarantined,
    RawLine,
    dataset_files,
    jsonl_only,
    parse_lines,
    read_dataset,
    read_lines,
)
from offline.data.layout import LAYOUT
from offline.data.params import Dataset, Params, load_params
from offline.data.records import schema_for
from offline.data.steps.base import Context, Outcome, Prepared, Scrubber, Step
from offline.data.steps.registry import registry
from offline.fsutil import atomic_write_text, replace_dir

CLEAN_DIR = Path(LAYOUT.clean)
REJECTED_DIR = Path(LAYOUT.rejected)
METRICS = Path(LAYOUT.metric("clean"))
STEPS_PLOT = Path(LAYOUT.metric("clean_steps"))
ROW_GROUP_ROWS = 16_384

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("source", pa.string()),
        pa.field("id", pa.string()),
        pa.field("step", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("cluster", pa.string()),
        pa.field("original", pa.string()),
    ]
)


class ShardWriter:
    """Writes one dataset's rows as zstd Parquet shards of at most ``shard_rows`` rows."""

    def __init__(self, directory: Path, prefix: str, schema: pa.Schema, shard_rows: int) -> None:
        self.directory = directory
        self.prefix = prefix
        self.schema = schema
        self.shard_rows = shard_rows
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.shard = 0
        self.in_shard = 0
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        while self.pending_rows >= min(ROW_GROUP_ROWS, self.shard_rows - self.in_shard):
            self._flush_group(min(ROW_GROUP_ROWS, self.shard_rows - self.in_shard))

    def _flush_group(self, rows: int) -> None:
        table = pa.Table.from_batches(self.pending, schema=self.schema)
        head, rest = table.slice(0, rows), table.slice(rows)
        if self.writer is None:
            path = self.directory / f"{self.prefix}-{self.shard:05d}.parquet"
            self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.writer.write_table(head, row_group_size=rows)
        self.in_shard += head.num_rows
        self.rows += head.num_rows
        self.pending = rest.to_batches()
        self.pending_rows = rest.num_rows
        if self.in_shard >= self.shard_rows:
            self.writer.close()
            self.writer = None
            self.shard += 1
            self.in_shard = 0

    def close(self) -> int:
        if self.pending_rows:
            self._flush_group(self.pending_rows)
        if self.writer is not None:
            self.writer.close()
        return self.rows


@dataclass
class StepStats:
    rows_in: int = 0
    rows_out: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, other: StepStats) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.reasons.update(other.reasons)
        self.counts.update(other.counts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "in": self.rows_in,
            "out": self.rows_out,
            "rejected": self.rows_in - self.rows_out,
            "reasons": dict(sorted(self.reasons.items())),
            "counts": dict(sorted(self.counts.items())),
        }


def reason_kind(reason: str) -> str:
    """The stable part of a reason ("too short: 3 words < 5" -> "too short") for tallies."""
    for sep in (":", " of ", " ("):
        reason = reason.split(sep, 1)[0]
    return reason.strip()


@dataclass
class DatasetReport:
    name: str
    kind: str
    rows_in: int = 0
    rows_out: int = 0
    steps: dict[str, StepStats] = field(default_factory=dict)
    final: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rejected": self.rows_in - self.rows_out,
            "steps": {name: s.as_dict() for name, s in self.steps.items()},
            "summary": self.final,
        }


@dataclass
class CleanReport:
    """What the clean stage did: per dataset and step, plus totals and throughput."""

    datasets: list[DatasetReport]
    seconds: float
    # On Ray: the cluster's CPUs and what crossed to it and back (differs between runs, like
    # the seconds; not in metrics/clean.json).
    cluster: dict[str, Any] | None = None

    @property
    def docs_in(self) -> int:
        return sum(d.rows_in for d in self.datasets if d.kind != "tabular")

    @property
    def docs_kept(self) -> int:
        return sum(d.rows_out for d in self.datasets if d.kind != "tabular")

    def metrics(self) -> dict[str, Any]:
        specs = registry()
        pii: Counter[str] = Counter()
        dedup: dict[str, Counter[str]] = {}
        for d in self.datasets:
            for name, stats in d.steps.items():
                if name in specs and specs[name].counts_in == "pii":
                    pii.update(stats.counts)
            for name, final in d.final.items():
                if specs[name].final_in == "dedup":
                    dedup.setdefault(name, Counter()).update(final)
        return {
            "datasets": {d.name: d.as_dict() for d in self.datasets},
            "totals": {
                "rows_in": sum(d.rows_in for d in self.datasets),
                "rows_out": sum(d.rows_out for d in self.datasets),
                "rejected": sum(d.rows_in - d.rows_out for d in self.datasets),
            },
            "pii": dict(sorted(pii.items())),
            "dedup": {k: dict(sorted(v.items())) for k, v in sorted(dedup.items())},
            # The one field that differs between identical runs.
            "throughput": {
                "seconds": round(self.seconds, 3),
                "docs_per_s": round(self.docs_in / self.seconds, 1) if self.seconds else None,
            },
        }


def build_steps(params: Params, ctx: Context) -> list[Step]:
    """The dataset's chain, in params order, without the steps that do not apply to its kind."""
    steps = []
    specs = registry()
    for name in params.clean.steps:
        step = specs[name].build(params.clean.step_params(name), ctx)
        if ctx.kind in step.kinds:
            steps.append(step)
    return steps


def _ledger_batch(
    batch: pa.RecordBatch, rows: list[int], step: str, reasons: list[str]
) -> pa.RecordBatch:
    picked = batch.take(pa.array(rows, pa.int64()))
    return pa.RecordBatch.from_arrays(
        [
            picked.column("record_id"),
            picked.column("dataset"),
            picked.column("source"),
            picked.column("id"),
            pa.array([step] * len(rows), pa.string()),
            pa.array(reasons, pa.string()),
            picked.column("cluster"),
            picked.column("original"),
        ],
        schema=LEDGER_SCHEMA,
    )


def quarantine_batch(dataset: str, rows: list[Quarantined], step: str = "read") -> pa.RecordBatch:
    """Rows the reader could not turn into records, as ledger rows of ``step``."""
    n = len(rows)
    return pa.RecordBatch.from_pydict(
        {
            "record_id": [None] * n,
            "dataset": [dataset] * n,
            "source": [q.source for q in rows],
            "id": [q.id for q in rows],
            "step": [step] * n,
            "reason": [q.reason for q in rows],
            "cluster": [None] * n,
            "original": [q.original for q in rows],
        },
        schema=LEDGER_SCHEMA,
    )


def scrub_columns(
    batch: pa.RecordBatch, names: tuple[str, ...], pii: Scrubber | None
) -> pa.RecordBatch:
    """Hide PII in columns the steps do not rewrite (raw rows, unmapped fields)."""
    if pii is None or batch.num_rows == 0:
        return batch
    columns = list(batch.columns)
    for name in names:
        i = batch.schema.get_field_index(name)
        columns[i] = pii.scrub(columns[i])
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _apply(
    name: str, batch: pa.RecordBatch, outcome: Outcome, stats: StepStats
) -> tuple[pa.RecordBatch, pa.RecordBatch | None, list[int] | None]:
    """Tally step ``name``'s outcome on ``batch``: the kept rows, the ledger rows (or None) and
    the kept row numbers (None when every row was kept)."""
    stats.rows_in += batch.num_rows
    stats.counts.update(outcome.counts)
    rejected = [i for i, r in enumerate(outcome.reasons) if r is not None]
    if not rejected:
        stats.rows_out += batch.num_rows
        return outcome.batch, None, None
    reasons = [outcome.reasons[i] or "" for i in rejected]
    stats.reasons.update(reason_kind(r) for r in reasons)
    ledger = _ledger_batch(outcome.batch, rejected, name, reasons)
    kept = [i for i, r in enumerate(outcome.reasons) if r is None]
    out = outcome.batch.take(pa.array(kept, pa.int64()))
    stats.rows_out += out.num_rows
    return out, ledger, kept


def _take(prepared: Any, rows: list[int]) -> Any:
    """Row-aligned prepared arrays (an array or a tuple of them) for the rows kept."""
    if isinstance(prepared, tuple):
        return tuple(_take(p, rows) for p in prepared)
    return prepared[np.asarray(rows, np.int64)]


@dataclass
class HeadResult:
    """What the chain's head did to one batch, as a worker hands it back."""

    batch: pa.RecordBatch
    stats: list[StepStats]
    rejected: list[pa.RecordBatch]
    prepared: dict[str, Any]


@dataclass
class Head:
    """The chain up to its first stateful step, and the per-row part of the stateful steps
    right after it: the work any process may do on a batch on its own.

    ``ahead`` holds ``(name, prepare, params)`` of the leading stateful steps that have a
    ``prepare`` (dedup steps rewrite no text, so their keys can all be taken on the head's
    output and cut down to the rows each earlier one keeps).
    """

    steps: list[Step]
    ahead: list[tuple[str, Callable[[Any, pa.RecordBatch], Any], Any]]
    pii: Scrubber | None

    def __call__(self, batch: pa.RecordBatch) -> HeadResult:
        stats = [StepStats() for _ in self.steps]
        rejected = []
        for step, tally in zip(self.steps, stats, strict=True):
            if batch.num_rows == 0:
                break
            batch, ledger, _ = _apply(step.name, batch, step(batch), tally)
            if ledger is not None:
                rejected.append(scrub_columns(ledger, ("original",), self.pii))
        prepared = {name: prepare(p, batch) for name, prepare, p in self.ahead}
        return HeadResult(batch, stats, rejected, prepared)


def split_chain(steps: list[Step], params: Params) -> tuple[Head, list[Step]]:
    """The chain as the head any process may run and the tail the runner runs in order."""
    specs = registry()
    first = next((i for i, s in enumerate(steps) if specs[s.name].stateful), len(steps))
    ahead = []
    for step in steps[first:]:
        prepare = specs[step.name].prepare
        if not specs[step.name].stateful or prepare is None:
            break
        ahead.append((step.name, prepare, params.clean.step_params(step.name)))
    # Hide PII beside the text too when a step scrubs (raw rows, unmapped fields).
    pii = next((s for s in steps if isinstance(s, Scrubber)), None)
    return Head(steps[:first], ahead, pii), steps[first:]


# A worker's head and its dataset (name, mapping), set once by _start_worker.
_WORKER_HEAD: Head | None = None
_WORKER_DATASET: tuple[str, Dataset] | None = None


def _start_worker(
    clean: dict[str, Any],
    dataset: dict[str, Any],
    ctx: Context,
    names: list[str],
    ahead: list[str],
    pii: str | None,
) -> None:
    """Build the runner's head again in a worker process, from the same params."""
    global _WORKER_HEAD, _WORKER_DATASET
    params = Params.model_validate({"datasets": {ctx.dataset: dataset}, "clean": clean})
    _WORKER_DATASET = (ctx.dataset, params.datasets[ctx.dataset])
    specs = registry()
    built = {n: specs[n].build(params.clean.step_params(n), ctx) for n in names}
    if pii is not None and pii not in built:
        built[pii] = specs[pii].build(params.clean.step_params(pii), ctx)
    _WORKER_HEAD = Head(
        [built[n] for n in names],
        [
            (
                n,
                cast("Callable[[Any, pa.RecordBatch], Any]", specs[n].prepare),
                params.clean.step_params(n),
            )
            for n in ahead
        ],
        cast("Scrubber | None", built[pii]) if pii is not None else None,
    )


def _head_in_worker(work: list[RawLine] | Chunk) -> tuple[Chunk, HeadResult]:
    """A worker's part of one chunk: parse it when it comes as lines, then run the head.
    Returns the chunk with its batch left out (the result carries what the head kept)."""
    assert _WORKER_HEAD is not None and _WORKER_DATASET is not None, "worker not started"
    chunk = parse_lines(*_WORKER_DATASET, work) if isinstance(work, list) else work
    done = _WORKER_HEAD(chunk.batch)
    return Chunk(chunk.batch.slice(0, 0), chunk.quarantined, chunk.batch.num_rows), done


def _clean_stream(
    root: Path,
    name: str,
    ds: Dataset,
    params: Params,
    work: Path,
    clean_dir: Path,
    ledger: ShardWriter,
    cluster: Cluster | None = None,
) -> DatasetReport:
    report = DatasetReport(name, ds.kind)
    ctx = Context(workdir=work / name, dataset=name, kind=ds.kind)
    ctx.workdir.mkdir(parents=True)
    steps = build_steps(params, ctx)
    report.steps = {"read": StepStats(), **{s.name: StepStats() for s in steps}}
    batch_rows, max_bytes = params.clean.batch_rows, params.clean.max_record_bytes
    chunks = read_dataset(root, name, ds, batch_rows=batch_rows, max_record_bytes=max_bytes)
    head, tail = split_chain(steps, params)
    workers = resolve_workers(params.clean.workers, (p for p, _ in dataset_files(root, name, ds)))
    # JSONL lines cross unparsed, so parsing runs in the workers too.
    jobs: Iterable[list[RawLine] | Chunk] = (
        read_lines(root, name, ds, batch_rows=batch_rows, max_record_bytes=max_bytes)
        if jsonl_only(root, name, ds)
        else chunks
    )
    stepped, finals = head.steps, None
    if cluster is not None:
        # The whole chain on the cluster, dedup indexes included.
        finals = Finals()
        setup = Setup(
            params.clean.model_dump(mode="json"),
            ds.model_dump(mode="json"),
            ctx,
            [s.name for s in steps],
        )
        stepped, tail = steps, []
        runs: Iterable[tuple[Chunk, HeadResult]] = (
            (
                Chunk(state.batch.slice(0, 0), state.quarantined, state.read),
                HeadResult(state.batch, state.stats, state.ledger, {}),
            )
            for state in run_on_cluster(cluster, jobs, setup, f"clean {name}", finals)
        )
    elif workers > 1:
        names = [step.name for step in head.steps]
        ahead = [name for name, _, _ in head.ahead]
        pii_step = cast("Step | None", head.pii)
        runs = (
            result
            for _, result in ordered_map(
                _head_in_worker,
                jobs,
                workers=workers,
                initializer=_start_worker,
                initargs=(
                    params.clean.model_dump(mode="json"),
                    ds.model_dump(mode="json"),
                    ctx,
                    names,
                    ahead,
                    pii_step.name if pii_step else None,
                ),
                what=f"clean {name}",
            )
        )
    else:
        runs = ((chunk, head(chunk.batch)) for chunk in chunks)
    schema = schema_for(ds.kind)
    out_schema = schema.remove(schema.get_field_index("original"))
    writer = ShardWriter(clean_dir, name, out_schema, params.clean.shard_rows)
    read = report.steps["read"]
    pii = head.pii
    for chunk, done in runs:
        read.rows_in += chunk.rows + len(chunk.quarantined)
        read.rows_out += chunk.rows
        read.reasons.update(reason_kind(q.reason) for q in chunk.quarantined)
        if chunk.quarantined:
            ledger.write(
                scrub_columns(quarantine_batch(name, chunk.quarantined), ("original",), pii)
            )
        for step, tally in zip(stepped, done.stats, strict=True):
            report.steps[step.name].add(tally)
        for rejected in done.rejected:
            ledger.write(rejected)
        batch, prepared = done.batch, done.prepared
        for step in tail:
            if batch.num_rows == 0:
                break
            if step.name in prepared:
                outcome = cast("Prepared", step).apply(batch, prepared.pop(step.name))
            else:
                outcome = step(batch)
            batch, rejected, kept = _apply(step.name, batch, outcome, report.steps[step.name])
            if rejected is not None:
                ledger.write(scrub_columns(rejected, ("original",), pii))
            if kept is not None:
                prepared = {k: _take(v, kept) for k, v in prepared.items()}
        # Kept rows are traced to the raw file by `source`; the raw row itself stays there.
        kept_rows = batch.drop_columns(["original"])
        writer.write(scrub_columns(kept_rows, ("meta",), pii))
    report.rows_in = read.rows_in
    report.rows_out = writer.close()
    report.final = {s.name: s.close() for s in steps}
    if finals is not None:  # the stateful steps ran as partitions on the cluster
        for i, counts in finals.counts.items():
            report.steps[steps[i].name].counts.update(counts)
        for i, tallies in finals.tallies.items():
            report.final[steps[i].name] = dict(tallies)
    report.final = {k: v for k, v in report.final.items() if v}
    return report


def _clean_table(
    root: Path, name: str, ds: Dataset, params: Params, clean_dir: Path, ledger: ShardWriter
) -> DatasetReport:
    result = tabular.clean_table(root, name, ds, params.clean.tabular)
    report = DatasetReport(name, ds.kind, rows_in=result.rows_in)
    writer = ShardWriter(clean_dir, name, result.table.schema, params.clean.shard_rows)
    for batch in result.table.to_batches():
        writer.write(batch)
    report.rows_out = writer.close()
    if result.rejected:
        ledger.write(quarantine_batch(name, result.rejected, "tabular"))
    stats = StepStats(rows_in=result.rows_in, rows_out=report.rows_out)
    stats.reasons.update(reason_kind(q.reason) for q in result.rejected)
    stats.counts.update(result.counts)
    report.steps = {"tabular": stats}
    return report


def steps_plot(report: CleanReport) -> list[dict[str, Any]]:
    """Rows for ``dvc plots``: how many rows each step kept and rejected, per dataset."""
    rows = []
    for d in report.datasets:
        for name, s in d.steps.items():
            rejected = s.rows_in - s.rows_out
            rows.append({"step": f"{d.name}/{name}", "kept": s.rows_out, "rejected": rejected})
    return rows


def clean(
    root: Path,
    params: Params | None = None,
    *,
    datasets: Iterable[str] | None = None,
    ray_address: str | None = None,
) -> CleanReport:
    """Run the clean stage in workspace ``root``.

    Args:
        root: The workspace (paths in params are relative to it).
        params: Parsed params; read from ``root/params.yaml`` when omitted.
        datasets: Only these datasets (default: all, in name order).
        ray_address: Run on the Ray cluster at this address (``clean.executor: ray``, whatever
            params say; overrides ``clean.ray.address``).

    Returns:
        The report; ``metrics/clean.json`` holds the same figures.
    """
    params = params or load_params(root / "params.yaml")
    names = sorted(datasets) if datasets is not None else sorted(params.datasets)
    data_dir = root / CLEAN_DIR.parent
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / ".clean.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    clean_dir, rejected_dir, work = tmp / "clean", tmp / "rejected", tmp / "work"
    for d in (clean_dir, rejected_dir, work):
        d.mkdir(parents=True)
    started = time.perf_counter()
    reports = []
    cluster = None
    if ray_address is not None or params.clean.executor == "ray":
        cluster = Cluster.connect(
            ray_address or params.clean.ray.address, params.clean.ray.memory_mb
        )
    try:
        for name in names:
            ds = params.datasets[name]
            ledger = ShardWriter(rejected_dir, name, LEDGER_SCHEMA, params.clean.shard_rows)
            if ds.kind == "tabular":
                reports.append(_clean_table(root, name, ds, params, clean_dir, ledger))
            else:
                reports.append(
                    _clean_stream(root, name, ds, params, work, clean_dir, ledger, cluster)
                )
            ledger.close()
        report = CleanReport(reports, time.perf_counter() - started)
        if cluster is not None:
            report.cluster = {
                "address": cluster.address,
                "cpus": cluster.cpus,
                **dataclasses.asdict(cluster.transfer),
            }
        replace_dir(clean_dir, root / CLEAN_DIR)
        replace_dir(rejected_dir, root / REJECTED_DIR)
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    (root / METRICS.parent).mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        root / METRICS, json.dumps(report.metrics(), indent=2, ensure_ascii=False) + "\n"
    )
    atomic_write_text(root / STEPS_PLOT, json.dumps(steps_plot(report), indent=2) + "\n")
    return report
