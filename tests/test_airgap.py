"""One offline table: what the producers set, what install-offline.sh writes, what the systemd
unit carries and what the doctor demands are the same list."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offline import airgap
from offline.data import workspace
from offline.doctor.checks import frameworks, posture
from offline.doctor.context import Context
from offline.labeling import server

REPO = Path(__file__).resolve().parents[1]


def _assignments(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(\S*)$", text, re.MULTILINE))


def test_the_installer_writes_the_table_the_doctor_checks() -> None:
    script = (REPO / "scripts" / "install-offline.sh").read_text()
    heredoc = script[script.index('cat >"$PREFIX/etc/offline.env.tmp" <<EOF') :]
    written = _assignments(heredoc[: heredoc.index("\nEOF\n")])
    assert {k: written[k] for k in airgap.OFFLINE_ENV if k in written} == airgap.OFFLINE_ENV
    assert posture.REQUIRED.keys() == airgap.OFFLINE_ENV.keys()
    for name, value in airgap.OFFLINE_ENV.items():
        assert value in posture.REQUIRED[name]  # what we set is what the doctor accepts


def test_the_serve_unit_carries_the_table() -> None:
    unit = (REPO / "deploy" / "serve" / "deepseek-serve.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("Environment="))
    carried = dict(item.split("=", 1) for item in line.removeprefix("Environment=").split())
    assert carried == airgap.OFFLINE_ENV


def test_every_producer_starts_its_processes_with_the_table() -> None:
    for env in (workspace.OFFLINE_ENV, server.OFFLINE_ENV, frameworks._PROBE_ENV):
        assert airgap.OFFLINE_ENV.items() <= env.items()
    assert airgap.LABEL_STUDIO_ENV.items() <= server.OFFLINE_ENV.items()
    for name, value in airgap.LABEL_STUDIO_ENV.items():
        assert value in posture.LABEL_STUDIO[name]


def test_go_offline_sets_what_is_unset_and_keeps_what_the_user_chose() -> None:
    env = {k: v for k, v in os.environ.items() if k not in airgap.OFFLINE_ENV}
    env["WANDB_MODE"] = "offline"  # the user's choice, also off
    code = (
        "import json, os; from offline.airgap import go_offline; go_offline();"
        " print(json.dumps({k: os.environ[k] for k in ('HF_HUB_OFFLINE', 'WANDB_MODE')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '{"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}'


def test_the_doctor_passes_the_table_and_flags_each_variable_missing() -> None:
    def results(environ: dict[str, str]) -> dict[str, str]:
        context = Context(environ=environ)
        return {c.id: c.run(context).status for c in posture.checks(context)}

    good = results(dict(airgap.OFFLINE_ENV))
    assert set(good.values()) == {"pass"}, good
    for name in airgap.OFFLINE_ENV:
        env = {k: v for k, v in airgap.OFFLINE_ENV.items() if k != name}
        bad = [check for check, status in results(env).items() if status != "pass"]
        assert len(bad) == 1 and name in bad[0], (name, bad)


@given(st.ip_addresses())
def test_loopback_is_what_the_ip_module_says(ip: object) -> None:
    import ipaddress

    address = ipaddress.ip_address(str(ip))
    assert airgap.is_loopback(str(ip)) == address.is_loopback


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.9.9.9", "::1"])
def test_loopback_names(host: str) -> None:
    assert airgap.is_loopback(host)
    assert not airgap.is_loopback(f"{host}.example.org")


def test_shipped_assets_are_found_in_one_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    places = airgap.shipped_places("deploy")
    assert [why for why, _ in places] == ["the source checkout", "the bundle", "the install prefix"]
    assert airgap.find_shipped("deploy") == REPO / "deploy"
    monkeypatch.setenv("DEEPSEEK_OFFLINE_DEPLOY_DIR", str(tmp_path))
    assert airgap.find_shipped("deploy") == tmp_path  # the override first
    assert airgap.find_shipped("deploy", marker="edge/run_edge.py") == REPO / "deploy"
    assert airgap.shipped_places("deploy", with_override=False) == places
