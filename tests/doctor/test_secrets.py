"""No doctor report shows a credential, whatever check found it and whatever format shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from offline.doctor import report as render
from offline.doctor.context import Context
from offline.doctor.model import Check, Result, problem
from offline.doctor.runner import Report, diagnose, run_checks

SECRETS = ("c0nf-s3cret", "q-s3cret", "env-s3cret", "AbCdEf123456", "k3y-s3cret")


def _pip_env(tmp_path: Path) -> dict[str, str]:
    """A pip configuration and environment that name indexes with credentials in them."""
    conf = tmp_path / "pip.conf"
    conf.write_text(
        "[global]\n"
        "index-url = https://alice:c0nf-s3cret@mirror.local/simple\n"
        "extra-index-url = https://mirror.local/extra?token=q-s3cret\n"
    )
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(tmp_path),
        "PIP_CONFIG_FILE": str(conf),
        "PIP_EXTRA_INDEX_URL": "https://bob:env-s3cret@mirror.local/simple",
        "PIP_FIND_LINKS": "https://files.local/wheels?X-Amz-Signature=AbCdEf123456",
    }


def _formats(report: Report) -> dict[str, str]:
    return {
        "text": render.to_text(report, verbose=True),
        "json": render.to_json(report),
        "html": render.to_html(report),
        "junit": render.to_junit(report),
    }


def test_pip_index_credentials_reach_no_report_format(tmp_path: Path) -> None:
    report = diagnose(Context.create(environ=_pip_env(tmp_path)), only=["py.*.pip-index"])
    (finding,) = report.findings
    assert finding.status == "warn" and "remote index" in finding.message
    for name, text in _formats(report).items():
        assert "mirror.local" in text and "files.local" in text, name  # still says where
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"{name} report shows {leaked}"


def test_the_command_line_reports_show_no_credential(tmp_path: Path) -> None:
    html, junit = tmp_path / "r.html", tmp_path / "r.xml"
    exe = Path(sys.executable).with_name("deepseek-doctor")
    args = [exe, "--only", "py.*.pip-index", "--json", "--html", html, "--junit", junit]
    env = {**os.environ, **_pip_env(tmp_path)}
    done = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=env)
    shown = done.stdout + done.stderr + html.read_text() + junit.read_text()
    assert "mirror.local" in done.stdout
    assert not [s for s in SECRETS if s in shown]


def _leaky(context: Context) -> Result:
    return problem(
        "cannot reach https://u:k3y-s3cret@hub.local/api",
        "curl -H 'Authorization: Bearer k3y-s3cret' https://hub.local/api",
        url="https://hub.local/api?api_key=k3y-s3cret",
        headers=["Authorization: Bearer k3y-s3cret"],
    )


def _crashing(context: Context) -> Result:
    raise ConnectionError("https://u:k3y-s3cret@hub.local refused the connection")


def test_any_check_is_redacted_by_the_runner_even_one_that_crashes() -> None:
    checks = [Check("x.leaky", "x", "leaky", _leaky), Check("x.crash", "x", "crash", _crashing)]
    findings = run_checks(checks, Context(environ={}))
    report = Report(findings, Context(environ={}), "now", 0.0)
    for name, text in _formats(report).items():
        assert "k3y-s3cret" not in text and "hub.local" in text, name
    found = {f.id: f for f in findings}
    assert found["x.leaky"].evidence["url"] == "https://hub.local/api?api_key=***"
    assert found["x.crash"].status == "error" and "u:" not in found["x.crash"].message
