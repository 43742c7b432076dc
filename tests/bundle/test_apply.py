"""Differential bundles across the gap: build v2 against v1's manifest, apply it on the isolated
host onto what v1 installed, and install the result."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offline.bundle.apply import apply_diff
from offline.bundle.build import build
from offline.errors import ConfigError, IntegrityError
from tests.bundle.test_tamper import bash_install, flip_byte, python_verify
from tests.fixtures.specs import SpecFactory

V2_REQUIREMENTS = "alpha\ndelta\nbeta==1.0\n"


def _bundles(make_spec: SpecFactory, tmp_path: Path, key: Path) -> tuple[Path, Path, Path]:
    """v1 (full), v2 (full, for comparison) and the v2 diff against v1."""
    cache = tmp_path / "cache"
    v1 = tmp_path / "v1"
    build(make_spec(), v1, key=key, cache_dir=cache)
    v2_spec = make_spec(V2_REQUIREMENTS, version="2.0")
    v2 = tmp_path / "v2"
    build(v2_spec, v2, key=key, cache_dir=cache)
    diff = tmp_path / "v2-diff"
    build(v2_spec, diff, key=key, since=v1 / "manifest.json", cache_dir=cache)
    return v1, v2, diff


def _files(bundle: Path) -> dict[str, bytes]:
    skip = {"manifest.json", "manifest.sig", "SHA256SUMS"}
    return {
        str(p.relative_to(bundle)): p.read_bytes()
        for p in bundle.rglob("*")
        if p.is_file() and p.name not in skip
    }


@pytest.mark.slow
def test_applied_diff_equals_the_full_bundle(
    make_spec: SpecFactory,
    tmp_path: Path,
    signing_key: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Reproducible builds: v2 and the diff are built seconds apart but must carry the same SBOM.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    v1, v2, diff = _bundles(make_spec, tmp_path, signing_key[0])
    assert not (diff / "wheels" / "alpha-1.0-py3-none-any.whl").exists()  # unchanged: not carried
    base = tmp_path / "installed"
    shutil.copytree(v1, base)

    result = apply_diff(diff, base, pubkey=signing_key[1])
    assert (result.base_version, result.version) == ("1.0", "2.0")
    assert _files(base) == _files(v2)  # the same payload a full v2 bundle carries
    assert not (base / "wheels" / "beta-2.0-py3-none-any.whl").exists()
    assert python_verify(base, signing_key[1]).returncode == 0
    sums = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=base)
    assert sums.returncode == 0
    assert not [p for p in tmp_path.iterdir() if ".applying-" in p.name or ".old-" in p.name]


@pytest.mark.slow
def test_diff_for_another_base_is_refused(
    make_spec: SpecFactory, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    _, _, diff = _bundles(make_spec, tmp_path, signing_key[0])
    other = tmp_path / "other"
    build(make_spec(version="1.1"), other, key=signing_key[0], cache_dir=tmp_path / "cache")
    before = _files(other) | {"m": (other / "manifest.json").read_bytes()}

    with pytest.raises(IntegrityError, match=r"diff against test 1\.0 .* holds test 1\.1"):
        apply_diff(diff, other, pubkey=signing_key[1])
    assert _files(other) | {"m": (other / "manifest.json").read_bytes()} == before

    cmd = [sys.executable, "-m", "offline", "bundle", "apply-diff", str(diff)]
    cli = subprocess.run(
        [*cmd, "--base", str(other), "--pubkey", str(signing_key[1])],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 7 and "holds test 1.1" in cli.stderr and "fix:" in cli.stderr


@pytest.mark.slow
def test_full_bundle_is_not_a_diff(
    make_spec: SpecFactory, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    v1, v2, _ = _bundles(make_spec, tmp_path, signing_key[0])
    with pytest.raises(ConfigError, match="full bundle, not a diff"):
        apply_diff(v2, v1, pubkey=signing_key[1])


@pytest.mark.slow
def test_changed_base_file_is_refused(
    make_spec: SpecFactory, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    v1, _, diff = _bundles(make_spec, tmp_path, signing_key[0])
    flip_byte(v1 / "wheels" / "alpha-1.0-py3-none-any.whl")
    with pytest.raises(IntegrityError, match=r"alpha-1\.0-py3-none-any\.whl"):
        apply_diff(diff, v1, pubkey=signing_key[1])


@pytest.mark.slow
def test_install_v1_apply_v2_diff_install_again(
    make_spec: SpecFactory, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    """The operator's path: the trusted key recorded at install time checks the diff."""
    v1, _, diff = _bundles(make_spec, tmp_path, signing_key[0])
    prefix = tmp_path / "prefix"
    assert bash_install(v1, signing_key[1], prefix).returncode == 0
    venv_python = prefix / "envs" / "app" / "bin" / "python"
    version = [str(venv_python), "-c", "import beta; print(beta.VERSION)"]
    assert subprocess.run(version, capture_output=True, text=True).stdout.strip() == "2.0"

    refused = bash_install(diff, signing_key[1], tmp_path / "elsewhere")
    assert refused.returncode == 3 and "apply-diff" in refused.stderr

    cmd = [sys.executable, "-m", "offline", "bundle", "apply-diff", str(diff), "--base"]
    applied = subprocess.run([*cmd, str(prefix)], capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    assert "1.0 -> 2.0" in applied.stdout

    again = bash_install(prefix / "bundle", signing_key[1], prefix)
    assert again.returncode == 0, again.stderr
    assert subprocess.run(version, capture_output=True, text=True).stdout.strip() == "1.0"
    installed = json.loads((prefix / "installed.json").read_text())
    assert installed["bundle"] == "test 2.0"
