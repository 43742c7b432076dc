"""The ``offline init`` / ``offline data`` commands: exit codes and messages, not the library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from offline.cli import app
from offline.errors import DataError

runner = CliRunner()


def test_init_twice_is_a_config_error_with_the_fix(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    first = runner.invoke(app, ["init", str(ws), "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["remote"].endswith("storage")
    second = runner.invoke(app, ["init", str(ws)])
    assert second.exit_code != 0
    assert "already holds a workspace" in str(second.exception)


@pytest.mark.slow
def test_validate_failure_exits_with_the_data_error_code(tmp_path: Path) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/t.jsonl").write_text('{"text": "fine row"}\n{oops\n')
    params = {"datasets": {"t": {"path": "data/raw/t.jsonl", "kind": "text"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(
        [sys.executable, "-m", "offline", "data", "validate", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == DataError.exit_code == 10
    assert "t: malformed_rate = 0.5 (limit 0.05)" in proc.stderr
    assert "fix:" in proc.stderr
    assert json.loads((tmp_path / "metrics/validate.json").read_text())["ok"] is False


def test_clean_json_reports_rows(tmp_path: Path) -> None:
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/t.jsonl").write_text('{"text": "a fine row"}\n')
    params = {
        "datasets": {"t": {"path": "data/raw/t.jsonl", "kind": "text"}},
        "clean": {"steps": []},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = runner.invoke(app, ["data", "clean", "-w", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["totals"] == {"rows_in": 1, "rows_out": 1, "rejected": 0}


def test_params_prints_defaults_that_parse_back() -> None:
    from offline.data.params import default_params, parse_params

    result = runner.invoke(app, ["data", "params"])
    assert result.exit_code == 0
    assert parse_params(yaml.safe_load(result.output)) == default_params()
