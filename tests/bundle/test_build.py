"""Building bundles against a real local index, with coreutils, openssl and pip as judges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from offline.bundle.build import build
from offline.errors import ConfigError, IntegrityError, NetworkError, NotFoundError, ResolutionError
from tests.fixtures.pyindex import PyIndex
from tests.fixtures.specs import SpecFactory, write_safetensors

MODEL_AND_FILES = """
[[model]]
name = "tiny"
path = "model"
[[files]]
src = "notes"
dest = "docs/notes"
"""


def _model_and_files(spec: Path) -> None:
    write_safetensors(spec.parent / "model" / "model.safetensors")
    (spec.parent / "model" / "config.json").write_text("{}")
    (spec.parent / "notes").mkdir()
    (spec.parent / "notes" / "a.txt").write_text("hello\n")


def _sha256sum_check(bundle: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True
    )


def _openssl_verify(bundle: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin"]
    cmd += ["-in", str(bundle / "manifest.json"), "-sigfile", str(bundle / "manifest.sig")]
    return subprocess.run(cmd, capture_output=True, text=True)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.chmod(0o644)
    path.unlink()  # it may be a hard link into the cache: never write through it
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_full_bundle_layout_checksums_and_signature(
    make_spec: SpecFactory, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    spec = make_spec(extra=MODEL_AND_FILES)
    _model_and_files(spec)
    out = tmp_path / "out"
    result = build(spec, out, key=signing_key[0], cache_dir=tmp_path / "cache")

    wheels = sorted(p.name for p in (out / "wheels").iterdir())
    assert wheels == [
        "alpha-1.0-py3-none-any.whl",
        "beta-2.0-py3-none-any.whl",
        "delta-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",  # not the aarch64 one
        "gamma-1.0-py3-none-any.whl",  # built here from its sdist
    ]
    assert result.stats.built_sdists == 1
    lock = (out / "locks" / "app.lock").read_text()
    assert "beta==2.0 --hash=sha256:" in lock and "gamma==1.0 --hash=sha256:" in lock
    assert "#sha256=" in (out / "simple" / "beta" / "index.html").read_text()
    assert (out / "models" / "tiny" / "model.safetensors").is_file()
    assert (out / "files" / "docs" / "notes" / "a.txt").read_text() == "hello\n"

    manifest = json.loads((out / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk - listed == {"manifest.json", "manifest.sig", "SHA256SUMS"}
    assert manifest["target"]["platforms"] == ["manylinux_2_28_x86_64"]
    assert manifest["envs"][0]["name"] == "app" and manifest["kind"] == "full"
    sbom = json.loads((out / "sbom.cdx.json").read_text())
    purls = {c.get("purl", "") for c in sbom["components"]}
    assert any(p.startswith("pkg:pypi/gamma@1.0") for p in purls)
    assert any(c["type"] == "machine-learning-model" for c in sbom["components"])

    assert _sha256sum_check(out).returncode == 0
    verified = _openssl_verify(out, signing_key[1])
    assert verified.returncode == 0, verified.stderr
    assert (out / "manifest.pub").read_bytes() == signing_key[1].read_bytes()


@pytest.mark.slow
def test_flipped_byte_fails_sha256sum_and_openssl(
    make_spec: SpecFactory, tmp_path: Path, signing_key: tuple[Path, Path]
) -> None:
    out = tmp_path / "out"
    build(make_spec(), out, key=signing_key[0], cache_dir=tmp_path / "cache")
    _flip_byte(out / "wheels" / "beta-2.0-py3-none-any.whl")
    failed = _sha256sum_check(out)
    assert failed.returncode != 0 and "beta-2.0-py3-none-any.whl: FAILED" in failed.stdout
    _flip_byte(out / "manifest.json")
    assert _openssl_verify(out, signing_key[1]).returncode != 0


@pytest.mark.slow
def test_pip_installs_from_bundle_with_no_network(make_spec: SpecFactory, tmp_path: Path) -> None:
    out = tmp_path / "out"
    build(make_spec(), out, cache_dir=tmp_path / "cache")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
    env.pop("PIP_FIND_LINKS", None)
    cmd = ["unshare", "-n", sys.executable, "-m", "pip", "--python", str(venv / "bin/python")]
    cmd += ["install", "--index-url", (out / "simple").as_uri(), "--require-hashes"]
    cmd += ["-r", str(out / "locks" / "app.lock")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    check = "import alpha, beta, gamma, delta; print(beta.VERSION, gamma.BUILT)"
    ran = subprocess.run([venv / "bin/python", "-c", check], capture_output=True, text=True)
    assert ran.stdout.split() == ["2.0", "True"]


@pytest.mark.slow
def test_no_change_rebuild_downloads_nothing(
    make_spec: SpecFactory, tmp_path: Path, pyindex: PyIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    spec, out, cache = make_spec(), tmp_path / "out", tmp_path / "cache"
    first = build(spec, out, cache_dir=cache)
    assert first.stats.downloaded_files == 4  # alpha, beta, gamma sdist, delta
    first_manifest = json.loads((out / "manifest.json").read_text())
    pyindex.requests.clear()
    second = build(spec, out, cache_dir=cache)
    assert pyindex.requests == []  # not even an index page
    assert second.stats.downloaded_files == 0 and second.stats.built_sdists == 0
    assert json.loads((out / "manifest.json").read_text()) == first_manifest  # reproducible
    assert not list(tmp_path.glob(".out.*"))  # nothing left of the old bundle or staging


@pytest.mark.slow
def test_refresh_re_resolves(make_spec: SpecFactory, tmp_path: Path, pyindex: PyIndex) -> None:
    spec, cache = make_spec(), tmp_path / "cache"
    build(spec, tmp_path / "out", cache_dir=cache)
    pyindex.add_wheel("beta", "3.0")
    pyindex.requests.clear()
    build(spec, tmp_path / "out", cache_dir=cache, refresh=True)
    assert pyindex.requests
    assert (tmp_path / "out" / "wheels" / "beta-3.0-py3-none-any.whl").is_file()


@pytest.mark.slow
def test_aarch64_and_multi_platform(make_spec: SpecFactory, tmp_path: Path) -> None:
    out = tmp_path / "arm"
    build(make_spec(platforms=("manylinux_2_28_aarch64",)), out, cache_dir=tmp_path / "c")
    assert [p.name for p in (out / "wheels").glob("delta-*")] == [
        "delta-1.0-cp311-cp311-manylinux_2_28_aarch64.whl"
    ]
    both = ("manylinux_2_28_x86_64", "manylinux_2_28_aarch64")
    build(make_spec(platforms=both), out, cache_dir=tmp_path / "c")
    assert len(list((out / "wheels").glob("delta-*"))) == 2
    lock = (out / "locks" / "app.lock").read_text()
    delta = next(line for line in lock.splitlines() if line.startswith("delta=="))
    assert delta.count("--hash=sha256:") == 2


def test_legacy_platform_tag_from_pips_documentation(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    """``manylinux2014_x86_64`` is glibc 2.17: the bundle carries the 2.17 wheel and the manifest
    records both names."""
    out = tmp_path / "legacy"
    build(make_spec(platforms=("manylinux2014_x86_64",)), out, cache_dir=tmp_path / "c")
    assert [p.name for p in (out / "wheels").glob("delta-*")] == [
        "delta-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    ]
    target = json.loads((out / "manifest.json").read_text())["target"]
    assert target["platforms"] == ["manylinux_2_17_x86_64"]
    assert target["platforms_as_written"] == ["manylinux2014_x86_64"]


def _no_leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".building-" in p.name]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("requirements", "error", "words"),
    [
        ("beta>=3\n", ResolutionError, ["beta"]),
        ("macos-only\n", ResolutionError, ["macos-only", "manylinux_2_28_x86_64"]),
    ],
)
def test_resolution_errors_name_the_package(
    make_spec: SpecFactory,
    tmp_path: Path,
    requirements: str,
    error: type[Exception],
    words: list[str],
) -> None:
    with pytest.raises(error) as info:
        build(make_spec(requirements), tmp_path / "out", cache_dir=tmp_path / "cache")
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "out").exists() and not _no_leftovers(tmp_path)


@pytest.mark.slow
def test_index_down_is_a_network_error(make_spec: SpecFactory, tmp_path: Path) -> None:
    spec = make_spec(index_url="http://127.0.0.1:9/simple")
    with pytest.raises(NetworkError, match="cannot reach the package index"):
        build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")


def test_failed_build_keeps_the_old_bundle(make_spec: SpecFactory, tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    build(make_spec(), out, cache_dir=cache)
    before = (out / "manifest.json").read_bytes()
    broken = make_spec(extra='[[model]]\nname = "gone"\npath = "missing-dir"\n')
    with pytest.raises(NotFoundError, match="missing-dir"):
        build(broken, out, cache_dir=cache)
    assert (out / "manifest.json").read_bytes() == before
    assert _sha256sum_check(out).returncode == 0
    assert not _no_leftovers(tmp_path)


def test_pickle_weights_refused_unless_allowed(make_spec: SpecFactory, tmp_path: Path) -> None:
    model = '[[model]]\nname = "old"\npath = "model"\n'
    spec = make_spec(extra=model)
    (spec.parent / "model").mkdir()
    (spec.parent / "model" / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(IntegrityError, match=r"pytorch_model\.bin"):
        build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    spec = make_spec(extra=model + "allow_pickle = true\n")
    build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert (tmp_path / "out" / "models" / "old" / "pytorch_model.bin").is_file()


def test_truncated_safetensors_refused(make_spec: SpecFactory, tmp_path: Path) -> None:
    spec = make_spec(extra='[[model]]\nname = "m"\npath = "model"\n')
    weights = spec.parent / "model" / "model.safetensors"
    write_safetensors(weights)
    weights.write_bytes(weights.read_bytes()[:-5])
    with pytest.raises(IntegrityError, match="outside the data"):
        build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")


def test_out_that_is_not_a_bundle_is_refused(make_spec: SpecFactory, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(ConfigError, match="not a bundle"):
        build(make_spec(), out, cache_dir=tmp_path / "cache")
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_disk_full_is_a_clear_error(make_spec: SpecFactory, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        spec = make_spec(extra='[[files]]\nsrc = "big.bin"\ndest = "big.bin"\n')
        (spec.parent / "big.bin").write_bytes(os.urandom(256 * 1024))
        from offline.errors import ResourceError

        with pytest.raises(ResourceError, match="disk full"):
            build(spec, small / "out", cache_dir=tmp_path / "cache")
        assert not (small / "out").exists() and not _no_leftovers(small)
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_unreachable_hub_is_a_clear_error(
    make_spec: SpecFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    spec = make_spec(extra='[[model]]\nname = "m"\nhub = "org/none"\nrevision = "main"\n')
    with pytest.raises((NetworkError, NotFoundError), match="cannot fetch org/none@main"):
        build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out").exists()
