"""The run's own check: a process a test leaves behind fails the run, is named, and is killed;
a run that leaves nothing passes. Checked on an inner pytest run of small test files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LEAKS = """
import subprocess

def test_leaves_a_daemon(tmp_path):
    # detached, in a session of its own, as a daemonizing server would be
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    (tmp_path.parent.parent / "leaked.pid").write_text(str(proc.pid))

def test_cleans_up():
    proc = subprocess.Popen(["sleep", "600"])
    proc.kill()
    proc.wait()
"""

CLEAN = """
import subprocess

def test_cleans_up():
    with subprocess.Popen(["sleep", "600"]) as proc:
        proc.terminate()
"""


def _inner(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "DEEPSEEK_OFFLINE_TEST_RUN"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.fixtures.processes",
         "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "base"), "--rootdir",
         str(tmp_path), str(tmp_path / "test_inner.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
def test_a_process_left_behind_fails_the_run_and_is_killed(tmp_path: Path) -> None:
    proc = _inner(tmp_path, LEAKS)
    pid = int((tmp_path / "leaked.pid").read_text())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout  # every test passed: the leak alone fails the run
    assert "still alive after it" in proc.stdout
    assert f"pid {pid} left by test_inner.py::test_leaves_a_daemon: sleep 600" in proc.stdout
    assert "test_cleans_up" not in proc.stdout.split("still alive after it")[1]
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


@pytest.mark.slow
def test_a_run_that_ends_what_it_starts_passes(tmp_path: Path) -> None:
    proc = _inner(tmp_path, CLEAN)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "still alive" not in proc.stdout
