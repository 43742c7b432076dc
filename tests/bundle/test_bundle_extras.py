"""Split volumes, differential bundles, images and the toolkit's own wheel in a build."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from offline.bundle.build import build
from offline.bundle.split import parse_size
from offline.errors import ConfigError
from tests.fixtures.registry import TinyImage
from tests.fixtures.specs import SpecFactory


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_split_volumes_reassemble_to_identical_bytes(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    spec = make_spec(extra='[[files]]\nsrc = "big.bin"\ndest = "big.bin"\n')
    (spec.parent / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    out = tmp_path / "out"
    result = build(spec, out, cache_dir=tmp_path / "cache", max_part_size=parse_size("1MiB"))
    assert result.parts_index is not None
    index = json.loads(result.parts_index.read_text())
    parts_dir = result.parts_index.parent
    assert len(index["parts"]) >= 4
    assert all(p["size"] <= 1024 * 1024 for p in index["parts"])
    # Each volume checks on its own with coreutils.
    check = subprocess.run(
        ["sha256sum", "-c", "test-1.0.parts.sha256"], cwd=parts_dir, capture_output=True
    )
    assert check.returncode == 0
    whole = b"".join((parts_dir / p["name"]).read_bytes() for p in index["parts"])
    assert hashlib.sha256(whole).hexdigest() == index["sha256"] and len(whole) == index["size"]
    archive = tmp_path / "joined.tar"
    archive.write_bytes(whole)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert _tree_hashes(tmp_path / "unpacked" / "test-1.0") == _tree_hashes(out)


def test_bad_part_size() -> None:
    with pytest.raises(ConfigError, match=r"3\.9GiB"):
        parse_size("four gigs")
    assert parse_size("4GiB") == 4 * 1024**3 and parse_size("700MB") == 700_000_000


@pytest.mark.slow
def test_diff_bundle_carries_only_what_the_base_lacks(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    build(make_spec("alpha\n"), tmp_path / "v1", cache_dir=cache)
    spec2 = make_spec("alpha\ndelta\n", version="2.0")
    result = build(spec2, tmp_path / "v2", cache_dir=cache, since=tmp_path / "v1" / "manifest.json")
    diff = tmp_path / "v2"
    assert result.kind == "diff"
    assert sorted(p.name for p in (diff / "wheels").iterdir()) == [
        "delta-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"
    ]
    manifest = json.loads((diff / "manifest.json").read_text())
    base_sha = hashlib.sha256((tmp_path / "v1" / "manifest.json").read_bytes()).hexdigest()
    assert manifest["base"]["manifest_sha256"] == base_sha
    assert manifest["base"]["version"] == "1.0"
    from_base = {f["path"] for f in manifest["base_files"]}
    assert "wheels/alpha-1.0-py3-none-any.whl" in from_base
    # The lock and index describe the whole new state, so they always travel.
    assert "delta==1.0" in (diff / "locks" / "app.lock").read_text()
    assert (diff / "simple" / "alpha" / "index.html").is_file()
    check = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=diff)
    assert check.returncode == 0


@pytest.mark.slow
def test_toolkit_wheel_travels_in_the_bundle(make_spec: SpecFactory, tmp_path: Path) -> None:
    spec = make_spec()
    spec.write_text(spec.read_text().replace("[toolkit]\nwheel = false", "[toolkit]\nwheel = true"))
    build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    wheel = tmp_path / "out" / manifest["toolkit_wheel"]
    assert wheel.name.startswith("deepseek_offline-") and wheel.is_file()
    with __import__("zipfile").ZipFile(wheel) as zf:
        assert "offline/bundle/build.py" in zf.namelist()


@pytest.mark.integration
def test_images_are_pulled_into_the_bundle(
    make_spec: SpecFactory, tmp_path: Path, tiny_image: TinyImage
) -> None:
    extra = f'[[image]]\nref = "{tiny_image.ref}"\ntls_verify = false\n'
    out = tmp_path / "out"
    result = build(make_spec(extra=extra), out, cache_dir=tmp_path / "cache")
    assert result.images == 1
    manifest = json.loads((out / "manifest.json").read_text())
    image = manifest["images"][0]
    assert image["digest"] == tiny_image.digest and image["ref"] == tiny_image.ref
    archive = out / image["path"]
    inspect = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True
    )
    assert inspect.returncode == 0, inspect.stderr
    sbom = json.loads((out / "sbom.cdx.json").read_text())
    assert any(
        c["purl"].startswith("pkg:oci/tiny@sha256")
        for c in sbom["components"]
        if c["type"] == "container"
    )
