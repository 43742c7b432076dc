"""``offline label`` without a server: the errors a user meets first, with their fixes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from offline.errors import NetworkError


def offline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "offline", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_push_without_a_server_shows_the_start_command(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    assert offline("init", str(ws)).returncode == 0
    assert offline("data", "sample", "--out", str(ws / "data/raw"), "--rows", "100").returncode == 0
    assert offline("data", "clean", "-w", str(ws)).returncode == 0
    proc = offline(
        "label", "push", "--template", "classification", "--dataset", "tickets", "-w", str(ws)
    )
    assert proc.returncode == NetworkError.exit_code
    assert f"offline label server start --workspace {ws}" in proc.stderr
    status = offline("label", "server", "status", "-w", str(ws))
    assert status.returncode == 1 and "down" in status.stdout


def _snapshot(ws: Path) -> bytes:
    """An earlier pull's output, as `dvc pull` brings it to a fresh clone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = ws / "data/labeled"
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table({"task_id": [1, 2], "record_id": ["t-1", "t-2"], "label": ["billing", "x"]})
    pq.write_table(table, out / "tickets.parquet")
    return (out / "tickets.parquet").read_bytes()


def _repro_label(ws: Path) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the stage runs `offline`
    return subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--single-item", "label"],
        cwd=ws,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATER": "1"},
    )


@pytest.mark.slow
def test_the_label_stage_keeps_the_last_snapshot_when_label_studio_cannot_be_asked(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    assert offline("init", str(ws)).returncode == 0
    (ws / "data/clean").mkdir(parents=True)
    (ws / "data/clean/tickets.parquet").write_bytes(b"")  # the stage's dependency only
    before = _snapshot(ws)

    # a fresh clone: labels pulled by DVC, no project pushed from here; DVC must not delete them
    proc = _repro_label(ws)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no project was pushed from this checkout" in proc.stdout + proc.stderr
    assert (ws / "data/labeled/tickets.parquet").read_bytes() == before
    kept = json.loads((ws / "metrics/label.json").read_text())["kept_last"]
    assert kept["reason"] == "no project was pushed from this checkout" and kept["since"]

    # projects pushed from here, but the server is stopped: kept again, the age unchanged
    (ws / ".labelstudio").mkdir(exist_ok=True)
    (ws / ".labelstudio/projects.json").write_text(
        json.dumps({"tickets": {"id": 1, "template": "classification"}})
    )
    proc = _repro_label(ws)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Label Studio is not running" in proc.stdout + proc.stderr
    assert (ws / "data/labeled/tickets.parquet").read_bytes() == before
    again = json.loads((ws / "metrics/label.json").read_text())["kept_last"]
    assert again["since"] == kept["since"] and "not running" in again["reason"]

    # without --keep-last, or with no snapshot to keep, a stopped server is an error
    proc = offline("label", "pull", "-w", str(ws))
    assert proc.returncode == NetworkError.exit_code and "label server start" in proc.stderr
    assert (ws / "data/labeled/tickets.parquet").read_bytes() == before
    (ws / "data/labeled/tickets.parquet").unlink()
    proc = offline("label", "pull", "--keep-last", "-w", str(ws))
    assert proc.returncode == NetworkError.exit_code and "label server start" in proc.stderr
