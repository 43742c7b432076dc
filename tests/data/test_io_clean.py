"""The readers, the clean runner, validate and split on small workspaces built on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from offline.data.clean import clean
from offline.data.io import read_dataset
from offline.data.params import Columns, Dataset, Params, load_params, parse_params
from offline.data.split import split
from offline.data.validate import validate
from offline.errors import ConfigError, DataError, NotFoundError


def write_jsonl(path: Path, rows: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for row in rows:
            fh.write(
                row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode()
            )
            fh.write(b"\n")


def tickets(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "id": f"T{i}",
            "text": f"ticket {i}: the invoice {i * 7919} is wrong 发票有误",
            "cat": "billing",
        }
        for i in range(start, start + n)
    ]


def make_ws(
    root: Path, data: dict[str, Any], steps: list[str] | None = None, **sections: Any
) -> Path:
    params: dict[str, Any] = {"datasets": data, "clean": {"steps": steps or []}}
    params.update(sections)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


TEXT = {"path": "data/raw/tickets.jsonl", "kind": "text", "columns": {"id": "id", "label": "cat"}}


def test_reader_quarantines_every_bad_row_with_its_line_and_reason(tmp_path: Path) -> None:
    rows: list[Any] = tickets(3)
    rows += [
        b'{"id": "x", "text": ',
        b'{"id": "y", "text": "caf\xe9"}',
        {"id": "z"},
        {"id": "w", "text": ["a", "list"]},
        [1, 2],
        {"id": "big", "text": "x" * 2000},
    ]
    write_jsonl(tmp_path / "data/raw/tickets.jsonl", rows)
    ds = Dataset.model_validate(TEXT)
    chunks = list(read_dataset(tmp_path, "tickets", ds, batch_rows=100, max_record_bytes=1000))
    assert sum(c.batch.num_rows for c in chunks) == 3
    bad = {q.source: (q.category, q.reason) for c in chunks for q in c.quarantined}
    src = "data/raw/tickets.jsonl"
    assert bad[f"{src}:4"][0] == "malformed" and "invalid JSON" in bad[f"{src}:4"][1]
    assert bad[f"{src}:5"] == ("malformed", "invalid UTF-8: at byte 24")
    assert bad[f"{src}:6"] == ("missing", "missing field: 'text'")
    assert bad[f"{src}:7"][0] == "wrong_type" and "'text' is list" in bad[f"{src}:7"][1]
    assert bad[f"{src}:8"][0] == "malformed"
    assert bad[f"{src}:9"][0] == "oversized"


def test_reader_reads_a_directory_of_csv_and_parquet_shards(tmp_path: Path) -> None:
    raw = tmp_path / "data/raw/shards"
    raw.mkdir(parents=True)
    (raw / "a.csv").write_text('id,text,cat\n1,"hello, world",x\n2,second row here,y\n3,short\n')
    pq.write_table(
        pa.table({"id": ["p1"], "text": ["from parquet"], "cat": ["z"]}), raw / "b.parquet"
    )
    ds = Dataset(path="data/raw/shards", kind="text", columns=Columns(id="id", label="cat"))
    chunks = list(read_dataset(tmp_path, "t", ds, batch_rows=10, max_record_bytes=10_000))
    batch = pa.Table.from_batches([c.batch for c in chunks])
    assert batch.column("text").to_pylist() == ["hello, world", "second row here", "from parquet"]
    assert batch.column("source").to_pylist()[2] == "data/raw/shards/b.parquet:1"
    quarantined = [q for c in chunks for q in c.quarantined]
    assert [(q.source, q.category) for q in quarantined] == [
        ("data/raw/shards/a.csv:4", "malformed")
    ]


def test_unreadable_input_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/t.parquet").write_bytes(b"not parquet at all")
    ds = Dataset(path="data/raw/t.parquet", kind="text")
    with pytest.raises(DataError, match=r"data/raw/t.parquet"):
        list(read_dataset(tmp_path, "t", ds, batch_rows=10, max_record_bytes=100))
    missing = Dataset(path="data/raw/nope.jsonl", kind="text")
    with pytest.raises(NotFoundError, match=r"nope\.jsonl") as exc:
        list(read_dataset(tmp_path, "t", missing, batch_rows=10, max_record_bytes=100))
    assert "offline data sample" in (exc.value.fix or "")


def test_params_list_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_params(
            {
                "datasets": {"a": {"path": "x", "kind": "poetry"}},
                "clean": {"steps": ["normalize", "sparkle"], "batch_rows": 0},
                "split": {"validation": 0.6, "test": 0.5},
            }
        )
    text = exc.value.message
    assert "datasets.a.kind" in text and "sparkle" in text and "batch_rows" in text
    assert "split" in text


def test_clean_writes_shards_ledger_and_metrics_and_never_touches_raw(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", {"tickets": TEXT})
    write_jsonl(ws / "data/raw/tickets.jsonl", [*tickets(5), b"{broken"])
    before = (ws / "data/raw/tickets.jsonl").read_bytes()
    report = clean(ws)
    assert (ws / "data/raw/tickets.jsonl").read_bytes() == before
    assert report.docs_in == 6 and report.docs_kept == 5
    kept = pq.read_table(ws / "data/clean/tickets-00000.parquet")
    assert kept.column("id").to_pylist() == ["T0", "T1", "T2", "T3", "T4"]
    assert (
        pq.ParquetFile(ws / "data/clean/tickets-00000.parquet")
        .metadata.row_group(0)
        .column(0)
        .compression
        == "ZSTD"
    )
    ledger = pq.read_table(ws / "data/rejected/tickets-00000.parquet").to_pylist()
    assert ledger[0]["step"] == "read" and ledger[0]["original"] == "{broken"
    assert ledger[0]["source"] == "data/raw/tickets.jsonl:6"
    metrics = json.loads((ws / "metrics/clean.json").read_text())
    assert metrics["datasets"]["tickets"]["steps"]["read"]["reasons"] == {"invalid JSON": 1}


def test_a_failed_clean_leaves_the_previous_outputs_whole(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", {"tickets": TEXT})
    write_jsonl(ws / "data/raw/tickets.jsonl", tickets(4))
    clean(ws)
    before = (ws / "data/clean/tickets-00000.parquet").read_bytes()
    (ws / "data/raw/tickets.jsonl").unlink()
    with pytest.raises(NotFoundError):
        clean(ws)
    assert (ws / "data/clean/tickets-00000.parquet").read_bytes() == before
    assert not list((ws / "data").glob(".clean.tmp*"))


def test_shards_roll_over_at_shard_rows(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", {"tickets": TEXT})
    params = load_params(ws / "params.yaml")
    params.clean.shard_rows = 40
    params.clean.batch_rows = 16
    write_jsonl(ws / "data/raw/tickets.jsonl", tickets(100))
    clean(ws, params)
    shards = sorted((ws / "data/clean").glob("tickets-*.parquet"))
    assert [pq.read_metadata(p).num_rows for p in shards] == [40, 40, 20]


def test_validate_fails_with_every_violated_threshold_and_writes_the_report(tmp_path: Path) -> None:
    conv = {"path": "data/raw/c.jsonl", "kind": "conversation"}
    ws = make_ws(tmp_path / "ws", {"tickets": TEXT, "chats": conv})
    write_jsonl(ws / "data/raw/tickets.jsonl", [*tickets(8), b"{bad", b"{worse"])
    turns = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    write_jsonl(ws / "data/raw/c.jsonl", [{"messages": turns}] * 3)
    with pytest.raises(DataError) as exc:
        validate(ws)
    msg = exc.value.message
    assert "tickets: malformed_rate = 0.2" in msg and "chats: role_error_rate = 1" in msg
    report = json.loads((ws / "metrics/validate.json").read_text())
    assert report["ok"] is False and report["failed"] == 2
    assert report["datasets"]["chats"]["role_errors"] == {"two user turns in a row": 3}


def test_validate_passes_clean_data(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", {"tickets": TEXT})
    write_jsonl(ws / "data/raw/tickets.jsonl", tickets(10))
    assert validate(ws).failed == []


def _split_ids(ws: Path) -> dict[str, set[str]]:
    return {
        side: set(pq.read_table(ws / f"data/split/tickets/{side}.parquet").column("id").to_pylist())
        for side in ("train", "validation", "test")
    }


def test_split_is_stable_when_rows_are_added(tmp_path: Path) -> None:
    ws = make_ws(
        tmp_path / "ws", {"tickets": TEXT}, split={"seed": 7, "validation": 0.2, "test": 0.2}
    )
    write_jsonl(ws / "data/raw/tickets.jsonl", tickets(300))
    clean(ws)
    split(ws)
    first = _split_ids(ws)
    assert 40 < len(first["test"]) < 80 and 40 < len(first["validation"]) < 80
    write_jsonl(ws / "data/raw/tickets.jsonl", tickets(400))
    clean(ws)
    split(ws)
    second = _split_ids(ws)
    for side in first:
        assert first[side] <= second[side]


def test_split_keeps_a_cluster_on_one_side(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", {"tickets": TEXT})
    write_jsonl(ws / "data/raw/tickets.jsonl", tickets(200))
    clean(ws)
    # Tie every row to one of four clusters, as near_dedup's tag action does.
    path = ws / "data/clean/tickets-00000.parquet"
    table = pq.read_table(path)
    clusters = pa.array([f"c{i % 4}" for i in range(table.num_rows)])
    pq.write_table(
        table.set_column(table.schema.get_field_index("cluster"), "cluster", clusters), path
    )
    split(ws)
    sides = _split_ids(ws)
    by_cluster: dict[str, set[str]] = {}
    for side, ids in sides.items():
        for ident in ids:
            by_cluster.setdefault(f"c{int(ident[1:]) % 4}", set()).add(side)
    assert all(len(s) == 1 for s in by_cluster.values())


def test_label_studio_labels_replace_the_source_labels_in_the_split(tmp_path: Path) -> None:
    ws = make_ws(tmp_path / "ws", {"tickets": TEXT})
    write_jsonl(ws / "data/raw/tickets.jsonl", tickets(120))
    clean(ws)
    cleaned = pq.read_table(next((ws / "data/clean").glob("tickets-*.parquet"))).to_pylist()
    relabelled = {row["record_id"]: "from-studio" for row in cleaned[:30]}
    (ws / "data/labeled").mkdir(parents=True)
    rows = [
        {"record_id": rid, "dataset": "tickets", "label": label, "created": "2026-01-01"}
        for rid, label in relabelled.items()
    ]
    pq.write_table(pa.Table.from_pylist(rows), ws / "data/labeled/classification.parquet")
    report = split(ws)
    assert report.labelled == {"tickets": 30}
    out = pa.concat_tables(
        [
            pq.read_table(ws / f"data/split/tickets/{s}.parquet")
            for s in ("train", "validation", "test")
        ]
    ).to_pylist()
    assert len(out) == len(cleaned)
    for row in out:
        if row["record_id"] in relabelled:
            assert (row["label"], row["label_source"]) == ("from-studio", "labelstudio")
        else:
            assert row["label_source"] == "source" and row["label"] != "from-studio"
    metrics = json.loads((ws / "metrics/split.json").read_text())
    assert metrics["labelstudio_labels"] == {"tickets": 30}


def test_tabular_fill_clip_and_quarantine(tmp_path: Path) -> None:
    series = {
        "path": "data/raw/s.csv",
        "kind": "tabular",
        "columns": {"time": "ts", "values": ["v"]},
    }
    ws = make_ws(tmp_path / "ws", {"s": series})
    lines = ["ts,v"] + [f"2026-01-01T00:{i:02d}:00,{10 + i % 2}" for i in range(30)]
    lines[5] = "2026-01-01T00:04:00,"  # missing value
    lines[9] = "2026-01-01T00:08:00,500"  # spike
    lines[12] = "not-a-time,10"
    (ws / "data/raw").mkdir(parents=True)
    (ws / "data/raw/s.csv").write_text("\n".join(lines) + "\n")
    report = clean(ws)
    table = pq.read_table(ws / "data/clean/s-00000.parquet").to_pydict()
    assert len(table["v"]) == 29 and None not in table["v"]
    assert max(table["v"]) <= 12.5 and table["source"][4] == "data/raw/s.csv:6"
    counts = report.metrics()["datasets"]["s"]["steps"]["tabular"]["counts"]
    assert counts["filled"] == 1 and counts["clipped"] == 1
    ledger = pq.read_table(ws / "data/rejected/s-00000.parquet").to_pylist()
    assert ledger[0]["source"] == "data/raw/s.csv:13" and "unparseable time" in ledger[0]["reason"]


def test_default_params_round_trip_through_yaml() -> None:
    from offline.data.params import default_params, dump_params

    params = default_params()
    again = parse_params(yaml.safe_load(yaml.safe_dump(dump_params(params))))
    assert again == params
    assert isinstance(again, Params)


def test_no_output_keeps_a_value_the_pii_step_hides(tmp_path: Path) -> None:
    ws = make_ws(
        tmp_path / "ws",
        {"tickets": TEXT},
        steps=["pii"],
    )
    params = load_params(ws / "params.yaml")
    params.clean.pii.reject_types = ["cn_id"]
    rows = [
        {
            "id": "a",
            "text": "mail me at li.wei@example.com",
            "cat": "x",
            "contact": "li.wei@example.com",
        },
        {"id": "b", "text": "我的身份证号 11010519491231002X 请核实", "cat": "x"},
        b'{"id": "c", "text": "broken 11010519491231002X',
    ]
    write_jsonl(ws / "data/raw/tickets.jsonl", rows)
    clean(ws, params)
    kept = pq.read_table(ws / "data/clean/tickets-00000.parquet")
    assert "original" not in kept.column_names
    assert kept.column("text").to_pylist() == ["mail me at [EMAIL]"]
    assert "li.wei" not in kept.column("meta")[0].as_py()
    ledger = pq.read_table(ws / "data/rejected/tickets-00000.parquet").to_pylist()
    assert {r["step"] for r in ledger} == {"read", "pii"}
    for row in ledger:
        assert "11010519491231002X" not in row["original"] and "[CN_ID]" in row["original"]


def test_instruction_pairs_from_csv_with_mapped_columns_run_the_default_chain(
    tmp_path: Path,
) -> None:
    pairs = {
        "path": "data/raw/pairs.csv",
        "kind": "instruction",
        "columns": {"instruction": "prompt", "response": "answer", "id": "n"},
    }
    ws = tmp_path / "ws"
    (ws / "data/raw").mkdir(parents=True)
    (ws / "params.yaml").write_text(yaml.safe_dump({"datasets": {"pairs": pairs}}))
    qa = [
        ("How do I reset my password?", "Open settings, choose security, then reset it."),
        (
            "Where is my parcel from Shanghai?",
            "It left the depot today; call 13812345678 for news.",
        ),
        ("Why was my card charged twice?", "The second charge is a hold and drops within 3 days."),
        (
            "Can I change the invoice title?",
            "Yes, before the invoice is issued, from the order page.",
        ),
        (
            "The app crashes when I upload a photo.",
            "Update to the latest version and clear the cache.",
        ),
    ]
    lines = ["n,prompt,answer"] + [f'{i},"{q}","{a}"' for i, (q, a) in enumerate(qa)]
    lines.append(f'99,"{qa[1][0]}","{qa[1][1]}"')
    (ws / "data/raw/pairs.csv").write_text("\n".join(lines) + "\n")
    report = clean(ws)
    kept = pq.read_table(ws / "data/clean/pairs-00000.parquet").to_pylist()
    assert report.docs_in == 6 and len(kept) == 5
    assert kept[1]["response"] == "It left the depot today; call [PHONE] for news."
    assert kept[3]["instruction"] == "Can I change the invoice title?"
    ledger = pq.read_table(ws / "data/rejected/pairs-00000.parquet").to_pylist()
    assert [(r["id"], r["step"]) for r in ledger] == [("99", "exact_dedup")]
