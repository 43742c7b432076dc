"""``clean.workers``: any number of worker processes gives the same kept rows in the same shards,
the same ledger and the same counts as one; a worker that dies fails the run and keeps nothing."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from offline.data.clean import clean
from offline.data.executor import AUTO_BYTES_PER_WORKER, cores, resolve_workers
from offline.data.params import default_params, dump_params, load_params
from offline.data.sample.files import generate

# The default chain, and one where per-batch steps follow a dedup index (so they run in the
# runner, after it) and PII is masked after the first dedup.
CHAINS = {
    "default": None,
    "mixed": ["normalize", "exact_dedup", "length", "pii", "markup", "near_dedup", "quality"],
}


def _outputs(ws: Path) -> dict[str, Any]:
    out: dict[str, Any] = {
        p.relative_to(ws).as_posix(): p.read_bytes()
        for d in ("data/clean", "data/rejected")
        for p in sorted((ws / d).iterdir())
    }
    metrics = json.loads((ws / "metrics/clean.json").read_text())
    metrics.pop("throughput")  # the one figure that differs between identical runs
    out["metrics"] = metrics
    out["steps"] = (ws / "metrics/clean_steps.json").read_text()
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("workers")
    generate(ws / "data/raw", rows=1200, seed=5)
    data = dump_params(default_params())
    # A text dataset that is not JSONL: its chunks are parsed by the runner, not the workers.
    rows = []
    for line in (ws / "data/raw/tickets.jsonl").read_bytes().splitlines()[:300]:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # the sample's planted broken lines
    with (ws / "data/raw/notes.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        for r in rows:
            if isinstance(r, dict) and isinstance(r.get("text"), str) and len(r["text"]) < 4000:
                writer.writerow([r["id"], r["text"]])
    data["datasets"]["notes"] = {
        "path": "data/raw/notes.csv",
        "kind": "text",
        "columns": {"id": "id", "text": "text"},
    }
    data["clean"]["batch_rows"] = 97  # many chunks in flight, none aligned with anything
    data["clean"]["shard_rows"] = 500
    (ws / "params.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    return ws


@pytest.mark.slow
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_every_worker_count_gives_the_same_outputs(workspace: Path, chain: str) -> None:
    results = {}
    for workers in (1, 2, 3):
        params = load_params(workspace / "params.yaml")
        if CHAINS[chain] is not None:
            params.clean.steps = CHAINS[chain]
        params.clean.workers = workers
        report = clean(workspace, params)
        results[workers] = _outputs(workspace)
        assert report.docs_in > 1500
    assert results[2] == results[1]
    assert results[3] == results[1]
    metrics = results[1]["metrics"]
    assert metrics["dedup"]["exact_dedup"] and metrics["dedup"]["near_dedup"]
    assert metrics["pii"], "the sample's PII is found with workers too"
    assert len([k for k in results[1] if k.startswith("data/clean/tickets")]) >= 2


@pytest.mark.slow
def test_ray_gives_the_same_outputs_with_the_dedup_indexes_partitioned(workspace: Path) -> None:
    """``clean.executor: ray`` on a Ray started for the run (this host's cores): the dedup
    indexes split into partitions by key and by component, and every chain, the one with
    per-batch steps between and after them included, gives one worker's outputs."""
    for chain in sorted(CHAINS):
        params = load_params(workspace / "params.yaml")
        if CHAINS[chain] is not None:
            params.clean.steps = CHAINS[chain]
        params.clean.workers = 1
        clean(workspace, params)
        expected = _outputs(workspace)
        params.clean.executor = "ray"
        params.clean.ray.memory_mb = 128
        report = clean(workspace, params)
        assert _outputs(workspace) == expected, chain
        assert report.cluster is not None and report.cluster["shuffled"] > 0


def test_auto_takes_one_worker_per_8_mib_up_to_the_cores(tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 1000)
    with big.open("wb") as fh:
        fh.truncate(AUTO_BYTES_PER_WORKER * 64)  # sparse: no disk used
    assert resolve_workers("auto", [small]) == 1
    assert resolve_workers("auto", [big]) == min(cores(), 64)
    assert resolve_workers(3, [small]) == 3


def test_a_bad_workers_value_is_named() -> None:
    from offline.data.params import parse_params
    from offline.errors import ConfigError

    for bad in (0, "all", -2):
        with pytest.raises(ConfigError, match=r"clean\.workers"):
            parse_params({"datasets": {}, "clean": {"workers": bad}})


DIES = """
from __future__ import annotations

import os

from offline.config import Strict
from offline.data.steps.base import Outcome, StepSpec


class DieParams(Strict):
    pass


class _Die:
    name = "die"
    kinds = ("text", "conversation")

    def __call__(self, batch):
        if os.getpid() != int(os.environ["RUNNER_PID"]) and batch.num_rows:
            os._exit(9)  # as the out-of-memory killer would end it
        return Outcome.keep_all(batch)

    def close(self):
        return {}


STEPS = (StepSpec("die", DieParams, lambda params, ctx: _Die()),)
"""


@pytest.mark.slow
def test_a_worker_that_dies_fails_the_run_and_keeps_the_previous_outputs(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    generate(ws / "data/raw", rows=200, seed=1)
    data = dump_params(default_params())
    del data["datasets"]["sensors"]
    (ws / "params.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    clean(ws)
    before = _outputs(ws)
    extra = tmp_path / "steps"
    extra.mkdir()
    (extra / "die.py").write_text(DIES)
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            from pathlib import Path
            import offline.data.steps as package
            package.__path__.append({str(extra)!r})  # also in each spawned worker

            if __name__ == "__main__":
                os.environ["RUNNER_PID"] = str(os.getpid())
                from offline.data.clean import clean
                from offline.data.params import load_params
                from offline.errors import OfflineError
                params = load_params(Path({str(ws)!r}) / "params.yaml")
                params.clean.steps = ["normalize", "die", "exact_dedup"]
                params.clean.workers = 2
                try:
                    clean(Path({str(ws)!r}), params)
                except OfflineError as exc:
                    print(exc, file=sys.stderr)
                    print(exc.fix, file=sys.stderr)
                    sys.exit(exc.exit_code)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode != 0
    assert "clean conversations: a worker process died" in proc.stderr or (
        "clean tickets: a worker process died" in proc.stderr
    ), proc.stderr
    assert "clean.workers" in proc.stderr
    assert _outputs(ws) == before
    assert not (ws / "data/.clean.tmp").exists()
