"""The CLI as a user meets it: real processes, exit codes, stdout/stderr."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.specs import SpecFactory, write_safetensors

BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offline", *args], capture_output=True, text=True, cwd=cwd
    )


def test_help_lists_groups_and_imports_no_torch() -> None:
    probe = (
        "import sys\nfrom offline.cli import main\nsys.argv = ['offline', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'deepspeed', 'tvm', 'transformers') "
        "if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "bundle" in proc.stdout
    assert "HEAVY []" in proc.stdout


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("deepseek-offline ")


def test_console_scripts_exist() -> None:
    assert (BIN / "offline").is_file()
    doctor = subprocess.run([BIN / "deepseek-doctor", "--list"], capture_output=True, text=True)
    assert doctor.returncode == 0 and "sys.arch" in doctor.stdout


def test_bad_spec_exits_3_with_every_unknown_key(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(
        '[bundle]\nname = "x"\nversion = "1"\nflavour = 1\n'
        '[target]\nplatforms = ["manylinux_2_28_x86_64"]\ncolour = 2\n'
    )
    proc = run("bundle", "build", "--spec", str(spec), "--out", str(tmp_path / "o"))
    assert proc.returncode == 3
    assert "bundle.flavour" in proc.stderr and "target.colour" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_usage_error_exits_2() -> None:
    assert run("bundle", "build", "--no-such-option").returncode == 2


@pytest.mark.slow
def test_build_json_summary(make_spec: SpecFactory, tmp_path: Path) -> None:
    spec, out = make_spec(), tmp_path / "out"
    cache = str(tmp_path / "cache")
    proc = run(
        "bundle", "build", "--spec", str(spec), "--out", str(out), "--cache-dir", cache, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["envs"] == {"app": 4} and summary["stats"]["downloaded_files"] == 4
    assert Path(summary["out"]) == out.resolve()
    again = run("bundle", "build", "--spec", str(spec), "--out", str(out), "--cache-dir", cache)
    assert again.returncode == 0 and "0 files (0.0 MB), 4 from cache" in again.stdout


@pytest.mark.slow
def test_build_pattern_typo_exits_3_and_fat32_warning(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    spec = make_spec(extra='[[model]]\nname = "m"\npath = "m"\nexclude = ["*.bim"]\n')
    write_safetensors(spec.parent / "m" / "model.safetensors")
    out, cache = tmp_path / "out", str(tmp_path / "cache")
    proc = run("bundle", "build", "--spec", str(spec), "--out", str(out), "--cache-dir", cache)
    assert proc.returncode == 3 and "exclude '*.bim'" in proc.stderr and "'m'" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    spec.write_text(spec.read_text().replace('exclude = ["*.bim"]', 'exclude = ["*.bin"]'))
    (spec.parent / "m" / "pytorch_model.bin").write_bytes(b"pickle")
    args = ["--spec", str(spec), "--out", str(out), "--cache-dir", cache, "--json"]
    proc = run("bundle", "build", *args, "--max-part-size", "4GiB")
    assert proc.returncode == 0, proc.stderr
    (warning,) = json.loads(proc.stdout)["warnings"]
    assert f"warning: {warning}" in proc.stderr and "FAT32" in warning and "3.9GiB" in warning


def test_keygen_is_private_and_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    assert run("bundle", "keygen", "--out", str(key)).returncode == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / "k.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = key.read_bytes()
    again = run("bundle", "keygen", "--out", str(key))
    assert again.returncode == 3 and "refusing to overwrite" in again.stderr
    assert key.read_bytes() == before
