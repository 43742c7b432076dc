"""The tamper suite: every bad bundle is refused by both verifiers, by name, and nothing is
installed. The bash verifier is scripts/install-offline.sh (openssl + sha256sum); the Python one
is ``offline bundle verify``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from offline.bundle.build import build
from offline.bundle.sign import keygen, load_private_key, sign
from offline.fsutil import sha256_file
from tests.fixtures.specs import SignedBundle, SpecFactory, target_python

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "scripts" / "install-offline.sh"
INTEGRITY_EXIT = 7


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.unlink()  # never write through a hard link
    path.write_bytes(bytes(data))


def python_verify(bundle: Path, pub: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "offline", "bundle", "verify", str(bundle), "--pubkey", str(pub)]
    return subprocess.run([*cmd, *extra], capture_output=True, text=True)


def bash_install(bundle: Path, pub: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", str(INSTALLER), str(bundle), "--pubkey", str(pub), "--prefix", str(prefix)]
    cmd += ["--python", target_python(), "--no-doctor"]
    return subprocess.run(cmd, capture_output=True, text=True)


def assert_nothing_installed(prefix: Path) -> None:
    assert not (prefix / "envs").exists()
    assert not (prefix / "bundle").exists()
    assert not (prefix / "installed.json").exists()


def _resign(bundle: Path, key: Path) -> None:
    """What a forger with their own key does after editing the manifest."""
    raw = (bundle / "manifest.json").read_bytes()
    (bundle / "manifest.sig").write_bytes(sign(raw, load_private_key(key)))


def _rewrite_manifest(bundle: Path, edit: Callable[[dict[str, object]], None]) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2) + "\n")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])


def _extra(path: Path) -> None:
    path.write_bytes(b"not from the connected side")


# (case id, tamper(bundle, tmp_path), words the refusal must contain)
Tamper = Callable[[Path, Path], None]
FILE_CASES: list[tuple[str, Tamper, str]] = [
    ("wheel", lambda b, _: flip_byte(b / "wheels/beta-2.0-py3-none-any.whl"), "beta-2.0"),
    ("lock", lambda b, _: flip_byte(b / "locks/app.lock"), "locks/app.lock"),
    ("index", lambda b, _: flip_byte(b / "simple/beta/index.html"), "simple/beta/index.html"),
    ("weights", lambda b, _: flip_byte(b / "models/tiny/model.safetensors"), "model.safetensors"),
    ("sbom", lambda b, _: flip_byte(b / "sbom.cdx.json"), "sbom.cdx.json"),
    ("truncated", lambda b, _: _truncate(b / "files/data/blob.bin"), "files/data/blob.bin"),
    ("missing", lambda b, _: (b / "wheels/alpha-1.0-py3-none-any.whl").unlink(), "alpha-1.0"),
    ("extra", lambda b, _: _extra(b / "wheels/evil-1.0-py3-none-any.whl"), "evil-1.0"),
    ("symlink", lambda b, _: (b / "wheels/x.whl").symlink_to("/etc/passwd"), "wheels/x.whl"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "tamper", "word"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_tampered_file_is_named_by_both_verifiers(
    signed_bundle: SignedBundle, tmp_path: Path, case: str, tamper: Tamper, word: str
) -> None:
    bundle = signed_bundle.copy(tmp_path / "bundle")
    tamper(bundle, tmp_path)

    checked = python_verify(bundle, signed_bundle.pub)
    assert checked.returncode == INTEGRITY_EXIT, checked.stdout + checked.stderr
    assert word in checked.stderr and "FAILED" in checked.stderr

    installed = bash_install(bundle, signed_bundle.pub, tmp_path / "prefix")
    assert installed.returncode == INTEGRITY_EXIT, installed.stdout + installed.stderr
    assert word in installed.stderr
    assert_nothing_installed(tmp_path / "prefix")


def _forged_with_own_key(bundle: Path, tmp: Path) -> None:
    key, pub = keygen(tmp / "forger" / "key.pem")
    _rewrite_manifest(bundle, lambda m: m.update(created="2030-01-01T00:00:00Z"))
    _resign(bundle, key)
    (bundle / "manifest.pub").write_bytes(pub.read_bytes())


def _forged_keeping_trusted_pub(bundle: Path, tmp: Path) -> None:
    key, _ = keygen(tmp / "forger" / "key.pem")
    _rewrite_manifest(bundle, lambda m: m.update(created="2030-01-01T00:00:00Z"))
    _resign(bundle, key)


def _manifest_edited(bundle: Path, _: Path) -> None:
    """The hash of a swapped wheel written into the manifest, without a new signature."""
    wheel = bundle / "wheels/beta-2.0-py3-none-any.whl"
    flip_byte(wheel)
    new = sha256_file(wheel)

    def edit(m: dict[str, object]) -> None:
        for f in m["files"]:  # type: ignore[attr-defined]
            if f["path"] == "wheels/beta-2.0-py3-none-any.whl":
                f["sha256"] = new

    _rewrite_manifest(bundle, edit)


def _unsigned(bundle: Path, _: Path) -> None:
    (bundle / "manifest.sig").unlink()


SIGNATURE_CASES: list[tuple[str, Tamper, str]] = [
    ("forged-own-key", _forged_with_own_key, "different key"),
    ("forged-trusted-pub", _forged_keeping_trusted_pub, "does not match manifest.json"),
    ("manifest-edited", _manifest_edited, "does not match manifest.json"),
    ("unsigned", _unsigned, "not signed"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "tamper", "word"), SIGNATURE_CASES, ids=[c[0] for c in SIGNATURE_CASES]
)
def test_forged_or_unsigned_manifest_is_refused(
    signed_bundle: SignedBundle, tmp_path: Path, case: str, tamper: Tamper, word: str
) -> None:
    bundle = signed_bundle.copy(tmp_path / "bundle")
    tamper(bundle, tmp_path)

    checked = python_verify(bundle, signed_bundle.pub)
    assert checked.returncode == INTEGRITY_EXIT
    assert word in checked.stderr

    installed = bash_install(bundle, signed_bundle.pub, tmp_path / "prefix")
    assert installed.returncode == INTEGRITY_EXIT, installed.stderr
    assert word in installed.stderr
    assert_nothing_installed(tmp_path / "prefix")


def test_untrusted_key_is_refused_even_for_a_pristine_bundle(
    signed_bundle: SignedBundle, tmp_path: Path
) -> None:
    """The operator's trusted key decides; the bundle's own key proves nothing."""
    _, other = keygen(tmp_path / "other" / "key.pem")
    bundle = signed_bundle.copy(tmp_path / "bundle")
    checked = python_verify(bundle, other)
    assert checked.returncode == INTEGRITY_EXIT and "different key" in checked.stderr
    installed = bash_install(bundle, other, tmp_path / "prefix")
    assert installed.returncode == INTEGRITY_EXIT and "different key" in installed.stderr
    assert_nothing_installed(tmp_path / "prefix")

    (bundle / "manifest.pub").unlink()  # no embedded key: the signature check alone refuses
    checked = python_verify(bundle, other)
    assert checked.returncode == INTEGRITY_EXIT and "does not match" in checked.stderr
    installed = bash_install(bundle, other, tmp_path / "prefix")
    assert installed.returncode == INTEGRITY_EXIT and "does not match" in installed.stderr


def test_python_verifier_reports_every_problem_at_once(
    signed_bundle: SignedBundle, tmp_path: Path
) -> None:
    bundle = signed_bundle.copy(tmp_path / "bundle")
    flip_byte(bundle / "wheels/beta-2.0-py3-none-any.whl")
    flip_byte(bundle / "locks/app.lock")
    _truncate(bundle / "files/data/blob.bin")
    (bundle / "models/tiny/config.json").unlink()
    _extra(bundle / "stowaway.txt")

    checked = python_verify(bundle, signed_bundle.pub, "--json")
    assert checked.returncode == INTEGRITY_EXIT
    report = json.loads(checked.stdout)
    found = {(p["problem"], p["path"]) for p in report["problems"]}
    assert found == {
        ("bad", "wheels/beta-2.0-py3-none-any.whl"),
        ("bad", "locks/app.lock"),
        ("truncated", "files/data/blob.bin"),
        ("missing", "models/tiny/config.json"),
        ("unexpected", "stowaway.txt"),
    }
    assert report["signature"] == "valid" and report["ok"] is False


def test_sums_file_that_disagrees_with_the_manifest_is_reported(
    signed_bundle: SignedBundle, tmp_path: Path
) -> None:
    """SHA256SUMS is not signed: rewriting it to cover a swapped file fools no verifier."""
    bundle = signed_bundle.copy(tmp_path / "bundle")
    wheel = bundle / "wheels/beta-2.0-py3-none-any.whl"
    old = sha256_file(wheel)
    flip_byte(wheel)
    sums = bundle / "SHA256SUMS"
    sums.write_text(sums.read_text().replace(old, sha256_file(wheel)))
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle).returncode == 0

    checked = python_verify(bundle, signed_bundle.pub, "--json")
    found = {(p["problem"], p["path"]) for p in json.loads(checked.stdout)["problems"]}
    assert ("bad", "wheels/beta-2.0-py3-none-any.whl") in found and ("bad", "SHA256SUMS") in found
    installed = bash_install(bundle, signed_bundle.pub, tmp_path / "prefix")
    assert installed.returncode == INTEGRITY_EXIT and "beta-2.0" in installed.stderr


def test_pristine_bundle_verifies(signed_bundle: SignedBundle) -> None:
    checked = python_verify(signed_bundle.path, signed_bundle.pub, "--json")
    assert checked.returncode == 0, checked.stdout
    report = json.loads(checked.stdout)
    assert report["ok"] and report["signature"] == "valid" and report["problems"] == []
    listed = json.loads((signed_bundle.path / "manifest.json").read_text())["files"]
    assert report["files"] == len(listed)


@pytest.mark.slow
def test_payload_files_named_like_the_bundle_metadata_are_listed(
    make_spec: SpecFactory, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    """Only the top-level manifest.json, manifest.sig and SHA256SUMS are outside the manifest."""
    spec = make_spec(extra='[[files]]\nsrc = "release"\ndest = "release"\n')
    for name in ("SHA256SUMS", "manifest.json", "manifest.sig"):
        (spec.parent / "release" / name).parent.mkdir(exist_ok=True)
        (spec.parent / "release" / name).write_text(f"a payload file called {name}\n")
    out = tmp_path / "out"
    build(spec, out, key=signing_key[0], cache_dir=tmp_path / "cache")
    listed = {f["path"] for f in json.loads((out / "manifest.json").read_text())["files"]}
    assert {"files/release/SHA256SUMS", "files/release/manifest.sig"} <= listed
    assert python_verify(out, signing_key[1]).returncode == 0
    assert bash_install(out, signing_key[1], tmp_path / "prefix").returncode == 0
