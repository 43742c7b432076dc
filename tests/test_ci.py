"""``.ci/run``: lint comes first, and a lint error fails the run before any test runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_MAKE = """#!/bin/sh
echo "make $*" >> "$CALLS"
[ "$1" != lint ] || exit "$LINT_RC"
"""


def _ci(tmp_path: Path, lint_rc: int) -> tuple[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "make").write_text(FAKE_MAKE)
    (bin_dir / "make").chmod(0o755)
    calls = tmp_path / f"calls-{lint_rc}"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls)}
    env["LINT_RC"] = str(lint_rc)
    proc = subprocess.run(["bash", str(ROOT / ".ci/run")], env=env, timeout=60)
    return proc.returncode, calls.read_text().splitlines()


def test_ci_lints_then_tests_and_a_lint_error_fails_it(tmp_path: Path) -> None:
    assert _ci(tmp_path, 0) == (0, ["make lint", "make test"])
    rc, calls = _ci(tmp_path, 2)
    assert rc != 0 and calls == ["make lint"]
