"""offline.bundle.images against a real registry (docker-registry) driven by real skopeo."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from offline.bundle.cache import Cache
from offline.bundle.images import ImageRecord, _Ref, fetch_image
from offline.bundle.progress import NullReporter
from offline.bundle.spec import Image
from offline.errors import ConfigError, NetworkError, NotFoundError, ToolError
from offline.fsutil import sha256_file
from tests.fixtures.registry import (
    MultiArchImage,
    TinyImage,
    free_port,
    push_layout,
    running_registry,
)


def _fetch(cache: Cache, ref: str, **options: Any) -> ImageRecord:
    refresh = options.pop("refresh", False)
    image = Image(ref=ref, **{"tls_verify": False, **options})
    return fetch_image(image, cache, NullReporter(), refresh=refresh)


def _archive(path: Path) -> tuple[set[str], dict[str, Any]]:
    with tarfile.open(path) as tar:
        handle = tar.extractfile("index.json")
        assert handle is not None
        return set(tar.getnames()), json.load(handle)


def _blob(digest: str) -> str:
    return f"blobs/sha256/{digest.removeprefix('sha256:')}"


@pytest.mark.integration
def test_fetch_archives_the_manifest_the_registry_serves(
    tiny_image: TinyImage, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    record = _fetch(cache, tiny_image.ref)
    archive = cache.blob_path(record.archive_sha256)

    assert (record.ref, record.platform, record.digest) == (
        tiny_image.ref,
        "linux/amd64",
        tiny_image.digest,
    )
    assert record.size == archive.stat().st_size
    assert sha256_file(archive) == record.archive_sha256
    names, index = _archive(archive)
    assert {"index.json", "oci-layout", _blob(tiny_image.digest)} <= names
    assert [m["digest"] for m in index["manifests"]] == [tiny_image.digest]
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile(_blob(tiny_image.digest)))  # type: ignore[arg-type]
    for desc in [manifest["config"], *manifest["layers"]]:
        assert _blob(desc["digest"]) in names
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, check=True
    )
    assert json.loads(inspected.stdout)["Digest"] == tiny_image.digest
    assert record.to_json() == {
        "ref": tiny_image.ref,
        "platform": "linux/amd64",
        "digest": tiny_image.digest,
        "archive_sha256": record.archive_sha256,
        "size": record.size,
    }


@pytest.mark.integration
@pytest.mark.parametrize("pinned", [False, True], ids=["tag", "digest"])
def test_rebuild_needs_no_registry(tiny_image: TinyImage, tmp_path: Path, pinned: bool) -> None:
    cache = Cache(tmp_path / "cache")
    with running_registry(tmp_path / "registry") as registry:
        digest = push_layout(tiny_image.layout, "1.0", f"{registry.host}/tiny:1.0")
        ref = f"{registry.host}/tiny@{digest}" if pinned else f"{registry.host}/tiny:1.0"
        first = _fetch(cache, ref)
        assert any("/manifests/" in line for line in registry.requests())
    # The registry is gone: any request now fails with NetworkError.
    assert _fetch(cache, ref) == first
    if pinned:  # a digest needs no resolving, so refresh changes nothing
        assert _fetch(cache, ref, refresh=True) == first
    else:  # refresh must ask the registry again, which proves the cached answer was used above
        with pytest.raises(NetworkError):
            _fetch(cache, ref, refresh=True)


@pytest.mark.integration
def test_lost_archive_is_fetched_again(tiny_image: TinyImage, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    first = _fetch(cache, tiny_image.ref)
    cache.blob_path(first.archive_sha256).unlink()
    second = _fetch(cache, tiny_image.ref)
    assert second.digest == first.digest
    assert cache.has(second.archive_sha256)


@pytest.mark.integration
@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64"])
@pytest.mark.parametrize("pinned", [False, True], ids=["tag", "index-digest"])
def test_multiarch_image_archives_the_platform_manifest(
    multiarch_image: MultiArchImage, tmp_path: Path, platform: str, pinned: bool
) -> None:
    ref = multiarch_image.ref
    if pinned:
        ref = f"{ref.rsplit(':', 1)[0]}@{multiarch_image.index_digest}"
    cache = Cache(tmp_path / "cache")
    record = _fetch(cache, ref, platform=platform)

    expected = multiarch_image.digests[platform]
    assert record.digest == expected != multiarch_image.index_digest
    _, index = _archive(cache.blob_path(record.archive_sha256))
    assert [m["digest"] for m in index["manifests"]] == [expected]


@pytest.mark.integration
def test_docker_schema2_manifest_keeps_its_digest(tiny_image: TinyImage, tmp_path: Path) -> None:
    registry = tiny_image.registry
    ref = f"{registry.host}/tiny-docker:1.0"
    push_layout(tiny_image.layout, "1.0", ref, fmt="v2s2")
    served = registry.served_digest("tiny-docker", "1.0")
    cache = Cache(tmp_path / "cache")
    record = _fetch(cache, ref)

    assert record.digest == served
    _, index = _archive(cache.blob_path(record.archive_sha256))
    (entry,) = index["manifests"]
    assert entry["digest"] == served
    assert entry["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"


@pytest.mark.integration
def test_single_platform_image_lacking_the_platform(tiny_image: TinyImage, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as caught:
        _fetch(Cache(tmp_path / "cache"), tiny_image.ref, platform="linux/arm64")
    assert tiny_image.ref in caught.value.message
    assert "linux/amd64" in caught.value.message


@pytest.mark.integration
@pytest.mark.parametrize("path", ["tiny:no-such-tag", "no-such-repo:1.0"])
def test_missing_image_is_not_found(tiny_image: TinyImage, tmp_path: Path, path: str) -> None:
    ref = f"{tiny_image.registry.host}/{path}"
    with pytest.raises(NotFoundError) as caught:
        _fetch(Cache(tmp_path / "cache"), ref)
    assert ref in caught.value.message
    assert caught.value.fix is not None
    assert "skopeo list-tags docker://" in caught.value.fix


@pytest.mark.integration
def test_missing_pinned_digest_is_not_found(tiny_image: TinyImage, tmp_path: Path) -> None:
    ref = f"{tiny_image.registry.host}/tiny@sha256:{'0' * 64}"
    with pytest.raises(NotFoundError, match="tiny@sha256:0000"):
        _fetch(Cache(tmp_path / "cache"), ref)


@pytest.mark.integration
def test_closed_port_is_network_error(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(NetworkError) as caught:
        _fetch(Cache(tmp_path / "cache"), f"{host}/tiny:1.0")
    assert host in caught.value.message


@pytest.mark.integration
def test_https_to_plain_http_registry_suggests_tls_verify(
    tiny_image: TinyImage, tmp_path: Path
) -> None:
    with pytest.raises(NetworkError) as caught:
        _fetch(Cache(tmp_path / "cache"), tiny_image.ref, tls_verify=True)
    assert tiny_image.registry.host in caught.value.message
    assert "tls_verify = false" in str(caught.value.fix)


def test_missing_skopeo_is_tool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError) as caught:
        _fetch(Cache(tmp_path / "cache"), "registry.example/tiny:1.0")
    assert "registry.example/tiny:1.0" in caught.value.message
    assert caught.value.fix == "apt-get install skopeo"


@pytest.mark.parametrize(
    ("ref", "name", "tag", "digest", "registry"),
    [
        ("python:3.11", "python", "3.11", None, "docker.io"),
        ("library/python", "library/python", None, None, "docker.io"),
        ("127.0.0.1:5000/tiny", "127.0.0.1:5000/tiny", None, None, "127.0.0.1:5000"),
        ("localhost/a/b:1", "localhost/a/b", "1", None, "localhost"),
        (f"ghcr.io/x/y:2@sha256:{'a' * 64}", "ghcr.io/x/y", "2", f"sha256:{'a' * 64}", "ghcr.io"),
    ],
)
def test_ref_parts(ref: str, name: str, tag: str | None, digest: str | None, registry: str) -> None:
    parsed = _Ref.parse(ref)
    assert (parsed.name, parsed.tag, parsed.digest, parsed.registry) == (
        name,
        tag,
        digest,
        registry,
    )


@pytest.mark.parametrize("ref", ["tiny@sha256:abc", "tiny:", ":1.0"])
def test_malformed_ref_is_config_error(ref: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not"):
        _fetch(Cache(tmp_path / "cache"), ref)
