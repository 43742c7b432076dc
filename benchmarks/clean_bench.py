"""Benchmark ``offline data clean`` against datatrove, one core each, and print the ratio.

Goal: the default cleaning chain reaches at least 10x datatrove's docs/s per core, with bounded
memory; ``clean.workers: 2`` cleans at least 1.8x the docs/s of one worker on two cores,
writing the same outputs (shown by a digest of the shards and the ledger); and, as root,
``clean.executor: ray`` on a two-node cluster (two network namespaces, one CPU each, on the same
two cores) cleans at least 1.5x the docs/s of one local worker, writing the same outputs, with
the bytes per document that cross to the cluster and that the dedup shuffles move. Both tools
clean the same generated ticket corpus (``offline.data.sample``), each in child processes pinned
to one core (the workers' runs: to two), with the network cut off (``unshare -n``) where the
bench may do that (root); seconds and peak RSS are the children's, start-up and imports included
(the peak RSS of a run with workers or on Ray is the runner's own, not its workers').

datatrove's closest pipeline: JsonlReader -> FTFYFormatter -> GopherRepetitionFilter ->
GopherQualityFilter -> C4QualityFilter -> PIIFormatter -> JsonlWriter, then its four MinHash
stages (signatures, buckets, clusters, filter) in sequence, one worker. Every setting is its
default but three meant for web pages (at least 50 words, 5 sentences, every line ending in
punctuation): on short tickets they reject nearly everything, leaving its later stages idle and
flattering its docs/s. It lives in ``.venv-bench`` (``bash scripts/install-bench-venv.sh``), away
from the toolkit's environment. It cleans the whole corpus too by default: some 6 minutes for 200k
tickets on one core. ``--datatrove-rows N`` gives it only the first N tickets for a quicker run;
ours then also cleans that prefix, for a same-size ratio. That second, smaller run of ours (the
prefix, or else a tenth of the corpus) shows whether our peak RSS follows the corpus size.

Run: ``.venv/bin/python benchmarks/clean_bench.py [--rows 200000] [--datatrove-rows N] [--json]``.
It reports, it does not assert: exit 0 whatever the verdict, non-zero only when our side crashes.
This file is also the program each child runs (``_child``), so its top level
imports the standard library only: datatrove's interpreter has no ``offline``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SPEED_GOAL = 10.0  # ours / datatrove, docs/s per core, at least
WORKERS_GOAL = 1.8  # clean.workers 2 / 1 on two cores, docs/s, at least
RAY_GOAL = 1.5  # clean.executor ray on two one-CPU nodes / local with 1 worker, docs/s
# Our peak RSS may grow at most this much from the small run to the full one (10x the documents
# by default): memory that followed the corpus would grow nearer 10x.
MEMORY_GROWTH_GOAL = 1.5
DEFAULT_ROWS = 200_000
DEFAULT_DATATROVE_ROWS = 0  # the whole corpus
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
INSTALL_HINT = "bash scripts/install-bench-venv.sh"
CHILD = "_child"
MIB = 1 << 20
# datatrove's Gopher minimum is 50 words: most web pages hold that, many tickets do not.
TICKET_MIN_WORDS = 5


def progress(message: str) -> None:
    print(f"clean bench: {message}", file=sys.stderr, flush=True)


# --- measuring a pinned child ---------------------------------------------------------------


@dataclass
class Run:
    """What one child process cost."""

    seconds: float
    peak_rss_mib: float
    exit_code: int
    log: Path

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def can_cut_network() -> bool:
    """Whether children can run in a namespace without a network (root, or user namespaces)."""
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def run_pinned(
    command: list[str],
    core: int | set[int],
    log: Path,
    cut_network: bool,
    netns: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Run:
    """Run ``command`` on one core (or a set of them); its wall seconds and its peak RSS.
    ``netns``: in that network namespace (``ip netns exec`` execs: the pid stays the command's).
    """
    cores = {core} if isinstance(core, int) else core
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    elif cut_network:
        command = ["unshare", "-n", *command]  # unshare execs: the pid stays the command's
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(extra_env or {})
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=lambda: os.sched_setaffinity(0, cores),
        )
        # wait4 gives this child's own peak; RUSAGE_CHILDREN would be the peak of every child.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(seconds, usage.ru_maxrss / 1024, proc.returncode, log)


def child_command(python: Path | str, kind: str, *args: Path) -> list[str]:
    return [str(python), str(Path(__file__).resolve()), CHILD, kind, *map(str, args)]


# --- the corpus -----------------------------------------------------------------------------


def generate_corpus(raw: Path, rows: int, seed: int) -> Path:
    """The sample generator's tickets (duplicates, PII, malformed lines, one >1 MB line)."""
    from offline.data.sample.files import generate

    generate(raw, rows=rows, seed=seed)
    return raw / "tickets.jsonl"


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def copy_lines(src: Path, dst: Path, lines: int) -> None:
    with src.open("rb") as fin, dst.open("wb") as fout:
        for _, line in zip(range(lines), fin, strict=False):
            fout.write(line)


def datatrove_lines(src: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, datatrove's JSON line)`` for each ticket datatrove can read.

    Malformed lines and rows without a string text are left out: datatrove's reader stops the
    whole task at the first line it cannot parse.
    """
    with src.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("text"), str):
                doc = {"id": str(row.get("id", number)), "text": row["text"]}
                yield number, json.dumps(doc).encode() + b"\n"


def write_datatrove_input(src: Path, dst: Path, limit: int) -> tuple[int, int]:
    """Write the first ``limit`` readable tickets; returns (documents, corpus lines they span)."""
    dst.parent.mkdir(parents=True)
    docs = lines = 0
    with dst.open("wb") as out:
        for number, line in datatrove_lines(src):
            if docs == limit:
                break
            out.write(line)
            docs, lines = docs + 1, number
    return docs, lines


# --- figures --------------------------------------------------------------------------------


@dataclass
class Side:
    """One contender's figures on one corpus; ``parts`` are its separately measured runs."""

    label: str
    docs: int
    kept: int
    seconds: float
    peak_rss_mib: float
    stages: dict[str, float] = field(default_factory=dict)  # seconds, as the child timed them
    # Peak anonymous memory (RssAnon): RSS also counts the pages of the dedup index's spilled,
    # memory-mapped files, which the kernel can drop at any time; this is what cannot.
    peak_anon_mib: float = 0.0
    parts: list[Side] = field(default_factory=list)
    # On Ray: the cluster's CPUs, batches, and bytes sent to it and taken back
    cluster: dict[str, Any] | None = None

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        figures = asdict(self)
        figures.update(seconds=round(self.seconds, 3), peak_rss_mib=round(self.peak_rss_mib, 1))
        figures["parts"] = [p.as_dict() for p in self.parts]
        return {**figures, "docs_per_s": round(self.docs_per_s, 1)}


# --- our side -------------------------------------------------------------------------------


def make_workspace(
    root: Path,
    corpus: Path,
    lines: int | None,
    memory_mb: int,
    workers: int | str = "auto",
    ray_address: str | None = None,
) -> None:
    """A workspace whose params.yaml cleans ``tickets`` (all of it, or its first ``lines``)
    with the dedup indexes held to ``memory_mb`` each before they spill to disk."""
    import yaml

    from offline.data.params import Params, dump_params, sample_datasets

    raw = root / "data" / "raw" / "tickets.jsonl"
    raw.parent.mkdir(parents=True)
    if lines is not None:
        copy_lines(corpus, raw, lines)
    else:
        try:
            os.link(corpus, raw)  # 200k tickets weigh ~100 MB
        except OSError:
            shutil.copyfile(corpus, raw)
    params = Params(datasets={"tickets": sample_datasets()["tickets"]})
    params.clean.exact_dedup.memory_mb = memory_mb
    params.clean.near_dedup.memory_mb = memory_mb
    params.clean.workers = workers
    if ray_address is not None:
        params.clean.executor = "ray"
        params.clean.ray.address = ray_address
    (root / "params.yaml").write_text(yaml.safe_dump(dump_params(params), sort_keys=False))


def run_ours(
    corpus: Path,
    root: Path,
    lines: int | None,
    core: int | set[int],
    cut_network: bool,
    memory_mb: int,
    workers: int | str = "auto",
    label: str = "",
    cluster: Any = None,
) -> Side:
    """The default chain on the corpus (or its first ``lines``); SystemExit if it crashes.
    ``cluster`` (a :class:`tests.fixtures.raycluster.RayCluster`): on it, the runner in its
    head's namespace."""
    root.mkdir(parents=True)
    address = cluster.address if cluster is not None else None
    make_workspace(root, corpus, lines, memory_mb, workers, address)
    label = label or f"ours ({'all' if lines is None else f'first {lines:,}'} lines)"
    progress(f"{label} ...")
    result = root / "bench-result.json"
    run = run_pinned(
        child_command(sys.executable, "ours", root, result),
        core,
        root / "bench.log",
        cut_network,
        netns=cluster.head.name if cluster is not None else None,
        extra_env=cluster.env if cluster is not None else None,
    )
    if run.exit_code != 0 or not result.is_file():
        raise SystemExit(f"our cleaner failed (exit {run.exit_code}):\n{run.tail()}")
    rep = json.loads(result.read_text())
    stages = {"clean()": round(rep["seconds"], 2)}
    return Side(
        label,
        rep["docs_in"],
        rep["docs_kept"],
        run.seconds,
        run.peak_rss_mib,
        stages,
        peak_anon_mib=rep["peak_anon_kib"] / 1024,
        cluster=rep.get("cluster"),
    )


def anon_kib() -> int:
    """This process's RssAnon (KiB) from /proc; 0 where there is no /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child_ours(root: str, result: str) -> None:
    import threading

    from offline.data.clean import clean

    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], anon_kib())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    report = clean(Path(root))
    done.set()
    watcher.join()
    figures: dict[str, Any] = {k: getattr(report, k) for k in ("docs_in", "docs_kept", "seconds")}
    figures["peak_anon_kib"] = peak[0]
    figures["cluster"] = report.cluster
    Path(result).write_text(json.dumps(figures))


# --- datatrove's side -----------------------------------------------------------------------


class DatatroveFailed(Exception):
    """datatrove's side crashed; the bench still reports ours."""


def datatrove_version(python: Path) -> str | None:
    """datatrove's version in ``python``'s environment; None when it has none."""
    if not python.is_file():
        return None
    probe = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('datatrove'))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def run_datatrove(
    python: Path, work: Path, docs: int, label: str, core: int, cut_network: bool
) -> Side:
    """Its filters, then its MinHash stages, each part in its own pinned child."""
    plan = {
        "filters": (work / "input", work / "filtered", work / "logs" / "filters"),
        "minhash": (work / "filtered", work / "minhash", work / "logs" / "minhash"),
    }
    parts: list[Side] = []
    docs_in = docs
    for name, dirs in plan.items():
        progress(f"datatrove {name} on {docs_in:,} docs ...")
        result = work / f"{name}.json"
        command = child_command(python, f"datatrove-{name}", *dirs, result)
        run = run_pinned(command, core, work / f"{name}.log", cut_network)
        if run.exit_code != 0 or not result.is_file():
            raise DatatroveFailed(f"its {name} exited {run.exit_code}:\n{run.tail()}")
        rep = json.loads(result.read_text())
        stages = {k: round(v, 2) for k, v in rep["stages"].items()}
        parts.append(Side(name, docs_in, rep["kept"], run.seconds, run.peak_rss_mib, stages))
        docs_in = rep["kept"]
    seconds = sum(p.seconds for p in parts)
    peak = max(p.peak_rss_mib for p in parts)
    return Side(label, docs, docs_in, seconds, peak, parts=parts)


def jsonl_rows(folder: Path) -> int:
    return sum(count_lines(p) for p in folder.glob("*.jsonl"))


def timed_pipeline(pipeline: list[Any], tasks: int, logs: Path) -> float:
    from datatrove.executor import LocalPipelineExecutor

    started = time.perf_counter()
    LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(logs)).run()
    return time.perf_counter() - started


def step_seconds(logs: Path) -> dict[str, float]:
    """Seconds per step, from the stats datatrove writes into its logging folder."""
    steps = json.loads((logs / "stats.json").read_text())
    return {plain(s["name"]): s["time_stats"]["total"] for s in steps if "time_stats" in s}


def plain(name: str) -> str:
    """``"🔻 - FILTER: 👯 Gopher Repetition"`` -> ``"FILTER: Gopher Repetition"``."""
    return " ".join(name.encode("ascii", "ignore").decode().split()).lstrip("- ")


def child_datatrove_filters(src: str, out: str, logs: str, result: str) -> None:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.formatters import FTFYFormatter, PIIFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    pipeline = [
        JsonlReader(src),
        FTFYFormatter(),
        GopherRepetitionFilter(),
        GopherQualityFilter(min_doc_words=TICKET_MIN_WORDS),
        # One sentence is enough, but every kept line is still split into sentences.
        C4QualityFilter(filter_no_terminal_punct=False, min_num_sentences=1),
        PIIFormatter(),
        JsonlWriter(out, compression=None),
    ]
    seconds = timed_pipeline(pipeline, 1, Path(logs))
    stages = {"all": seconds, **step_seconds(Path(logs))}
    Path(result).write_text(json.dumps({"kept": jsonl_rows(Path(out)), "stages": stages}))


def minhash_stages(src: str, work: Path) -> dict[str, tuple[list[Any], int]]:
    """Each MinHash stage as ``(pipeline, tasks)``, in the order they must run."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    config = MinhashConfig()
    sigs, dups, remove, out = (str(work / d) for d in ("sigs", "buckets", "remove", "out"))
    keep = [JsonlReader(src), MinhashDedupFilter(remove), JsonlWriter(out, compression=None)]
    return {
        "signatures": ([JsonlReader(src), MinhashDedupSignature(sigs, config=config)], 1),
        # One task per bucket; with one worker they run one after another.
        "buckets": ([MinhashDedupBuckets(sigs, dups, config=config)], config.num_buckets),
        "clusters": ([MinhashDedupCluster(dups, remove, config=config)], 1),
        "filter": (keep, 1),
    }


def child_datatrove_minhash(src: str, work: str, logs: str, result: str) -> None:
    stages: dict[str, float] = {}
    if jsonl_rows(Path(src)):  # when its filters kept nothing, its reader would raise
        for name, (pipeline, tasks) in minhash_stages(src, Path(work)).items():
            stages[name] = timed_pipeline(pipeline, tasks, Path(logs) / name)
    kept = jsonl_rows(Path(work) / "out") if stages else 0
    Path(result).write_text(json.dumps({"kept": kept, "stages": stages}))


CHILDREN: dict[str, Callable[..., None]] = {
    "ours": child_ours,
    "datatrove-filters": child_datatrove_filters,
    "datatrove-minhash": child_datatrove_minhash,
}


# --- the report -----------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def outputs_digest(root: Path) -> str:
    """One sha256 over the kept shards and the ledger, to show two runs wrote the same."""
    import hashlib

    digest = hashlib.sha256()
    for folder in ("data/clean", "data/rejected"):
        for path in sorted((root / folder).iterdir()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass
class Scaling:
    """``clean.workers: 2`` against 1, both on the same two cores, on the whole corpus."""

    cores: list[int]
    one: Side
    two: Side
    same_outputs: bool

    def ratio(self) -> float:
        return self.two.docs_per_s / self.one.docs_per_s if self.one.docs_per_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cores": self.cores,
            "one_worker": self.one.as_dict(),
            "two_workers": self.two.as_dict(),
            "ratio": round(self.ratio(), 2),
            "docs_per_s_per_worker": round(self.two.docs_per_s / 2, 1),
            "same_outputs": self.same_outputs,
            "goal": WORKERS_GOAL,
            "verdict": verdict(self.ratio() >= WORKERS_GOAL and self.same_outputs),
        }


def run_scaling(
    corpus: Path, work: Path, cores: set[int], cut_network: bool, memory_mb: int
) -> Scaling:
    sides = {}
    for workers in (1, 2):
        label = f"ours, {workers} worker{'s' * (workers > 1)} on 2 cores"
        sides[workers] = run_ours(
            corpus, work / f"w{workers}", None, cores, cut_network, memory_mb, workers, label
        )
    same = outputs_digest(work / "w1") == outputs_digest(work / "w2")
    return Scaling(sorted(cores), sides[1], sides[2], same)


@dataclass
class RayScaling:
    """``clean.executor: ray`` on a two-node cluster (one CPU each, in two network namespaces
    joined by a veth pair) against ``local`` with one worker, on the same two cores."""

    cores: list[int]
    one: Side
    ray: Side
    same_outputs: bool

    def ratio(self) -> float:
        return self.ray.docs_per_s / self.one.docs_per_s if self.one.docs_per_s else 0.0

    def wire_bytes_per_doc(self) -> float:
        moved = self.ray.cluster or {}
        return (moved.get("sent", 0) + moved.get("received", 0)) / max(self.ray.docs, 1)

    def shuffle_bytes_per_doc(self) -> float:
        """Bytes the dedup partitions took in (hashes, band keys, candidate rows) per doc."""
        return (self.ray.cluster or {}).get("shuffled", 0) / max(self.ray.docs, 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "cores": self.cores,
            "local_one_worker": self.one.as_dict(),
            "ray_two_nodes": self.ray.as_dict(),
            "ratio": round(self.ratio(), 2),
            "docs_per_s_per_worker": round(self.ray.docs_per_s / 2, 1),
            "wire_bytes_per_doc": round(self.wire_bytes_per_doc()),
            "shuffle_bytes_per_doc": round(self.shuffle_bytes_per_doc()),
            "same_outputs": self.same_outputs,
            "goal": RAY_GOAL,
            "verdict": verdict(self.ratio() >= RAY_GOAL and self.same_outputs),
        }


def can_make_cluster() -> str | None:
    """Why the two-namespace Ray cluster cannot be made here (None: it can)."""
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("nft")):
        return "skipped: the two-node cluster needs root, ip and nft (network namespaces)"
    if not (Path(sys.executable).parent / "ray").is_file():
        return "skipped: ray is not installed (the toolkit's cluster extra)"
    return None


def run_ray(
    corpus: Path, work: Path, cores: set[int], memory_mb: int, one: Side, one_root: Path
) -> RayScaling:
    sys.path.insert(0, str(REPO))
    from tests.fixtures.raycluster import ray_cluster

    nodes = work / "nodes"
    nodes.mkdir(parents=True)
    with ray_cluster(nodes) as cluster:
        label = "ours, Ray: 2 nodes x 1 CPU"
        side = run_ours(
            corpus, work / "ray", None, cores, False, memory_mb, 1, label, cluster=cluster
        )
        leaked = cluster.egress()
    if any(leaked.values()):
        raise SystemExit(f"the Ray nodes tried to reach out: {leaked}")
    same = outputs_digest(work / "ray") == outputs_digest(one_root)
    return RayScaling(sorted(cores), one, side, same)


@dataclass
class Report:
    cpus: int
    core: int
    network: str
    corpus: dict[str, Any]
    ours: Side
    ours_small: Side
    datatrove: Side | None = None
    datatrove_version: str | None = None
    datatrove_error: str | None = None
    datatrove_absent: str | None = None  # why it did not run
    scaling: Scaling | None = None
    scaling_absent: str | None = None
    ray: RayScaling | None = None
    ray_absent: str | None = None

    def same_size(self) -> Side:
        """Our run on the documents datatrove saw."""
        if self.datatrove and self.corpus["datatrove_lines"] < self.corpus["lines"]:
            return self.ours_small
        return self.ours

    def ratios(self) -> dict[str, float]:
        """Our docs/s over datatrove's: on the same documents, and ours on the whole corpus."""
        if not self.datatrove or not self.datatrove.docs_per_s:
            return {}
        theirs = self.datatrove.docs_per_s
        ratios = {"same_docs": self.same_size().docs_per_s / theirs}
        if self.same_size() is not self.ours:
            ratios["whole_corpus"] = self.ours.docs_per_s / theirs
        return ratios

    def speed_verdict(self) -> str:
        ratios = self.ratios()
        return verdict(min(ratios.values()) >= SPEED_GOAL) if ratios else "n/a"

    def memory(self) -> dict[str, Any]:
        """How our peak anonymous memory (and RSS) grew from the small run to the full one."""
        small, full = self.ours_small, self.ours
        growth = full.peak_anon_mib / max(small.peak_anon_mib, 1e-9)
        per_doc = (full.peak_anon_mib - small.peak_anon_mib) * MIB / max(full.docs - small.docs, 1)
        return {
            "docs_growth": round(full.docs / max(small.docs, 1), 2),
            "anon_growth": round(growth, 2),
            "rss_growth": round(full.peak_rss_mib / small.peak_rss_mib, 2),
            "bytes_per_extra_doc": round(per_doc),
            "goal": MEMORY_GROWTH_GOAL,
            "verdict": verdict(growth <= MEMORY_GROWTH_GOAL),
        }

    def as_dict(self) -> dict[str, Any]:
        sides = {"ours": self.ours, "ours_small": self.ours_small, "datatrove": self.datatrove}
        return {
            "cpus": self.cpus,
            "core": self.core,
            "network": self.network,
            "corpus": self.corpus,
            **{k: v.as_dict() if v else None for k, v in sides.items()},
            "datatrove_version": self.datatrove_version,
            "datatrove_error": self.datatrove_error,
            "datatrove_absent": self.datatrove_absent,
            "ratios": {k: round(v, 2) for k, v in self.ratios().items()},
            "speed_goal": SPEED_GOAL,
            "speed_verdict": self.speed_verdict(),
            "memory": self.memory(),
            "workers": self.scaling.as_dict() if self.scaling else self.scaling_absent,
            "ray": self.ray.as_dict() if self.ray else self.ray_absent,
            "ray_per_core_vs_datatrove": self.ray_vs_datatrove(),
        }

    def ray_vs_datatrove(self) -> float | None:
        """Ray's docs/s per CPU over datatrove's docs/s on its one core."""
        if self.ray is None or self.datatrove is None or not self.datatrove.docs_per_s:
            return None
        return round(self.ray.ray.docs_per_s / 2 / self.datatrove.docs_per_s, 2)


def print_report(rep: Report) -> None:
    print(
        f"clean bench: {rep.cpus} CPUs, every child pinned to core {rep.core}, "
        f"network {rep.network}\ncorpus: {rep.corpus['lines']:,} lines ({rep.corpus['source']})\n"
    )
    header = f"{'docs':>9}{'kept':>9}{'seconds':>10}{'docs/s/core':>13}{'peak RSS MiB':>14}"
    print(f"   {'':<32}{header}")
    for side in (rep.ours, rep.ours_small, rep.datatrove):
        if side is not None:
            print_side(side)
            for part in side.parts:
                print_side(part, indent="  ")
    print()
    print_speed(rep)
    print_memory(rep)
    print_scaling(rep)
    print_ray(rep)


def print_side(side: Side, indent: str = "") -> None:
    print(
        f"   {indent + side.label:<32}{side.docs:>9,}{side.kept:>9,}{side.seconds:>10.1f}"
        f"{side.docs_per_s:>13,.0f}{side.peak_rss_mib:>14,.0f}"
    )


def print_speed(rep: Report) -> None:
    ratios = rep.ratios()
    if rep.datatrove is None:
        why = f"failed: {rep.datatrove_error}" if rep.datatrove_error else rep.datatrove_absent
        print(f"   datatrove {why}")
        return
    same = f"ours/datatrove on the same {rep.datatrove.docs:,} docs"
    print(f"   {same:<50}{ratios['same_docs']:8.1f}x")
    if "whole_corpus" in ratios:
        whole = f"ours on {rep.ours.docs:,} / datatrove on {rep.datatrove.docs:,}"
        print(f"   {whole:<50}{ratios['whole_corpus']:8.1f}x   (different sizes)")
    goal = f"goal ≥ {SPEED_GOAL:.0f}x docs/s per core, every ratio above"
    print(f"   {goal:<50}{rep.speed_verdict():>9}")


def print_memory(rep: Report) -> None:
    mem = rep.memory()
    small, full = rep.ours_small, rep.ours
    rss = f"ours' peak RSS {small.peak_rss_mib:,.0f} -> {full.peak_rss_mib:,.0f} MiB"
    print(f"   {rss:<50}{mem['rss_growth']:8.2f}x   (includes mapped spill files)")
    anon = f"ours' peak anon {small.peak_anon_mib:,.0f} -> {full.peak_anon_mib:,.0f} MiB"
    per_doc = f"x{mem['docs_growth']} docs, {mem['bytes_per_extra_doc']:,} B per doc"
    print(f"   {anon:<50}{mem['anon_growth']:8.2f}x   ({per_doc})")
    goal = f"goal: memory bounded, anon ≤ x{MEMORY_GROWTH_GOAL}"
    print(f"   {goal:<50}{mem['verdict']:>9}")


def print_versus(
    sides: tuple[Side, Side], ratio_label: str, ratio: float, same: bool, per: tuple[str, float]
) -> None:
    """Two runs of ours on the same cores: their rows, the ratio, and docs/s per worker."""
    print()
    for side in sides:
        print_side(side)
    shown = "same outputs" if same else "OUTPUTS DIFFER"
    print(f"   {ratio_label:<50}{ratio:8.2f}x   ({shown})")
    print(f"   {per[0]:<50}{per[1]:8,.0f}")


def print_scaling(rep: Report) -> None:
    if rep.scaling is None:
        print(f"   clean.workers: {rep.scaling_absent}")
        return
    sc = rep.scaling
    per = (f"docs/s per worker with 2 ({sc.two.docs:,} docs)", sc.two.docs_per_s / 2)
    label = f"clean.workers 2 / 1 on cores {sc.cores}, docs/s"
    print_versus((sc.one, sc.two), label, sc.ratio(), sc.same_outputs, per)
    goal = f"goal ≥ {WORKERS_GOAL}x, outputs identical"
    print(f"   {goal:<50}{sc.as_dict()['verdict']:>9}")


def print_ray(rep: Report) -> None:
    if rep.ray is None:
        print(f"   clean.executor ray: {rep.ray_absent}")
        return
    rs = rep.ray
    per = (f"docs/s per Ray worker ({rs.ray.docs:,} docs)", rs.ray.docs_per_s / 2)
    label = "Ray 2 nodes / local 1 worker, same 2 cores, docs/s"
    print_versus((rs.one, rs.ray), label, rs.ratio(), rs.same_outputs, per)
    moved = rs.ray.cluster or {}
    wire = f"bytes to the cluster and back per doc ({moved.get('batches', 0):,} batches)"
    print(f"   {wire:<50}{rs.wire_bytes_per_doc():8,.0f}")
    shuffle = "bytes shuffled to the dedup partitions per doc"
    print(f"   {shuffle:<50}{rs.shuffle_bytes_per_doc():8,.0f}")
    versus = rep.ray_vs_datatrove()
    if versus is not None:
        print(f"   {'Ray per CPU / datatrove per core, docs/s':<50}{versus:8.1f}x")
    goal = f"goal ≥ {RAY_GOAL}x, outputs identical"
    print(f"   {goal:<50}{rs.as_dict()['verdict']:>9}")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="tickets to generate")
    parser.add_argument("--seed", type=int, default=13, help="seed of the generated corpus")
    parser.add_argument("--corpus", type=Path, help="bench this tickets.jsonl instead")
    parser.add_argument(
        "--memory-mb",
        type=int,
        default=32,
        help="memory budget of each dedup index (clean.*_dedup.memory_mb); past it they spill,"
        " so peak RSS should not follow the corpus",
    )
    parser.add_argument(
        "--datatrove-rows",
        type=int,
        default=DEFAULT_DATATROVE_ROWS,
        help="datatrove cleans only this many first tickets (default 0: the whole corpus)",
    )
    parser.add_argument("--datatrove-python", type=Path, default=BENCH_PYTHON)
    parser.add_argument("--no-datatrove", action="store_true", help="run our side only")
    parser.add_argument("--no-ray", action="store_true", help="leave out the Ray cluster")
    parser.add_argument("--core", type=int, default=min(os.sched_getaffinity(0)))
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def corpus_of(args: argparse.Namespace, tmp: Path) -> tuple[Path, str]:
    """The tickets file to bench, and where it came from."""
    if args.corpus:
        return args.corpus.resolve(), str(args.corpus)
    progress(f"generating {args.rows:,} tickets ...")
    source = f"generated, --rows {args.rows} --seed {args.seed}"
    return generate_corpus(tmp / "raw", args.rows, args.seed), source


def add_datatrove(report: Report, args: argparse.Namespace, work: Path, docs: int) -> None:
    """Run datatrove's side into ``report``, or say there why it did not run."""
    version = None if args.no_datatrove else datatrove_version(args.datatrove_python)
    if args.no_datatrove:
        report.datatrove_absent = "skipped (--no-datatrove)"
        return
    if not version:
        where = args.datatrove_python
        report.datatrove_absent = f"not found in {where}; to compare, run `{INSTALL_HINT}`"
        return
    report.datatrove_version = version
    label = f"datatrove {version} ({report.corpus['datatrove_lines']:,} lines)"
    cut_network = report.network.startswith("cut")
    try:
        report.datatrove = run_datatrove(
            args.datatrove_python, work, docs, label, report.core, cut_network
        )
    except DatatroveFailed as exc:
        report.datatrove_error = str(exc)


def bench(args: argparse.Namespace, tmp: Path) -> Report:
    cut_network = can_cut_network()
    corpus, source = corpus_of(args, tmp)
    lines = count_lines(corpus)
    limit = args.datatrove_rows if args.datatrove_rows > 0 else lines
    dt_docs, dt_lines = write_datatrove_input(corpus, tmp / "dt" / "input" / "t.jsonl", limit)
    if dt_docs < limit:  # it got every readable ticket: the same corpus, not a prefix
        dt_lines = lines
    # The small run is datatrove's prefix, or a tenth of the corpus when datatrove has it all.
    small = dt_lines if dt_lines < lines else max(lines // 10, 1)
    report = Report(
        os.cpu_count() or 1,
        args.core,
        "cut (unshare -n)" if cut_network else "up (unshare -n needs root)",
        {"source": source, "lines": lines, "datatrove_lines": dt_lines},
        run_ours(corpus, tmp / "ours", None, args.core, cut_network, args.memory_mb),
        run_ours(corpus, tmp / "ours-small", small, args.core, cut_network, args.memory_mb),
    )
    add_datatrove(report, args, tmp / "dt", dt_docs)
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        report.scaling_absent = "skipped: this process may use one core only"
    else:
        pair = {args.core, next(c for c in usable if c != args.core)}
        report.scaling = run_scaling(corpus, tmp / "scaling", pair, cut_network, args.memory_mb)
        report.ray_absent = "skipped (--no-ray)" if args.no_ray else can_make_cluster()
        if report.ray_absent is None:
            report.ray = run_ray(
                corpus, tmp / "ray", pair, args.memory_mb, report.scaling.one, tmp / "scaling/w1"
            )
    if report.scaling is None:
        report.ray_absent = report.scaling_absent
    return report


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:
        CHILDREN[argv[1]](*argv[2:])
        return
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="clean-bench-") as tmp:
        report = bench(args, Path(tmp))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
