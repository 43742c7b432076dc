"""What an export writes beside its artifacts (card, edge package) carries no credential."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from offline.deploy import artifact
from offline.deploy import export as ex

DIGEST = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def _card(sample: str, failed: list[str]) -> dict[str, Any]:
    lat = {"b1_p50": 1.0, "b1_p99": 2.0, "b8_p50": 3.0, "b8_p99": 4.0}
    artifact = {
        "format": "torchscript", "quantize": "int8", "target": "x86_64", "path": "m.pt",
        "bytes": 1000, "latency_ms": lat, "gate": "fail" if failed else "pass", "failed": failed,
        "parity": {"max_abs_diff": 0.1, "top1_agreement": 0.5, "accuracy": None}, "cpu": "",
    }  # fmt: skip
    return {
        "model": "models/trained", "kind": "causal-lm", "labels": None, "pad_token_id": 0,
        "source_sha256": DIGEST, "seq_len": 32, "sample": sample, "sample_rows": 16,
        "gate": {}, "eager": {"latency_ms": lat}, "artifacts": [artifact],
    }  # fmt: skip


def test_the_export_card_masks_credentials_and_keeps_digests(tmp_path: Path) -> None:
    card = _card(
        "https://ana:p4ss-s3cret@data.lan/test.parquet?sig=s1g-s3cret",
        ["https://data.lan/x?token=t0k-s3cret failed (Authorization: Bearer b3arer-s3cret)"],
    )
    shown = artifact.write_card(tmp_path, card)
    for name in ("export_card.json", "EXPORT_CARD.md"):
        text = (tmp_path / name).read_text()
        assert "data.lan" in text and DIGEST[:16] in text, name
        assert not [s for s in ("p4ss", "s1g-", "t0k-", "b3arer") if s in text], name
    assert json.loads((tmp_path / "export_card.json").read_text()) == shown
    assert shown["source_sha256"] == DIGEST and shown["artifacts"][0]["bytes"] == 1000


def test_the_edge_package_ships_no_index_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "requirements").mkdir(parents=True)
    (bundle / "requirements/edge-aarch64.in").write_text(
        "--extra-index-url https://__token__:idx-s3cret@pypi.lan/simple\n"
        "--find-links https://files.lan/wheels?X-Amz-Signature=f1nd-s3cret\n"
        "numpy\n"
    )
    monkeypatch.setenv("DEEPSEEK_OFFLINE_BUNDLE_DIR", str(bundle))
    out = tmp_path / "out"
    out.mkdir()
    tar = ex.package(out, "edge.tar", "aarch64")
    requirements = (out / "runtime-requirements.txt").read_text()
    assert "https://***@pypi.lan/simple" in requirements and "numpy" in requirements
    with tarfile.open(tar) as archive:
        shipped = b"".join(f.read() for m in archive if (f := archive.extractfile(m)))
    assert b"idx-s3cret" not in shipped and b"f1nd-s3cret" not in shipped
