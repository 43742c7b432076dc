"""The default chain on the generated sample, scored against the sample's answer key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from offline.data.clean import clean
from offline.data.params import default_params, dump_params
from offline.data.sample.files import generate
from offline.data.split import split


def files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ws = tmp_path_factory.mktemp("pipeline")
    generate(ws / "data/raw", rows=2000, seed=3)
    (ws / "params.yaml").write_text(yaml.safe_dump(dump_params(default_params())))
    raw_before = {k: hashlib.sha256(v).hexdigest() for k, v in files(ws / "data/raw").items()}
    clean(ws)
    first = {**files(ws / "data/clean"), **files(ws / "data/rejected")}
    metrics = json.loads((ws / "metrics/clean.json").read_text())
    clean(ws)
    second = {**files(ws / "data/clean"), **files(ws / "data/rejected")}
    split(ws)
    key = json.loads((ws / "data/raw/SAMPLE.json").read_text())
    kept = {
        name: pa.concat_tables(
            [pq.read_table(p) for p in sorted((ws / "data/clean").glob(f"{name}-*.parquet"))]
        ).to_pylist()
        for name in ("tickets", "conversations")
    }
    ledger = pa.concat_tables(
        [pq.read_table(p) for p in sorted((ws / "data/rejected").glob("*.parquet"))]
    ).to_pylist()
    return {
        "ws": ws,
        "raw_before": raw_before,
        "first": first,
        "second": second,
        "metrics": metrics,
        "metrics_again": json.loads((ws / "metrics/clean.json").read_text()),
        "key": key,
        "kept": {name: {r["id"]: r for r in rows} for name, rows in kept.items()},
        "ledger": {(r["dataset"], r["id"]): r for r in ledger if r["id"] is not None},
        "ledger_rows": ledger,
    }


def text_of(row: dict[str, Any]) -> str:
    if row.get("messages") is not None:
        return "\n".join(m["content"] for m in row["messages"])
    return str(row["text"])


@pytest.mark.slow
def test_same_input_and_params_give_identical_bytes_and_raw_is_untouched(
    run: dict[str, Any],
) -> None:
    assert run["first"] == run["second"]
    assert set(run["first"]) >= {"tickets-00000.parquet", "conversations-00000.parquet"}
    again = {k: v for k, v in run["metrics_again"].items() if k != "throughput"}
    assert again == {k: v for k, v in run["metrics"].items() if k != "throughput"}
    raw_after = {k: hashlib.sha256(v).hexdigest() for k, v in files(run["ws"] / "data/raw").items()}
    assert raw_after == run["raw_before"]


def test_every_planted_exact_duplicate_is_caught(run: dict[str, Any]) -> None:
    checked = 0
    for dup in run["key"]["exact_duplicates"]:
        kept = run["kept"][dup["dataset"]]
        if dup["original"] not in kept:
            continue  # the original itself was rejected (junk, bad turns): so is its copy
        checked += 1
        assert dup["id"] not in kept, dup
        row = run["ledger"][(dup["dataset"], dup["id"])]
        assert row["step"] == "exact_dedup", row
        assert row["cluster"] == kept[dup["original"]]["record_id"]
    assert checked >= 0.9 * len(run["key"]["exact_duplicates"])


def test_near_duplicates_precision_and_recall_at_the_default_threshold(run: dict[str, Any]) -> None:
    planted = {(d["dataset"], d["id"]) for d in run["key"]["near_duplicates"]}
    exact = {(d["dataset"], d["id"]) for d in run["key"]["exact_duplicates"]}
    eligible = {
        (d["dataset"], d["id"])
        for d in run["key"]["near_duplicates"]
        if d["original"] in run["kept"][d["dataset"]]
    }
    flagged = {k for k, r in run["ledger"].items() if r["step"] in ("near_dedup", "exact_dedup")}
    recall = len(eligible & flagged) / len(eligible)
    near_flagged = {k for k, r in run["ledger"].items() if r["step"] == "near_dedup"}
    precision = len(near_flagged & (planted | exact)) / len(near_flagged)
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision
    assert len(eligible) >= 50


def test_pii_recall_and_no_false_positives_on_failed_checksums(run: dict[str, Any]) -> None:
    found = 0
    for item in run["key"]["pii"]:
        row = run["kept"][item["dataset"]].get(item["id"])
        if row is None:
            continue
        found += 1
        assert item["value"] not in text_of(row), item
    assert found >= 0.8 * len(run["key"]["pii"])
    types = {i["type"] for i in run["key"]["pii"]}
    assert types == {"email", "phone", "cn_id", "bank_card", "ipv4", "ipv6"}
    assert set(run["metrics"]["pii"]) == types
    decoys = 0
    for item in run["key"]["decoys"]:
        row = run["kept"][item["dataset"]].get(item["id"])
        if row is not None:
            decoys += 1
            assert item["value"] in text_of(row), item
    assert decoys > 0


def test_malformed_rows_are_quarantined_with_their_line(run: dict[str, Any]) -> None:
    sources = {(r["dataset"], r["source"]): r for r in run["ledger_rows"] if r["step"] == "read"}
    for bad in run["key"]["malformed"]:
        file = "tickets.jsonl" if bad["dataset"] == "tickets" else "conversations.jsonl"
        row = sources[(bad["dataset"], f"data/raw/{file}:{bad['line']}")]
        assert row["reason"], bad


def test_conversation_problems_are_rejected_or_repaired(run: dict[str, Any]) -> None:
    for issue in run["key"]["conversation_issues"]:
        kept = run["kept"]["conversations"].get(issue["id"])
        if kept is None:
            assert ("conversations", issue["id"]) in run["ledger"], issue
        else:
            assert issue["problem"] == "empty_turn", issue
            assert all(m["content"].strip() for m in kept["messages"])


def test_the_time_series_is_filled_and_clipped(run: dict[str, Any]) -> None:
    sensors = run["key"]["sensors"]
    counts = run["metrics"]["datasets"]["sensors"]["steps"]["tabular"]["counts"]
    assert counts["filled"] == len(sensors["missing"]) + counts["unparseable_values"]
    assert counts["clipped"] >= len(sensors["outliers"])
    table = pq.read_table(run["ws"] / "data/clean/sensors-00000.parquet")
    assert table.column("temperature").null_count == 0


def test_split_covers_every_kept_row_once(run: dict[str, Any]) -> None:
    ws = run["ws"]
    ids: list[str] = []
    for side in ("train", "validation", "test"):
        ids += pq.read_table(ws / f"data/split/tickets/{side}.parquet").column("id").to_pylist()
    assert sorted(ids) == sorted(run["kept"]["tickets"])
