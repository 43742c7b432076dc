"""``offline init`` + ``offline data sample`` + a real ``dvc repro`` / ``dvc push`` (data stages).

The pipeline runs inside a network namespace with only loopback where the test may create one
(root, as in CI), so a stage that tried to reach the network would fail here, not on a user's host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from offline.data.workspace import init
from offline.errors import ConfigError

BIN = Path(sys.executable).parent
URL = re.compile(r"\b(?:https?|wss?|ftp)://", re.IGNORECASE)


def isolated() -> list[str]:
    """A prefix that runs a command with no network but loopback (as on an air-gapped host),
    when this machine allows it."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"]).returncode == 0:
        return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "isolated"]
    return []


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("ws")
    ws = base / "ws"
    run([str(BIN / "offline"), "init", str(ws), "--remote", str(base / "nas")], base)
    run([str(BIN / "offline"), "data", "sample", "--out", "data/raw", "--rows", "600"], ws)
    return ws


@pytest.mark.slow
def test_init_writes_an_offline_dvc_workspace(workspace: Path) -> None:
    config = (workspace / ".dvc/config").read_text()
    assert "analytics = false" in config and "check_update = false" in config
    assert "html_template = plots/plots.html" in config
    assert str(workspace.parent / "nas") in config
    local = (workspace / ".dvc/config.local").read_text()
    assert f"site_cache_dir = {workspace.resolve()}/.dvc/site-cache" in local
    params = (workspace / "params.yaml").read_text()
    for key in ("near_dedup:", "threshold:", "pii:", "tabular:", "window:", "split:"):
        assert key in params
    assert (workspace / ".git").is_dir() and (workspace / ".gitignore").is_file()
    # the site key that signs the evidence dossier and the logs' checkpoints: private, not in git
    key = workspace / ".offline/site-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "/.offline/" in (workspace / ".gitignore").read_text()
    assert "intended_use:" in (workspace / "model-card.yaml").read_text()


def test_init_refuses_a_directory_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds files"):
        init(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.integration
def test_dvc_repro_and_push_with_no_network(workspace: Path) -> None:
    """The data stages, as a user runs them on an isolated host. The whole pipeline (train,
    export, evaluate, plots) runs once per suite, in tests/test_e2e.py, on the demo's
    workspace."""
    raw_before = digests(workspace / "data/raw")
    dvc = [sys.executable, "-m", "dvc"]
    out = run([*isolated(), *dvc, "repro", "split"], workspace).stdout
    ran = re.findall(r"Running stage '(\w+)'", out)
    assert ran == ["validate", "clean", "label", "split"]
    assert "no project pushed yet" in out
    assert digests(workspace / "data/raw") == raw_before
    metrics = json.loads((workspace / "metrics/clean.json").read_text())
    tickets = metrics["datasets"]["tickets"]
    assert tickets["rows_out"] > 0 and tickets["rejected"] > 0
    assert set(metrics["pii"]) >= {"email", "phone", "cn_id", "bank_card", "ipv4", "ipv6"}
    for side in ("train", "validation", "test"):
        assert pq.read_metadata(workspace / f"data/split/tickets/{side}.parquet").num_rows > 0

    pushed = run([*isolated(), *dvc, "push"], workspace).stdout
    assert "pushed" in pushed
    assert any((workspace.parent / "nas").rglob("*"))

    # A second repro with nothing changed re-pulls the labels (annotations live on the server)
    # and runs nothing else.
    again = run([*isolated(), *dvc, "repro", "split"], workspace).stdout
    assert re.findall(r"Running stage '(\w+)'", again) == ["label"]
