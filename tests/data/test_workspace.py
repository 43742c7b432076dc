"""``offline init`` + ``offline data sample`` + a real ``dvc repro`` / ``dvc push`` / ``dvc plots``.

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
import yaml

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
    # the shipped training config, shortened: this test is about the pipeline around it
    config = yaml.safe_load((ws / "train.yaml").read_text())
    config.update(max_steps=12, warmup_steps=2, eval_every=6, micro_batch_size=4)
    config["checkpoint"].update(full_every=6, light_every=3)
    (ws / "train.yaml").write_text(yaml.safe_dump(config))
    config = yaml.safe_load((ws / "train-classifier.yaml").read_text())
    config.update(max_steps=12, warmup_steps=2, eval_every=6, micro_batch_size=8)
    config["checkpoint"].update(full_every=6, light_every=6)
    (ws / "train-classifier.yaml").write_text(yaml.safe_dump(config))
    return ws


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


def test_init_refuses_a_directory_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already holds files"):
        init(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.integration
def test_dvc_repro_push_and_plots_with_no_network(workspace: Path) -> None:
    raw_before = digests(workspace / "data/raw")
    dvc = [sys.executable, "-m", "dvc"]
    out = run([*isolated(), *dvc, "repro"], workspace).stdout
    ran = re.findall(r"Running stage '(\w+)'", out)
    assert sorted(ran) == sorted(
        [
            "validate", "clean", "label", "split", "init_model", "train", "train_classifier",
            "export", "evaluate",
        ]
    )  # fmt: skip
    assert ran.index("train") > max(ran.index("split"), ran.index("init_model"))
    assert ran.index("export") > max(ran.index("train"), ran.index("train_classifier"))
    assert ran.index("evaluate") > ran.index("export")
    assert "no project pushed yet" in out
    assert digests(workspace / "data/raw") == raw_before
    metrics = json.loads((workspace / "metrics/clean.json").read_text())
    tickets = metrics["datasets"]["tickets"]
    assert tickets["rows_out"] > 0 and tickets["rejected"] > 0
    assert set(metrics["pii"]) >= {"email", "phone", "cn_id", "bank_card", "ipv4", "ipv6"}
    for side in ("train", "validation", "test"):
        assert pq.read_metadata(workspace / f"data/split/tickets/{side}.parquet").num_rows > 0
    trained = json.loads((workspace / "metrics/train.json").read_text())
    assert trained["steps"] == 12 and trained["loss"] < trained["loss_first"]
    card = json.loads((workspace / "models/trained/training_card.json").read_text())
    assert {e["stage"] for e in card["data"]["dvc_lock"]} >= {"split"}  # lineage from dvc.lock
    exported = json.loads(
        (workspace / "models/export/classifier-none/export_card.json").read_text()
    )
    assert exported["kind"] == "sequence-classification"
    assert [a["format"] for a in exported["artifacts"]] == ["torchscript", "pt2", "tvm"]
    assert all(a["gate"] == "pass" for a in exported["artifacts"])
    for model in ("trained", "classifier"):
        int8 = json.loads((workspace / f"models/export/{model}-int8/export_card.json").read_text())
        assert [
            (a["format"], a["quantize"], a["gate"])
            for a in int8["artifacts"]
            if not a.get("decoder")
        ] == [(f, "int8", "pass") for f in ("torchscript", "pt2", "tvm")]
        # the SFT model also gets its decoders (KV cache), gated on generated tokens
        decoders = [(a["format"], a["gate"]) for a in int8["artifacts"] if a.get("decoder")]
        assert decoders == ([("pt2", "pass"), ("tvm", "pass")] if model == "trained" else [])
        edge = workspace / f"models/export/{model}-aarch64"
        (lib,) = edge.glob("model-int8-aarch64.so")
        assert int.from_bytes(lib.read_bytes()[18:20], "little") == 183  # EM_AARCH64
        assert (edge / f"edge-{model}-aarch64.tar").is_file()

    # the deployed int8 models on every held-out row, next to fp32 eager; DVC reads the figures
    for model, rows in (("classifier", "tickets"), ("trained", "conversations")):
        figures = json.loads((workspace / f"metrics/eval_{model}.json").read_text())
        assert figures["deployed"] == "tvm" and figures["version"].startswith(f"{model}-int8@")
        assert set(figures["backends"]) == {"eager", "torchscript", "pt2", "tvm"}
        test = pq.read_metadata(workspace / f"data/split/{rows}/test.parquet").num_rows
        assert 0 < figures["rows"] <= test
    shown = json.loads(run([*isolated(), *dvc, "metrics", "show", "--json"], workspace).stdout)
    flat = json.dumps(shown)
    assert "metrics/eval_classifier.json" in flat and "macro_f1" in flat and "perplexity" in flat

    pushed = run([*isolated(), *dvc, "push"], workspace).stdout
    assert "pushed" in pushed
    assert any((workspace.parent / "nas").rglob("*"))

    # A second repro with nothing changed re-pulls the labels (annotations live on the server)
    # and runs nothing else.
    again = run([*isolated(), *dvc, "repro"], workspace).stdout
    assert re.findall(r"Running stage '(\w+)'", again) == ["label"]

    run([*isolated(), *dvc, "plots", "show", "-o", "plots"], workspace)
    page = (workspace / "plots/index.html").read_text()
    assert "vegaEmbed" in page and "rows kept after each cleaning step" in page
    assert "training loss" in page and "ticket classifier (int8" in page
    assert not URL.search(page), URL.search(page)
