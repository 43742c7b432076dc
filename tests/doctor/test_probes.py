"""The doctor's probe programs are files under offline/doctor/probes/, run as files."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from offline.doctor.checks import accelerators, frameworks, python

DOCTOR = Path(__file__).resolve().parents[2] / "offline" / "doctor"
PROGRAM_LINES = ("import ", "def ", "try:")  # how a Python program's top-level lines begin
PROBES = sorted(p for p in (DOCTOR / "probes").glob("*.py") if p.name != "__init__.py")


def test_each_probe_file_is_the_one_a_check_runs() -> None:
    used = {frameworks.PROBE, accelerators.TORCH_BUILD, python.PYTHON_ENV}
    assert used == set(PROBES)


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.name)
def test_a_probe_imports_only_the_standard_library_at_module_level(probe: Path) -> None:
    tree = ast.parse(probe.read_text())
    roots = {
        (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert roots - {"__future__"} <= sys.stdlib_module_names, roots - sys.stdlib_module_names


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=60, check=True
    )


def test_the_python_env_probe_runs_isolated_and_prints_facts() -> None:
    facts = json.loads(_run("-I", str(python.PYTHON_ENV), "0").stdout)
    assert facts["version"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert facts["prefix"] == sys.prefix
    assert "pip" in facts["dists"]
    assert facts["record_mismatches"] == {}


def test_the_torch_build_probe_runs_isolated_and_prints_the_build() -> None:
    build = json.loads(_run("-I", str(accelerators.TORCH_BUILD)).stdout.splitlines()[-1])
    assert build["version"].startswith("2.13.0")
    assert set(build) == {"version", "cuda", "arch_list", "nccl"}


def test_the_frameworks_probe_runs_isolated_and_prints_a_marked_record() -> None:
    done = _run("-I", str(frameworks.PROBE), "probe", "import", "tomllib", "no-such-dist")
    assert frameworks.parse(done.stdout) == {"version": None}
    missing = _run("-I", str(frameworks.PROBE), "probe", "import", "no_such_module", "x")
    assert frameworks.parse(missing.stdout) == {"missing": True}


def _program_strings(path: Path) -> list[str]:
    """Where ``path`` passes ``-c`` in an argv, or holds a Python program in a string literal."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple) and any(
            isinstance(e, ast.Constant) and e.value == "-c" for e in node.elts
        ):
            found.append(f"{path.name}:{node.lineno}: an argv with -c")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            lines = node.value.splitlines()
            if len(lines) > 1 and any(line.startswith(PROGRAM_LINES) for line in lines):
                found.append(f"{path.name}:{node.lineno}: a program in a string")
    return found


def test_no_probe_program_is_left_in_a_string() -> None:
    found = [hit for path in sorted(DOCTOR.rglob("*.py")) for hit in _program_strings(path)]
    assert found == []


def test_the_program_string_finder_finds_the_old_kind(tmp_path: Path) -> None:
    old = tmp_path / "old.py"
    old.write_text('P = """\\nimport json, torch\\nprint(1)\\n"""\nA = ["python", "-c", P]\n')
    assert len(_program_strings(old)) == 2
