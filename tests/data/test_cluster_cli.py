"""``offline cluster``: what a node is started with, and the mistakes it names before Ray runs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from offline.cli import app
from offline.data.cluster import OFFLINE_ENV, PORTS, WORKER_PORTS, node_env, start_command

runner = CliRunner()


def test_a_node_starts_offline_on_fixed_ports() -> None:
    head = start_command(head=True, address=None, node_ip="10.0.5.1", num_cpus=4, temp_dir=None)
    assert head[1:3] == ["start", "--disable-usage-stats"]
    assert "--include-dashboard=false" in head and "--port=6379" in head
    node = start_command(
        head=False, address="10.0.5.1:6379", node_ip="10.0.5.2", num_cpus=None, temp_dir=None
    )
    assert "--include-dashboard=false" not in node and not any(
        a.startswith("--port=") for a in node
    )
    for argv in (head, node):
        assert f"--min-worker-port={WORKER_PORTS[0]}" in argv
        assert f"--node-manager-port={PORTS['node_manager'][1]}" in argv
    env = node_env(Path("/t/token"), Path("/t/home"))
    assert {k: env[k] for k in OFFLINE_ENV} == OFFLINE_ENV
    assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == "/t/token" and env["HOME"] == "/t/home"


def test_start_names_a_missing_role_and_a_missing_token(tmp_path: Path) -> None:
    neither = runner.invoke(app, ["cluster", "start"])
    assert neither.exit_code != 0 and "--head" in str(neither.exception or neither.output)
    token = tmp_path / "absent-token"
    join = runner.invoke(
        app, ["cluster", "start", "--address", "10.0.5.1:6379", "--token-file", str(token)]
    )
    assert join.exit_code != 0
    assert "cluster token" in str(join.exception) and str(token) in str(join.exception)
    assert not token.exists()


def test_ports_are_listed_for_the_firewall() -> None:
    out = runner.invoke(app, ["cluster", "ports", "--json"])
    assert out.exit_code == 0
    ports = json.loads(out.output)
    assert ports["gcs"] == 6379 and ports["workers"] == list(WORKER_PORTS)
    assert len(set(v for k, v in ports.items() if k != "workers")) == len(PORTS)
