"""``clean.executor: ray`` on a real two-node Ray cluster (a head and a worker, each in its own
network namespace, joined by a veth pair, no route out): the same shards, ledger and counts as
``local`` with one worker, also when a worker dies mid-run, and not one packet out of either node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from offline.data.clean import clean
from offline.data.params import default_params, dump_params, load_params
from offline.data.sample.files import generate
from tests.data.test_workers import _outputs
from tests.fixtures.raycluster import HEAD_IP, WORKER_IP, RayCluster, ray_cluster

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and netfilter need root"),
]

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    with ray_cluster(tmp_path_factory.mktemp("ray")) as c:
        yield c


def _in(ws: Path, *argv: str) -> list[str]:
    return ["sh", "-c", 'cd "$0" && exec "$@"', str(ws), *argv]


def _set_clean(ws: Path, **clean: object) -> None:
    data = yaml.safe_load((ws / "params.yaml").read_text())
    data["clean"].update(clean)
    (ws / "params.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))


def test_dvc_repro_on_the_cluster_gives_the_local_outputs(
    cluster: RayCluster, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    env = {**cluster.env, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    for argv in (
        [str(BIN / "offline"), "init", str(ws)],
        [str(BIN / "offline"), "data", "sample", "--out", str(ws / "data/raw"), "--rows", "600"],
    ):
        subprocess.run(argv, check=True, capture_output=True, env=env)
    _set_clean(ws, workers=1, batch_rows=64)
    dvc = [sys.executable, "-m", "dvc", "repro", "clean"]
    local = subprocess.run(_in(ws, *dvc), capture_output=True, text=True, env=env)
    assert local.returncode == 0, local.stderr
    expected = _outputs(ws)

    _set_clean(ws, executor="ray", ray={"address": cluster.address, "memory_mb": 256})
    before = cluster.egress()
    proc = cluster.head.run(_in(ws, *dvc), env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # clean.executor is a param of the stage: changing it reruns the stage, on the cluster
    assert "Running stage 'clean'" in proc.stdout and "Running stage 'validate'" not in proc.stdout
    assert _outputs(ws) == expected
    assert cluster.egress() == before, cluster.destinations()


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    cluster: RayCluster, tmp_path: Path
) -> None:
    """200,000 generated tickets; a Ray worker running a batch on the worker node is killed."""
    ws = tmp_path / "big"
    generate(ws / "data/raw", rows=200_000, seed=7)
    params = default_params()
    params.datasets = {"tickets": params.datasets["tickets"]}
    params.clean.workers = 1
    (ws / "params.yaml").write_text(yaml.safe_dump(dump_params(params), allow_unicode=True))
    clean(ws, load_params(ws / "params.yaml"))
    expected = _outputs(ws)

    argv = [str(BIN / "offline"), "data", "clean", "--ray-address", cluster.address]
    before = cluster.egress()
    runner = subprocess.Popen(
        ["ip", "netns", "exec", cluster.head.name, *_in(ws, *argv)],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed: list[int] = []
    try:
        # Two workers, one after the other, each while it runs a batch (fewer than Ray's
        # retries of one task).
        deadline = time.monotonic() + 300
        while len(killed) < 2 and runner.poll() is None and time.monotonic() < deadline:
            for pid in cluster.worker_tasks()[:1]:
                os.kill(pid, 9)
                killed.append(pid)
                time.sleep(1)
            time.sleep(0.05)
        out, err = runner.communicate(timeout=600)
    finally:
        runner.kill()
        runner.wait()
    assert len(killed) == 2, "no task ran on the worker node"
    assert runner.returncode == 0, out + err
    assert _outputs(ws) == expected
    assert cluster.egress() == before, cluster.destinations()


def _doctor(cluster: RayCluster, *args: str, **env: str) -> dict[str, dict[str, object]]:
    argv = [str(BIN / "deepseek-doctor"), "--ray-address", cluster.address, "--only", "ray.*"]
    proc = cluster.head.run([*argv, "--json", *args], env={**cluster.env, **env}, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    return {f["id"]: f for f in json.loads(proc.stdout)["checks"]}


def test_doctor_checks_every_node_of_the_cluster(cluster: RayCluster) -> None:
    before = cluster.egress()
    found = _doctor(cluster)
    assert {k: f["status"] for k, f in found.items()} == {
        "ray.join": "pass",
        "ray.alive": "pass",
        "ray.versions": "pass",
        "ray.egress": "pass",
    }, found
    assert "2 node(s) alive, 2 CPUs" in str(found["ray.alive"]["message"])
    # Each node probed the internet itself: each namespace counted the (rejected) attempts.
    after = cluster.egress()
    assert after["head"] > before["head"] and after["worker"] > before["worker"]


def test_doctor_names_a_node_that_reaches_out_and_a_version_off_the_lock(
    cluster: RayCluster, tmp_path: Path
) -> None:
    # The head's own port stands in for "the internet": every node reaches it.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = {
        "target": {"python": "3.11", "platforms": []},
        "envs": [{"name": "toolkit", "packages": [{"name": "ray", "version": "2.0.0"}]}],
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    found = _doctor(cluster, "--bundle", str(bundle), DEEPSEEK_DOCTOR_PROBE_V4=cluster.address)
    egress = found["ray.egress"]
    assert egress["status"] == "fail"
    assert all(ip in str(egress["message"]) for ip in (HEAD_IP, WORKER_IP))
    versions = found["ray.versions"]
    assert versions["status"] == "fail" and "Ray 2.0.0" in str(versions["message"])
