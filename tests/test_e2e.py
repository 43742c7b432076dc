"""The whole appliance, as ``make demo`` runs it, on a smaller sample: a signed bundle built
here, installed and used inside a network namespace where every packet that tries to leave
is counted. The count must be 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.network]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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
    ):  # fmt: skip
        assert name in stages
    serve = figures["figures"]["serve"]
    assert len(serve["predict"]) == 2 and serve["chat_usage"]["completion_tokens"] > 0
    assert serve["without_key"] == 401
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
