"""Encodings (``datasets.<name>.encoding``), byte-order marks and line ends in the readers."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline.data.decode import JUDGE_AFTER
from offline.data.io import read_dataset
from offline.data.params import Columns, Dataset, TabularParams, parse_params
from offline.data.tabular import clean_table
from offline.errors import ConfigError, DataError

# The third row is outside GBK: only GB18030's four-byte sequences carry it.
CHINESE = ["发票有误 请尽快处理", "退款 ¥120.50 未到账", "生僻字 𠀀𪚥 与表情 😀", "€ 与 ·"]
BOM = "\ufeff"


def rows(texts: list[str]) -> list[dict[str, str]]:
    return [{"id": f"T{i}", "text": t, "cat": "billing"} for i, t in enumerate(texts)]


def jsonl(records: list[dict[str, str]], newline: str = "\n") -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + newline for r in records)


def csv_text(records: list[dict[str, str]], newline: str = "\n") -> str:
    buf = io.StringIO()
    # RFC 4180 quotes any CR or LF in a cell; Python 3.11's writer only its own line end.
    broken = any("\r" in r["text"] or "\n" in r["text"] for r in records)
    quoting = csv.QUOTE_ALL if broken else csv.QUOTE_MINIMAL
    writer = csv.DictWriter(
        buf, fieldnames=["text", "id", "cat"], lineterminator=newline, quoting=quoting
    )
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def dataset(path: str, **extra: Any) -> Dataset:
    return Dataset(path=path, kind="text", columns=Columns(id="id", label="cat"), **extra)


def read(root: Path, ds: Dataset) -> tuple[pa.Table, list[Any]]:
    chunks = list(read_dataset(root, "t", ds, batch_rows=7, max_record_bytes=100_000))
    table = pa.Table.from_batches([c.batch for c in chunks], schema=chunks[0].batch.schema)
    return table, [q for c in chunks for q in c.quarantined]


def put(root: Path, rel: str, data: bytes) -> str:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    return rel


def assert_read_back(table: pa.Table, records: list[dict[str, str]]) -> None:
    assert table.column("id").to_pylist() == [r["id"] for r in records]
    assert table.column("text").to_pylist() == [r["text"] for r in records]
    assert table.column("label").to_pylist() == [r["cat"] for r in records]
    assert table.column("meta").to_pylist() == [None] * len(records)


def test_excel_csv_utf8_with_bom_and_crlf_is_read_in_full(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8": a BOM before the first header name, CRLF ends, a quoted CRLF cell.
    records = rows([*CHINESE, "two lines\r\nin one cell"])
    rel = put(tmp_path, "data/raw/t.csv", (BOM + csv_text(records, "\r\n")).encode("utf-8"))
    table, quarantined = read(tmp_path, dataset(rel))
    assert quarantined == []
    assert_read_back(table, records)


def test_jsonl_with_bom_and_crlf_keeps_its_first_row(tmp_path: Path) -> None:
    records = rows(CHINESE)
    rel = put(tmp_path, "data/raw/t.jsonl", (BOM + jsonl(records, "\r\n")).encode("utf-8"))
    table, quarantined = read(tmp_path, dataset(rel))
    assert quarantined == []
    assert_read_back(table, records)
    assert table.column("source").to_pylist()[0] == "data/raw/t.jsonl:1"


def test_gb18030_files_read_with_encoding_set(tmp_path: Path) -> None:
    records = rows(CHINESE)
    for rel, text in (("data/raw/a.jsonl", jsonl(records)), ("data/raw/b.csv", csv_text(records))):
        put(tmp_path, rel, text.encode("gb18030"))
        table, quarantined = read(tmp_path, dataset(rel, encoding="gb18030"))
        assert quarantined == []
        assert_read_back(table, records)


def test_a_gb18030_file_read_as_utf8_stops_naming_the_file_and_the_key(tmp_path: Path) -> None:
    rel = put(tmp_path, "data/raw/t.jsonl", jsonl(rows(CHINESE)).encode("gb18030"))
    with pytest.raises(DataError) as exc:
        read(tmp_path, dataset(rel))
    assert "data/raw/t.jsonl is not utf-8 (datasets.t.encoding)" in exc.value.message
    assert "4 of 4 row(s)" in exc.value.message and "line 1, byte" in exc.value.message
    assert "set datasets.t.encoding: gb18030 in params.yaml" in (exc.value.fix or "")


def test_a_large_file_in_the_wrong_encoding_stops_early(tmp_path: Path) -> None:
    records = rows([f"第 {i} 行" for i in range(JUDGE_AFTER + 500)])
    rel = put(tmp_path, "data/raw/t.jsonl", jsonl(records).encode("gb18030"))
    chunks = read_dataset(tmp_path, "t", dataset(rel), batch_rows=100, max_record_bytes=1000)
    seen = 0
    with pytest.raises(DataError, match=f"{JUDGE_AFTER} of {JUDGE_AFTER} row"):
        for chunk in chunks:
            seen += len(chunk.quarantined)
    assert seen < JUDGE_AFTER


def test_utf16_from_windows_tools_is_named_in_the_fix(tmp_path: Path) -> None:
    rel = put(tmp_path, "data/raw/t.jsonl", jsonl(rows(["plain"]), "\r\n").encode("utf-16"))
    with pytest.raises(DataError) as exc:
        read(tmp_path, dataset(rel))
    assert "set datasets.t.encoding: utf-16 in params.yaml" in (exc.value.fix or "")
    table, _ = read(tmp_path, dataset(rel, encoding="utf-16"))
    assert table.column("text").to_pylist() == ["plain"]


def test_a_gb18030_csv_header_stops_at_once(tmp_path: Path) -> None:
    text = "编号,内容\r\n1,发票有误\r\n"
    rel = put(tmp_path, "data/raw/t.csv", text.encode("gb18030"))
    ds = Dataset(path=rel, kind="text", columns=Columns(id="编号", text="内容"))
    with pytest.raises(DataError, match=r"data/raw/t.csv is not utf-8.*line 1, byte 0"):
        read(tmp_path, ds)
    table, _ = read(tmp_path, ds.model_copy(update={"encoding": "gb18030"}))
    assert table.column("text").to_pylist() == ["发票有误"]


def test_a_few_damaged_rows_are_still_quarantined(tmp_path: Path) -> None:
    good = jsonl(rows(CHINESE)).encode("utf-8")
    rel = put(tmp_path, "data/raw/t.jsonl", good + b'{"id": "x", "text": "caf\xe9"}\n')
    table, quarantined = read(tmp_path, dataset(rel))
    assert table.num_rows == 4
    assert [(q.source, q.reason) for q in quarantined] == [
        ("data/raw/t.jsonl:5", "invalid UTF-8: at byte 24")
    ]
    assert quarantined[0].original == '{"id": "x", "text": "caf\\xe9"}'


def test_tabular_reads_bom_jsonl_and_gb18030_csv(tmp_path: Path) -> None:
    lines = [
        '{"ts": "2024-01-01T00:00:00Z", "v": "1.5"}',
        '{"ts": "2024-01-01T01:00:00Z", "v": "2"}',
    ]
    put(tmp_path, "data/raw/s.jsonl", (BOM + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    ds = Dataset(path="data/raw/s.jsonl", kind="tabular", columns=Columns(time="ts", values=["v"]))
    assert clean_table(tmp_path, "s", ds, TabularParams()).rows_in == 2
    series = "时间,温度\r\n2024-01-01T00:00:00Z,1.5\r\n2024-01-01T01:00:00Z,2.5\r\n"
    put(tmp_path, "data/raw/s.csv", series.encode("gb18030"))
    gb = Dataset(
        path="data/raw/s.csv", kind="tabular", columns=Columns(time="时间", values=["温度"])
    )
    with pytest.raises(DataError) as exc:
        clean_table(tmp_path, "s", gb, TabularParams())
    assert "data/raw/s.csv is not utf-8 (datasets.s.encoding)" in exc.value.message
    assert "encoding: gb18030" in (exc.value.fix or "")
    result = clean_table(
        tmp_path, "s", gb.model_copy(update={"encoding": "gb18030"}), TabularParams()
    )
    assert result.table.column_names == ["source", "时间", "温度"]


def test_an_unknown_encoding_is_a_config_error_naming_the_key() -> None:
    data = {"datasets": {"t": {"path": "t.jsonl", "kind": "text", "encoding": "utf-9"}}}
    with pytest.raises(ConfigError, match=r"datasets\.t\.encoding: .*unknown text encoding"):
        parse_params(data)
    data["datasets"]["t"]["encoding"] = "rot13"  # a codec, but not a text encoding
    with pytest.raises(ConfigError, match=r"datasets\.t\.encoding"):
        parse_params(data)
    assert parse_params({"datasets": {"t": {"path": "t", "kind": "text"}}}).datasets[
        "t"
    ].encoding == ("utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["validate", "clean"])
def test_cli_stage_stops_with_exit_10_and_writes_nothing(tmp_path: Path, stage: str) -> None:
    put(tmp_path, "data/raw/t.jsonl", jsonl(rows(CHINESE)).encode("gb18030"))
    params = {"datasets": {"t": {"path": "data/raw/t.jsonl", "kind": "text"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "clean": {"steps": []}}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = subprocess.run(
        [sys.executable, "-m", "offline", "data", stage, "-w", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == DataError.exit_code == 10, proc.stderr
    assert "data/raw/t.jsonl is not utf-8 (datasets.t.encoding)" in proc.stderr
    assert "set datasets.t.encoding: gb18030 in params.yaml" in proc.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40)
RECORDS = st.lists(TEXT, min_size=1, max_size=12).map(rows)
WRITINGS = st.sampled_from(
    [
        ("utf-8", "utf-8", ""),
        ("utf-8", "utf-8", BOM),
        ("gb18030", "gb18030", ""),
        ("gb18030", "gb18030", BOM),
        ("utf-16", "utf-16", ""),  # Windows PowerShell's default; the codec writes the BOM
    ]
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=RECORDS,
    writing=WRITINGS,
    newline=st.sampled_from(["\n", "\r\n"]),
    fmt=st.sampled_from(["jsonl", "csv"]),
)
def test_any_records_read_back_identically(
    records: list[dict[str, str]], writing: tuple[str, str, str], newline: str, fmt: str
) -> None:
    codec, setting, bom = writing
    text = (jsonl if fmt == "jsonl" else csv_text)(records, newline)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rel = put(root, f"data/raw/t.{fmt}", (bom + text).encode(codec))
        extra = {} if setting == "utf-8" else {"encoding": setting}  # utf-8: the default
        table, quarantined = read(root, dataset(rel, **extra))
    assert quarantined == []
    assert_read_back(table, records)
