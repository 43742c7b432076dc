"""The whole appliance, as ``make demo`` runs it, on a smaller sample: a signed bundle built
here, installed and used inside a network namespace where every packet that tries to leave
is counted. The count must be 0."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.serve.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.network]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
URL = re.compile(r"\b(?:https?|wss?|ftp)://", re.IGNORECASE)


def test_the_demo_flow_runs_air_gapped(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    from offline import demo

    key = tmp_path / "keys/signing.pem"
    subprocess.run([str(BIN / "offline"), "bundle", "keygen", "--out", str(key)], check=True)
    subprocess.run(
        [str(BIN / "offline"), "bundle", "build", "--spec", str(ROOT / "bundle/bundle.toml"),
         "--out", str(tmp_path / "bundle"), "--key", str(key)],
        check=True,
    )  # fmt: skip
    record = tmp_path / "demo.json"
    rc = demo.main(
        [
            "--bundle", str(tmp_path / "bundle"), "--pubkey", str(key.with_suffix(".pub.pem")),
            "--prefix", str(tmp_path / "host"), "--rows", "400", "--port", str(free_port()),
            "--json", str(record),
        ]
    )  # fmt: skip
    figures = json.loads(record.read_text())
    assert rc == 0
    assert figures["airgap_packets"] == 0
    assert all(s["egress"] == 0 for s in figures["stages"] if s["name"] != "doctor (network)")
    # the doctor's probes really went out (and were rejected): the counter works
    assert figures["doctor_probe_packets"] > 0
    assert figures["figures"]["doctor"]["fail"] == 0
    stages = [s["name"] for s in figures["stages"]]
    for name in (
        "install", "label", "train (SFT)", "train (classifier)", "export", "evaluate", "serve",
        "evidence",
    ):  # fmt: skip
        assert name in stages
    serve = figures["figures"]["serve"]
    assert len(serve["predict"]) == 2 and serve["chat_usage"]["completion_tokens"] > 0
    assert serve["without_key"] == 401
    # each server's audit log is hash-chained and was closed when the server stopped
    assert len(serve["audit"]) == 2 and all(a.startswith("chain intact") for a in serve["audit"])
    # the SFT model is served as an LLM: its KV cache and its own context, not a 64-token window
    assert serve["lm_backend"] == "eager" and serve["lm_max_model_len"] == 512
    assert serve["second_turn_usage"]["prompt_tokens"] > 100
    ws = tmp_path / "host/workspace"
    for model in ("classifier", "trained"):
        card = json.loads((ws / f"models/export/{model}-int8/export_card.json").read_text())
        assert all(a["gate"] == "pass" for a in card["artifacts"])
        evaluated = json.loads((ws / f"metrics/eval_{model}.json").read_text())
        assert evaluated["deployed"] == "tvm" and evaluated["rows"] > 0
    # the SFT model's decoders (KV cache): pt2 and TVM on the host, TVM for aarch64
    for export_dir, formats in (("trained-int8", {"pt2", "tvm"}), ("trained-aarch64", {"tvm"})):
        card = json.loads((ws / f"models/export/{export_dir}/export_card.json").read_text())
        decoders = [a for a in card["artifacts"] if a.get("decoder")]
        assert {a["format"] for a in decoders} == formats
        assert all(a["decoder"]["columns"] == card["max_context"] + 1 for a in decoders)
        if export_dir == "trained-int8":
            assert all(a["gate"] == "pass" for a in decoders)
    assert (ws / "data/labeled").is_dir()
    _the_dossier(ws, figures["figures"]["evidence"])
    _the_pipeline_as_dvc_sees_it(ws, tmp_path / "host/envs/toolkit/bin")


def _the_dossier(ws: Path, evidence: dict[str, object]) -> None:
    """The evidence stage's dossier from the whole pipeline: accepted by the toolkit, sha256sum
    and openssl (the demo ran all three); it names the trained models, their training cards,
    the installed bundle, the doctor's report and the servers' audit logs, signed and closed."""
    assert str(evidence["verify"]).startswith("dossier intact: signature valid")
    assert evidence["openssl"] == "Signature Verified Successfully"
    index = json.loads((ws / "evidence/index.json").read_text())
    assert index["models"] == ["models/export/classifier-int8", "models/export/trained-int8"]
    for name in ("training/classifier-int8.json", "training/trained-int8.json",
                 "evaluation/trained-int8.json", "bundle/manifest.json", "bundle/sbom.cdx.json",
                 "host/doctor.json"):  # fmt: skip
        assert name in index["files"], name
    kinds = sorted(log["kind"] for log in index["logs"])
    assert kinds == ["doctor", "serving audit", "serving audit", "training", "training"], kinds
    assert all(log["signed_by_site_key"] for log in index["logs"]), index["logs"]
    audit = json.loads((ws / "evidence/audit.json").read_text())["logs"]
    assert all(log["verdict"]["ok"] and log["verdict"]["closed"] for log in audit), audit
    bom = json.loads((ws / "evidence/model-card.cdx.json").read_text())
    packages = {c["name"] for c in bom["components"] if c["type"] == "library"}
    assert {"torch", "deepseek-offline"} <= packages  # the runtime, from the bundle's SBOM
    planted = {p["value"] for p in json.loads((ws / "data/raw/SAMPLE.json").read_text())["pii"]}
    text = b"".join(p.read_bytes() for p in (ws / "evidence").rglob("*") if p.is_file())
    assert not [v for v in planted if v.encode() in text]


def _the_pipeline_as_dvc_sees_it(ws: Path, bin_dir: Path) -> None:
    """What `dvc repro` promises a user of the demo's workspace: every stage's outputs and
    metrics, lineage, an up-to-date pipeline, and plots that reach nothing outside."""

    def dvc(*args: str) -> str:
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "isolated"]
        proc = subprocess.run(
            [*argv, str(bin_dir / "python"), "-m", "dvc", *args],
            cwd=ws, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, f"dvc {args}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout

    metrics = json.loads((ws / "metrics/clean.json").read_text())
    assert metrics["datasets"]["tickets"]["rejected"] > 0
    trained = json.loads((ws / "metrics/train.json").read_text())
    assert trained["steps"] > 0 and trained["loss"] < trained["loss_first"]
    card = json.loads((ws / "models/trained/training_card.json").read_text())
    assert {e["stage"] for e in card["data"]["dvc_lock"]} >= {"split"}  # lineage from dvc.lock
    exported = json.loads((ws / "models/export/classifier-none/export_card.json").read_text())
    assert exported["kind"] == "sequence-classification"
    assert [a["format"] for a in exported["artifacts"]] == ["torchscript", "pt2", "tvm"]
    assert all(a["gate"] == "pass" for a in exported["artifacts"])
    for model in ("trained", "classifier"):
        int8 = json.loads((ws / f"models/export/{model}-int8/export_card.json").read_text())
        assert [
            (a["format"], a["quantize"], a["gate"])
            for a in int8["artifacts"]
            if not a.get("decoder")
        ] == [(f, "int8", "pass") for f in ("torchscript", "pt2", "tvm")]
        edge = ws / f"models/export/{model}-aarch64"
        (lib,) = edge.glob("model-int8-aarch64.so")
        assert int.from_bytes(lib.read_bytes()[18:20], "little") == 183  # EM_AARCH64
        assert (edge / f"edge-{model}-aarch64.tar").is_file()
    for model, rows in (("classifier", "tickets"), ("trained", "conversations")):
        figures = json.loads((ws / f"metrics/eval_{model}.json").read_text())
        assert figures["version"].startswith(f"{model}-int8@")
        assert set(figures["backends"]) == {"eager", "torchscript", "pt2", "tvm"}
        test = pq.read_metadata(ws / f"data/split/{rows}/test.parquet").num_rows
        assert 0 < figures["rows"] <= test
    flat = json.dumps(json.loads(dvc("metrics", "show", "--json")))
    assert "metrics/eval_classifier.json" in flat and "macro_f1" in flat and "perplexity" in flat
    # nothing changed: a repro re-pulls the labels (annotations live on the server) and
    # re-collects the evidence (logs and host evidence change outside DVC), nothing else
    assert re.findall(r"Running stage '(\w+)'", dvc("repro")) == ["label", "evidence"]
    dvc("plots", "show", "-o", "plots")
    page = (ws / "plots/index.html").read_text()
    assert "vegaEmbed" in page and "rows kept after each cleaning step" in page
    assert "training loss" in page and "ticket classifier (int8" in page
    assert not URL.search(page), URL.search(page)
