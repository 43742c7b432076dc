"""offline images load: a real bundle pushed by real skopeo into a second (LAN) registry."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from offline.bundle.build import build
from offline.bundle.images import _Ref
from offline.bundle.load_images import _Destination, _expect, _Record, load_images
from offline.errors import IntegrityError, NetworkError, NotFoundError
from offline.fsutil import sha256_file
from tests.fixtures.registry import (
    MultiArchImage,
    Registry,
    TinyImage,
    add_index,
    build_tiny_layout,
    push_layout,
    running_registry,
)
from tests.fixtures.specs import SpecFactory

ARCHES = ("linux/amd64", "linux/arm64")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offline", "images", "load", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def _raw_digest(reference: str, *options: str) -> str:
    cmd = ["skopeo", "inspect", "--tls-verify=false", "--raw", *options, f"docker://{reference}"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def _image_entries(*refs: str, platform: str = "linux/amd64") -> str:
    return "".join(
        f'[[image]]\nref = "{ref}"\nplatform = "{platform}"\ntls_verify = false\n' for ref in refs
    )


def _push_docker_list(registry: Registry, workdir: Path) -> str:
    """Push a two-platform Docker manifest list as ``multi-docker:1.0``; returns its ref."""
    workdir.mkdir()
    layout = build_tiny_layout(workdir, tag="amd64")
    arm = ["umoci", "config", "--image", f"{layout}:amd64", "--tag", "arm64"]
    subprocess.run([*arm, "--architecture", "arm64"], check=True, capture_output=True)
    add_index(layout, "1.0", {"linux/amd64": "amd64", "linux/arm64": "arm64"})
    ref = f"{registry.host}/multi-docker:1.0"
    push_layout(layout, "1.0", ref, fmt="v2s2")
    return ref


def _both_platforms(ref: str, name: str) -> str:
    arm = _image_entries(ref, platform="linux/arm64")
    return _image_entries(ref) + arm.replace("[[image]]\n", f'[[image]]\nname = "{name}"\n')


@pytest.fixture()
def image_bundle(
    make_spec: SpecFactory,
    tmp_path: Path,
    tiny_image: TinyImage,
    multiarch_image: MultiArchImage,
) -> Path:
    """tiny:1.0, a Docker schema 2 copy of it, and both platforms of an OCI and a Docker list."""
    host = tiny_image.registry.host
    push_layout(tiny_image.layout, "1.0", f"{host}/tiny-docker:1.0", fmt="v2s2")
    docker_list = _push_docker_list(tiny_image.registry, tmp_path / "docker-list")
    extra = _image_entries(tiny_image.ref, f"{host}/tiny-docker:1.0")
    extra += _both_platforms(multiarch_image.ref, "multi-arm")
    extra += _both_platforms(docker_list, "multi-docker-arm")
    out = tmp_path / "bundle"
    build(make_spec("alpha\n", extra=extra), out, cache_dir=tmp_path / "cache")
    return out


def _records(bundle: Path) -> dict[tuple[str, str], dict[str, Any]]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {(i["ref"], i["platform"]): i for i in manifest["images"]}


@pytest.mark.integration
def test_cli_pushes_every_image_with_its_recorded_digest(
    image_bundle: Path,
    tmp_path: Path,
    tiny_image: TinyImage,
    multiarch_image: MultiArchImage,
) -> None:
    records = _records(image_bundle)
    host = tiny_image.registry.host
    with running_registry(tmp_path / "lan") as lan:
        proc = _cli(str(image_bundle), "--registry", lan.host, "--no-tls-verify", "--json")
        assert proc.returncode == 0, proc.stderr
        loaded = json.loads(proc.stdout)

        tiny = records[(tiny_image.ref, "linux/amd64")]
        assert _raw_digest(f"{lan.host}/tiny:1.0") == tiny["digest"] == tiny_image.digest
        assert lan.served_digest("tiny", "1.0") == tiny["digest"]
        docker = records[(f"{host}/tiny-docker:1.0", "linux/amd64")]
        assert lan.served_digest("tiny-docker", "1.0") == docker["digest"] != tiny["digest"]
        for platform, digest in multiarch_image.digests.items():
            assert records[(multiarch_image.ref, platform)]["digest"] == digest
        _assert_index(lan, "multi", multiarch_image.digests, "oci.image.index")
        docker_list = {p: records[(f"{host}/multi-docker:1.0", p)]["digest"] for p in ARCHES}
        _assert_index(lan, "multi-docker", docker_list, "docker.distribution.manifest.list")

    assert [(r["ref"], r["platform"], r["digest"]) for r in loaded] == [
        (i["ref"], i["platform"], i["digest"]) for i in records.values()
    ]
    by_ref = {r["ref"]: r for r in loaded}
    assert by_ref[tiny_image.ref]["destination"] == f"{lan.host}/tiny:1.0"
    assert by_ref[tiny_image.ref]["served_digest"] == tiny_image.digest


def _assert_index(lan: Registry, repo: str, digests: dict[str, str], media_type: str) -> None:
    """``repo:1.0`` is an index over exactly ``digests``, each served by its digest."""
    raw = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{lan.host}/{repo}:1.0"],
        capture_output=True,
        check=True,
    ).stdout
    index = json.loads(raw)
    assert media_type in index["mediaType"]
    listed = {
        f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
        for m in index["manifests"]
    }
    assert listed == digests
    assert lan.served_digest(repo, "1.0") == f"sha256:{hashlib.sha256(raw).hexdigest()}"
    for digest in digests.values():
        assert lan.served_digest(repo, digest) == digest


@pytest.mark.integration
def test_library_load_is_repeatable_and_cli_prints_a_summary(
    make_spec: SpecFactory, tmp_path: Path, tiny_image: TinyImage
) -> None:
    out = tmp_path / "bundle"
    build(make_spec("alpha\n", extra=_image_entries(tiny_image.ref)), out, cache_dir=tmp_path / "c")
    with running_registry(tmp_path / "lan") as lan:
        first = load_images(out, f"{lan.host}/mirror", tls_verify=False)
        again = load_images(out, f"{lan.host}/mirror", tls_verify=False)
        assert first == again
        assert lan.served_digest("mirror/tiny", "1.0") == tiny_image.digest
        proc = _cli(str(out), "--registry", lan.host, "--no-tls-verify")
    assert proc.returncode == 0, proc.stderr
    assert f"{tiny_image.ref} (linux/amd64) -> {lan.host}/tiny:1.0" in proc.stdout
    assert f"{tiny_image.digest}  verified" in proc.stdout
    assert "1 image(s) loaded" in proc.stdout


@pytest.mark.integration
def test_plain_http_registry_needs_no_tls_verify(
    make_spec: SpecFactory, tmp_path: Path, tiny_image: TinyImage
) -> None:
    out = tmp_path / "bundle"
    build(make_spec("alpha\n", extra=_image_entries(tiny_image.ref)), out, cache_dir=tmp_path / "c")
    with running_registry(tmp_path / "lan") as lan, pytest.raises(NetworkError) as caught:
        load_images(out, lan.host)
    assert lan.host in caught.value.message and tiny_image.ref in caught.value.message
    assert "--no-tls-verify" in str(caught.value.fix)


@pytest.mark.integration
def test_served_digest_mismatch_is_an_integrity_error(
    tiny_image: TinyImage, tmp_path: Path
) -> None:
    record = _Record(tiny_image.ref, "linux/amd64", tiny_image.digest, "0" * 64, 0, tmp_path)
    dest = _Destination(tiny_image.registry.host, None, tls_verify=False)
    wrong = f"sha256:{'1' * 64}"
    with pytest.raises(IntegrityError) as caught:
        _expect(record, dest, f"docker://{tiny_image.ref}", wrong)
    assert tiny_image.ref in caught.value.message
    assert tiny_image.digest in caught.value.message and wrong in caught.value.message


def _fake_bundle(root: Path, images: list[dict[str, Any]]) -> Path:
    """A bundle directory holding only a manifest (and whatever the test adds)."""
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"kind": "full", "images": images}))
    return root


def _entry(path: str = "images/tiny.amd64.oci.tar", **over: Any) -> dict[str, Any]:
    return {
        "ref": "registry.example/tiny:1.0",
        "platform": "linux/amd64",
        "digest": f"sha256:{'a' * 64}",
        "archive_sha256": "b" * 64,
        "size": 10,
        "path": path,
        **over,
    }


def test_missing_archive_is_named(tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "b", [_entry()])
    with pytest.raises(NotFoundError) as caught:
        load_images(bundle, "127.0.0.1:5000")
    assert str(bundle / "images" / "tiny.amd64.oci.tar") in caught.value.message
    assert "registry.example/tiny:1.0" in caught.value.message
    proc = _cli(str(bundle), "--registry", "127.0.0.1:5000")
    assert proc.returncode == NotFoundError.exit_code
    assert "tiny.amd64.oci.tar" in proc.stderr and "fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_damaged_archive_is_refused_before_any_push(tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "b", [_entry()])
    archive = bundle / "images" / "tiny.amd64.oci.tar"
    archive.parent.mkdir()
    archive.write_bytes(b"not a tar!")  # right size, wrong sha256
    with pytest.raises(IntegrityError, match="does not match the bundle manifest"):
        load_images(bundle, "127.0.0.1:5000")
    entry = _entry(archive_sha256=sha256_file(archive))
    (bundle / "manifest.json").write_text(json.dumps({"images": [entry]}))
    with pytest.raises(IntegrityError, match="unreadable OCI archive"):
        load_images(bundle, "127.0.0.1:5000")


def test_archive_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "b", [_entry(path="../../etc/passwd")])
    with pytest.raises(IntegrityError, match="outside the bundle"):
        load_images(bundle, "127.0.0.1:5000")


def test_bundle_without_images_or_manifest(tmp_path: Path) -> None:
    empty = _fake_bundle(tmp_path / "b", [])
    with pytest.raises(NotFoundError, match="holds no container images"):
        load_images(empty, "127.0.0.1:5000")
    proc = _cli(str(empty), "--registry", "127.0.0.1:5000")
    assert proc.returncode == NotFoundError.exit_code and "[[image]]" in proc.stderr
    with pytest.raises(NotFoundError, match=r"manifest\.json does not exist"):
        load_images(tmp_path, "127.0.0.1:5000")


def test_docker_without_an_engine_is_a_clear_error(tmp_path: Path) -> None:
    bundle = _fake_bundle(tmp_path / "b", [_entry()])
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    if Path("/var/run/docker.sock").exists():
        pytest.skip("a Docker engine socket exists on this host")
    proc = _cli(str(bundle), "--docker", env=env)
    assert proc.returncode == 9, proc.stderr
    assert "no Docker engine" in proc.stderr and "/var/run/docker.sock" in proc.stderr
    assert "--registry HOST:PORT" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_podman_missing_is_a_clear_error(tmp_path: Path) -> None:
    if shutil.which("podman"):
        pytest.skip("podman is installed on this host")
    proc = _cli(str(_fake_bundle(tmp_path / "b", [_entry()])), "--podman")
    assert proc.returncode == 9 and "podman is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        ([], 3, "exactly one destination"),
        (["--registry", "127.0.0.1:5000", "--docker"], 3, "exactly one destination"),
        (["--docker", "--podman"], 2, "not both"),
        (["--registry", "http://lan:5000"], 3, "--registry lan:5000"),
        (["--registry", "lan:5000/Upper"], 3, "HOST[:PORT][/PREFIX]"),
    ],
)
def test_destination_options(tmp_path: Path, args: list[str], code: int, words: str) -> None:
    proc = _cli(str(_fake_bundle(tmp_path / "b", [_entry()])), *args)
    assert proc.returncode == code, proc.stderr
    assert words in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("ref", "registry", "engine", "expected"),
    [
        ("docker.io/library/busybox:1.36", "lan:5000", None, "docker://lan:5000/library/busybox:1.36"),
        ("busybox", "lan:5000", None, "docker://lan:5000/library/busybox:latest"),
        ("127.0.0.1:5000/tiny:1.0", "lan:5000", None, "docker://lan:5000/tiny:1.0"),
        ("ghcr.io/org/app:2", "lan:5000/mirror", None, "docker://lan:5000/mirror/org/app:2"),
        (f"ghcr.io/org/app@sha256:{'c' * 64}", "lan:5000", None,
         f"docker://lan:5000/org/app@sha256:{'d' * 64}"),
        ("docker.io/library/busybox:1.36", None, "docker",
         "docker-daemon:docker.io/library/busybox:1.36"),
        (f"ghcr.io/org/app@sha256:{'c' * 64}", None, "podman",
         f"containers-storage:ghcr.io/org/app:sha256-{'c' * 64}"),
    ],
)  # fmt: skip
def test_destination_names(
    ref: str, registry: str | None, engine: str | None, expected: str
) -> None:
    dest = _Destination(registry, engine, tls_verify=True)
    assert dest.target(_Ref.parse(ref), f"sha256:{'d' * 64}") == expected
