"""Replay and downgrade: an older bundle, however validly signed, does not replace a newer one
unless the operator says so; the doctor shows what is installed, when it was built, who signed it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version

from offline.bundle.installed import check, refusal, version_key
from offline.doctor.checks import posture
from offline.doctor.context import Context
from offline.doctor.runner import diagnose
from offline.errors import DowngradeError
from tests.bundle.test_tamper import INSTALLER, _resign, _rewrite_manifest
from tests.fixtures.specs import SignedBundle, target_python

DOWNGRADE_EXIT = DowngradeError.exit_code


def _release(signed: SignedBundle, dest: Path, version: str, created: str) -> Path:
    """The pristine bundle as the vendor would ship another release: its own version and build
    time, signed again with the same trusted key."""
    bundle = signed.copy(dest)

    def edit(manifest: dict[str, object]) -> None:
        manifest["bundle"] = {**manifest["bundle"], "version": version}  # type: ignore[dict-item]
        manifest["created"] = created

    _rewrite_manifest(bundle, edit)
    _resign(bundle, signed.key)
    return bundle


def _install(
    bundle: Path, pub: Path, prefix: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", str(INSTALLER), str(bundle), "--pubkey", str(pub), "--prefix", str(prefix)]
    cmd += ["--python", target_python(), "--no-doctor", *extra]
    return subprocess.run(cmd, capture_output=True, text=True)


def _der_sha256(pub: Path) -> str:
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(pub), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    return hashlib.sha256(der).hexdigest()


@pytest.mark.integration
def test_an_older_signed_bundle_does_not_replace_a_newer_one(
    signed_bundle: SignedBundle, tmp_path: Path
) -> None:
    pub, prefix = signed_bundle.pub, tmp_path / "opt"
    new = _release(signed_bundle, tmp_path / "v2.0", "2.0", "2026-06-01T00:00:00Z")
    old = _release(signed_bundle, tmp_path / "v1.10", "1.10", "2026-07-01T00:00:00Z")
    rebuilt = _release(signed_bundle, tmp_path / "v2.0-early", "2.0", "2026-05-01T00:00:00Z")

    done = _install(new, pub, prefix)
    assert done.returncode == 0, done.stderr
    record = json.loads((prefix / "installed.json").read_text())
    assert (record["name"], record["version"]) == ("test", "2.0")
    assert record["created"] == "2026-06-01T00:00:00Z"
    assert record["signer_sha256"] == _der_sha256(pub)
    kept = (prefix / "installed.json").read_bytes(), (prefix / "bundle/manifest.json").read_bytes()

    for bundle, words in ((old, "its version is older"), (rebuilt, "same version, built earlier")):
        refused = _install(bundle, pub, prefix)
        assert refused.returncode == DOWNGRADE_EXIT, refused.stderr
        assert "test 2.0 (built 2026-06-01T00:00:00Z)" in refused.stderr
        assert words in refused.stderr and "--allow-downgrade" in refused.stderr
        assert (prefix / "installed.json").read_bytes() == kept[0]
        assert (prefix / "bundle/manifest.json").read_bytes() == kept[1]
        assert not (prefix / ".bundle.incoming").exists()

    again = _install(new, pub, prefix)  # the same bundle again: finishing or repairing
    assert again.returncode == 0, again.stderr

    rolled = _install(old, pub, prefix, "--allow-downgrade")
    assert rolled.returncode == 0, rolled.stderr
    assert "downgrading on purpose" in rolled.stderr
    assert json.loads((prefix / "installed.json").read_text())["version"] == "1.10"

    env = {name: good[0] for name, good in posture.REQUIRED.items()}
    found = {
        f.id: f
        for f in diagnose(Context.create(prefix / "bundle", environ=env), only=["bundle"]).findings
    }
    shown = found["bundle.installed"]
    assert shown.status == "pass", shown
    assert "test 1.10, built 2026-07-01T00:00:00Z" in shown.message
    assert f"signed by key sha256:{_der_sha256(pub)}" in shown.message
    assert shown.evidence["signer_sha256"] == _der_sha256(pub)


def test_the_standalone_check_runs_without_the_toolkit(tmp_path: Path) -> None:
    """What install-offline.sh runs: python3 -I -S, nothing but the standard library."""
    helper = Path(__file__).resolve().parents[2] / "offline" / "bundle" / "installed.py"
    (tmp_path / "bundle").mkdir()
    manifest = {"bundle": {"name": "x", "version": "1.2"}, "created": "2026-01-01T00:00:00Z"}
    (tmp_path / "bundle" / "manifest.json").write_text(json.dumps(manifest))
    older = tmp_path / "older.json"
    older.write_text(json.dumps({**manifest, "bundle": {"name": "x", "version": "1.2rc1"}}))
    python = shutil.which("python3") or target_python()
    done = subprocess.run(
        [python, "-I", "-S", str(helper), "check", str(tmp_path), str(older)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == DOWNGRADE_EXIT, done.stderr
    assert "x 1.2rc1" in done.stderr and "x 1.2 " in done.stderr


_RELEASE = st.lists(st.integers(0, 12), min_size=1, max_size=4)
_VERSIONS = st.builds(
    lambda release, pre, post, dev: ".".join(map(str, release)) + pre + post + dev,
    _RELEASE,
    st.sampled_from(["", "a1", "b2", "rc1", "rc10", "a0", ".rc2", "-beta3"]),
    st.sampled_from(["", ".post1", ".post0", "-2", ".post12"]),
    st.sampled_from(["", ".dev0", ".dev3"]),
)


@settings(max_examples=400, deadline=None)
@given(a=_VERSIONS, b=_VERSIONS)
def test_versions_are_ordered_as_pep_440_orders_them(a: str, b: str) -> None:
    ka, kb = version_key(a), version_key(b)
    assert ka is not None and kb is not None
    assert (ka < kb) == (Version(a) < Version(b))
    assert (ka == kb) == (Version(a) == Version(b))


def _identity(version: str, created: str | None, name: str = "site") -> dict[str, object]:
    return {"name": name, "version": version, "created": created}


@pytest.mark.parametrize(
    ("installed", "candidate", "refused"),
    [
        (("1.10", "2026-01-02T00:00:00Z"), ("1.9", "2026-03-01T00:00:00Z"), True),
        (("1.9", "2026-03-01T00:00:00Z"), ("1.10", "2026-01-02T00:00:00Z"), False),  # backport
        (("2.0", "2026-03-01T00:00:00Z"), ("2.0", "2026-02-01T00:00:00Z"), True),
        (("2.0", "2026-03-01T00:00:00Z"), ("2.0.0", "2026-03-01T00:00:00Z"), False),
        (("2.0", "2026-03-01T00:00:00Z"), ("2.0rc1", "2026-04-01T00:00:00Z"), True),
        (("weekly", "2026-03-01T00:00:00Z"), ("nightly", "2026-02-01T00:00:00Z"), True),
        (("weekly", "2026-03-01T00:00:00Z"), ("nightly", "2026-04-01T00:00:00Z"), False),
        (("2.0", None), ("2.0", "2026-04-01T00:00:00Z"), False),
    ],
)
def test_what_counts_as_older(
    installed: tuple[str, str | None], candidate: tuple[str, str | None], refused: bool
) -> None:
    assert (refusal(_identity(*installed), _identity(*candidate)) is not None) == refused


def test_another_bundle_name_is_ordered_by_build_time() -> None:
    installed = _identity("9.0", "2026-03-01T00:00:00Z", name="cuda")
    assert refusal(installed, _identity("1.0", "2026-04-01T00:00:00Z")) is None
    assert refusal(installed, _identity("10.0", "2026-02-01T00:00:00Z")) is not None
    assert refusal(None, _identity("0.1", None)) is None


@pytest.mark.integration
def test_an_install_stopped_after_the_swap_still_guards_against_replay(
    signed_bundle: SignedBundle, tmp_path: Path
) -> None:
    pub, prefix = signed_bundle.pub, tmp_path / "opt"
    first = _install(
        _release(signed_bundle, tmp_path / "a", "2.0", "2026-06-01T00:00:00Z"), pub, prefix
    )
    assert first.returncode == 0, first.stderr
    newer = _release(signed_bundle, tmp_path / "b", "3.0", "2026-08-01T00:00:00Z")
    stopped = _install(newer, pub, prefix, "--env", "no-such-env")  # stops after the swap
    assert stopped.returncode == 3, stopped.stderr
    record = json.loads((prefix / "installed.json").read_text())
    assert (record["version"], record["complete"]) == ("3.0", False)

    replay = _release(signed_bundle, tmp_path / "c", "2.5", "2026-07-01T00:00:00Z")
    refused = _install(replay, pub, prefix)
    assert refused.returncode == DOWNGRADE_EXIT and "test 3.0" in refused.stderr

    env = {name: good[0] for name, good in posture.REQUIRED.items()}
    found = diagnose(Context.create(prefix / "bundle", environ=env), only=["bundle"]).findings
    shown = next(f for f in found if f.id == "bundle.installed")
    assert shown.status != "pass" and "did not finish" in shown.message


def test_the_bundle_in_place_counts_even_when_the_record_is_older(tmp_path: Path) -> None:
    """A record left from an earlier install (or edited by hand) cannot vouch for a replay."""
    (tmp_path / "bundle").mkdir()
    in_place = {"bundle": {"name": "x", "version": "3.0"}, "created": "2026-03-01T00:00:00Z"}
    (tmp_path / "bundle" / "manifest.json").write_text(json.dumps(in_place))
    (tmp_path / "installed.json").write_text(
        json.dumps({"name": "x", "version": "1.0", "created": 5})
    )
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps({**in_place, "bundle": {"name": "x", "version": "2.0"}}))
    with pytest.raises(DowngradeError, match=r"x 3\.0"):
        check(tmp_path, replay)
    assert check(tmp_path, replay, allow_downgrade=True).startswith("warning: downgrading")
