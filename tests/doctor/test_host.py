"""The doctor's one subprocess runner: output captured, and at the timeout the whole process
group is gone, grandchildren included."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from offline.doctor.host import canonical, run


@pytest.mark.slow
def test_a_hung_command_and_its_grandchild_are_killed_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo started; wait"
    started = time.monotonic()
    ran = run(["sh", "-c", script], timeout=1.0)
    assert ran.code is None and "started" in ran.out
    assert time.monotonic() - started < 10  # the grandchild did not hold the pipes open
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"grandchild {grandchild} outlived the timeout")


def test_exit_codes_output_and_a_missing_program() -> None:
    ran = run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (ran.code, ran.out, ran.err, ran.ok) == (3, "out\n", "err\n", False)
    assert ran.last_error_line == "err"
    missing = run(["/nonexistent/tool"], timeout=10)
    assert missing.code == 127 and not missing.started
    assert "cannot run /nonexistent/tool" in missing.err


@given(st.lists(st.sampled_from(["a", "B", "-", "_", ".", "9"]), min_size=1, max_size=12))
def test_canonical_names_compare_as_pep_503(parts: list[str]) -> None:
    name = "".join(parts)
    once = canonical(name)
    assert canonical(once) == once and once == once.lower()
    assert "_" not in once and "." not in once and "--" not in once
    assert canonical(name.upper().replace("-", "_")) == once
