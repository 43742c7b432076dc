"""``offline label`` without a server: the errors a user meets first, with their fixes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from offline.errors import NetworkError


def offline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "offline", *args], capture_output=True, text=True)


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
