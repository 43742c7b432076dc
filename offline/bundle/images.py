"""Fetch container images with skopeo into OCI archives, through the content-addressed cache.

A ref resolves to the digest of the manifest for the requested platform (for a multi-arch image,
the entry of its index, not the index itself); that digest is what a registry serves and what a
mirror will serve again after the gap. The archive is copied by that digest with
``--preserve-digests``, so skopeo stores the manifest byte for byte (a Docker schema 2 manifest is
otherwise converted to OCI and gets a new digest).

Cache records (``Cache.write_meta``):

- ``image-refs``: ref + platform -> digest; lets a rebuild skip the registry entirely.
- ``images``: ref + platform + digest -> the archive blob and its size.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from offline.bundle.cache import Cache
from offline.bundle.progress import Reporter
from offline.bundle.spec import Image
from offline.errors import (
    ConfigError,
    IntegrityError,
    NetworkError,
    NotFoundError,
    OfflineError,
    ResourceError,
    ToolError,
)
from offline.fsutil import sha256_bytes

__all__ = ["ImageRecord", "fetch_image"]

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_FATAL_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
_INSPECT_TIMEOUT = "120s"


@dataclass(frozen=True)
class ImageRecord:
    """One image for one platform, archived in the cache."""

    ref: str
    platform: str
    digest: str
    archive_sha256: str
    size: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def fetch_image(
    image: Image, cache: Cache, reporter: Reporter, *, refresh: bool = False
) -> ImageRecord:
    """Archive ``image`` for its platform in ``cache``, downloading only what the cache lacks.

    Args:
        image: the spec entry; ``ref`` may be a tag or pin ``@sha256:``.
        cache: the download cache; the archive becomes ``cache.blob_path(record.archive_sha256)``.
        reporter: receives progress.
        refresh: re-resolve a tag at the registry instead of trusting the cached digest.

    Returns:
        The record; with an unchanged spec and ``refresh=False`` no registry is contacted.

    Raises:
        NotFoundError, NetworkError, ToolError, IntegrityError, ConfigError: with the fix.
    """
    ref = _Ref.parse(image.ref)
    pin = ref.digest or _tag_digest(image, ref, cache, refresh)
    key = sha256_bytes(json.dumps([image.ref, image.platform, pin]).encode())
    cached = _cached_record(image, cache, key)
    if cached is not None:
        reporter.note(f"image {image.ref} ({image.platform}): cached {cached.digest}")
        return cached
    digest = pin if ref.digest is None else _resolve(image, ref, f"{ref.name}@{pin}")
    task = f"image {image.ref} ({image.platform})"
    reporter.start(task)
    record = _download(image, ref, digest, cache)
    cache.write_meta("images", key, record.to_json())
    reporter.done(task)
    return record


@dataclass(frozen=True)
class _Ref:
    """``[registry/]repo[:tag][@sha256:...]`` split into its parts."""

    name: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> _Ref:
        rest, _, digest = ref.partition("@")
        slash, colon = rest.rfind("/"), rest.rfind(":")
        name, tag = (rest[:colon], rest[colon + 1 :]) if colon > slash else (rest, None)
        if not name or (digest and not _DIGEST.match(digest)) or tag == "":
            raise ConfigError(
                f"image ref {ref!r} is not [registry/]repository[:tag][@sha256:<64 hex>]",
                fix="fix image.ref in the bundle spec, e.g. 'docker.io/library/python:3.11'",
            )
        return cls(name, tag, digest or None)

    @property
    def registry(self) -> str:
        first, sep, _ = self.name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            return first
        return "docker.io"

    @property
    def tagged(self) -> str:
        return f"{self.name}:{self.tag or 'latest'}"

    @property
    def source(self) -> str:
        """What skopeo accepts: it refuses a tag and a digest together."""
        return f"{self.name}@{self.digest}" if self.digest else self.tagged


def _tag_digest(image: Image, ref: _Ref, cache: Cache, refresh: bool) -> str:
    """The platform digest a tag points to: cached unless ``refresh``."""
    key = sha256_bytes(json.dumps([image.ref, image.platform]).encode())
    meta = None if refresh else _read_meta(cache, "image-refs", key)
    digest = meta.get("digest") if meta else None
    if isinstance(digest, str) and _DIGEST.match(digest):
        return digest
    digest = _resolve(image, ref, ref.tagged)
    cache.write_meta(
        "image-refs", key, {"ref": image.ref, "platform": image.platform, "digest": digest}
    )
    return digest


def _read_meta(cache: Cache, kind: str, key: str) -> dict[str, Any] | None:
    try:
        return cache.read_meta(kind, key)
    except (OSError, ValueError):
        return None  # a damaged record is a cache miss, not an error


def _cached_record(image: Image, cache: Cache, key: str) -> ImageRecord | None:
    meta = _read_meta(cache, "images", key)
    if meta is None:
        return None
    digest, sha, size = meta.get("digest"), meta.get("archive_sha256"), meta.get("size")
    if not (isinstance(digest, str) and isinstance(sha, str) and isinstance(size, int)):
        return None
    blob = cache.blob_path(sha)
    if not blob.is_file() or blob.stat().st_size != size:
        return None
    return ImageRecord(image.ref, image.platform, digest, sha, size)


def _resolve(image: Image, ref: _Ref, target: str) -> str:
    """Digest of the manifest for ``image.platform`` that ``target`` (name:tag or name@digest) has.

    ``skopeo inspect``'s ``.Digest`` is the index digest for a multi-arch image, so the raw
    manifest is read and the platform entry chosen here.
    """
    raw = _skopeo(
        image,
        ref,
        ["--command-timeout", _INSPECT_TIMEOUT, "inspect", "--raw"],
        [*_tls(image, "--tls-verify"), f"docker://{target}"],
    )
    manifest = _json_object(raw, image, "manifest")
    if "manifests" in manifest:
        return _pick_platform(image, manifest)
    if manifest.get("schemaVersion") == 1:
        raise ToolError(
            f"image {image.ref} has a Docker schema 1 manifest, which cannot be archived unchanged",
            fix="pick a newer tag, or push the image again with current tooling",
        )
    digest = f"sha256:{sha256_bytes(raw)}"
    _check_single_platform(image, ref, digest)
    return digest


def _platform_parts(platform: str) -> tuple[str, str, str | None]:
    parts = platform.split("/")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else None


def _entry_platform(entry: dict[str, Any]) -> str:
    plat = entry.get("platform")
    plat = plat if isinstance(plat, dict) else {}
    variant = plat.get("variant") or ("v8" if plat.get("architecture") == "arm64" else None)
    text = f"{plat.get('os')}/{plat.get('architecture')}"
    return f"{text}/{variant}" if variant else text


def _platform_matches(image: Image, found: str) -> bool:
    want_os, want_arch, want_variant = _platform_parts(image.platform)
    os_, arch, variant = _platform_parts(found)
    return (os_, arch) == (want_os, want_arch) and want_variant in (None, variant)


def _pick_platform(image: Image, index: dict[str, Any]) -> str:
    entries = [e for e in index.get("manifests", []) if isinstance(e, dict)]
    for entry in entries:
        digest = entry.get("digest")
        if _platform_matches(image, _entry_platform(entry)) and isinstance(digest, str):
            return digest
    offered = sorted({_entry_platform(e) for e in entries} - {"unknown/unknown"})
    raise _platform_missing(image, offered)


def _platform_missing(image: Image, offered: list[str]) -> NotFoundError:
    return NotFoundError(
        f"image {image.ref} has no {image.platform} variant; it offers: "
        f"{', '.join(offered) or 'none'}",
        fix=f"set platform to one of those on this [[image]] in the spec, or use an image built "
        f"for {image.platform}",
    )


def _check_single_platform(image: Image, ref: _Ref, digest: str) -> None:
    """A single-platform image has its platform in the config, not the manifest."""
    raw = _skopeo(
        image,
        ref,
        ["--command-timeout", _INSPECT_TIMEOUT, "inspect", "--config"],
        [*_tls(image, "--tls-verify"), f"docker://{ref.name}@{digest}"],
    )
    config = _json_object(raw, image, "image config")
    found = _entry_platform({"platform": config})
    if not _platform_matches(image, found):
        raise _platform_missing(image, [found])


def _download(image: Image, ref: _Ref, digest: str, cache: Cache) -> ImageRecord:
    tmp = cache.new_tmp_file(".oci.tar")
    try:
        _copy(image, ref, digest, tmp)
        _verify_archive(image, tmp, digest)
        size = tmp.stat().st_size
        sha = cache.ingest(tmp, what=f"image {image.ref}")
    finally:
        tmp.unlink(missing_ok=True)
    return ImageRecord(image.ref, image.platform, digest, sha, size)


def _copy(image: Image, ref: _Ref, digest: str, dest: Path) -> None:
    os_, arch, variant = _platform_parts(image.platform)
    platform = ["--override-os", os_, "--override-arch", arch]
    platform += ["--override-variant", variant] if variant else []
    # A relative destination: skopeo splits "oci-archive:PATH:NAME" at the first colon.
    # TMPDIR: skopeo stages the layout before packing it; keep that on the cache's filesystem.
    _skopeo(
        image,
        ref,
        ["copy", "--quiet", "--preserve-digests", *platform],
        [
            *_tls(image, "--src-tls-verify"),
            f"docker://{ref.name}@{digest}",
            f"oci-archive:{dest.name}:{image.ref}",
        ],
        cwd=dest.parent,
        env={**os.environ, "TMPDIR": str(dest.parent)},
    )


def _verify_archive(image: Image, path: Path, digest: str) -> None:
    """The archive's index.json must name exactly the manifest we asked for, and hold it."""
    try:
        with tarfile.open(path) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            handle = tar.extractfile(members["index.json"])
            index = json.load(handle) if handle else None
    except (tarfile.TarError, OSError, KeyError, ValueError) as exc:
        raise _bad_archive(image, f"unreadable OCI archive ({exc})") from exc
    if not isinstance(index, dict):
        raise _bad_archive(image, "index.json is not a JSON object")
    named = [m.get("digest") for m in index.get("manifests", []) if isinstance(m, dict)]
    if named != [digest]:
        raise _bad_archive(image, f"index.json names {named}, expected [{digest!r}]")
    if f"blobs/sha256/{digest.removeprefix('sha256:')}" not in members:
        raise _bad_archive(image, f"manifest blob {digest} is missing")


def _bad_archive(image: Image, why: str) -> IntegrityError:
    return IntegrityError(
        f"skopeo wrote a bad archive for image {image.ref} ({image.platform}): {why}",
        fix="retry; if it persists, check `skopeo --version` (>= 1.9 needed) and free disk space",
    )


def _tls(image: Image, flag: str) -> list[str]:
    return [] if image.tls_verify else [f"{flag}=false"]


def _json_object(raw: bytes, image: Image, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ToolError(
            f"skopeo returned an unreadable {what} for image {image.ref}",
            fix=f"run `skopeo inspect --raw docker://{image.ref}` to see what the registry serves",
        )
    return data


def _skopeo(
    image: Image,
    ref: _Ref,
    command: list[str],
    args: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> bytes:
    """Run ``skopeo COMMAND ARGS``; return stdout, or raise the error its message points to."""
    exe = shutil.which("skopeo")
    if exe is None:
        raise ToolError(
            f"skopeo is not installed; it is needed to fetch image {image.ref}",
            fix="apt-get install skopeo",
        )
    proc = subprocess.run(
        [exe, *command, *args], capture_output=True, cwd=cwd, env=env, check=False
    )
    if proc.returncode != 0:
        raise _skopeo_error(image, ref, proc.stderr.decode("utf-8", errors="replace"))
    return proc.stdout


def _skopeo_detail(stderr: str) -> str:
    """The fatal message without skopeo's log framing or its misleading 'parsing' prefix."""
    found = _FATAL_MSG.findall(stderr)
    text: str = found[-1].replace('\\"', '"') if found else stderr.strip()
    if text.startswith(("Error parsing image name", "initializing source")) and ": " in text:
        text = text.split(": ", 1)[1]
    return text or "no message"


_PLAIN_HTTP = ("server gave http response to https client",)
_TLS = ("x509:", "tls:", "certificate")
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "server misbehaving",
    "name resolution",
    "timeout",
    "deadline exceeded",
    "unreachable",
    "no route to host",
    "connection reset",
    "eof",
)
_NOT_FOUND = (
    "manifest unknown",
    "name unknown",
    "not found",
    "denied",
    "unauthorized",
    "authentication required",
)


def _skopeo_error(image: Image, ref: _Ref, stderr: str) -> OfflineError:
    detail = _skopeo_detail(stderr)
    low = detail.lower()
    where = f"image {image.ref} ({image.platform})"
    if "no space left" in low:
        return ResourceError(f"disk full while fetching {where}", fix="free space in the cache")
    if "invalid reference format" in low:
        return ConfigError(f"{where}: {detail}", fix="fix image.ref in the bundle spec")
    if any(s in low for s in _PLAIN_HTTP):
        return NetworkError(
            f"registry {ref.registry} speaks plain HTTP but {where} is fetched over HTTPS",
            fix="for a plain-HTTP LAN registry set `tls_verify = false` on this [[image]]",
        )
    if any(s in low for s in _TLS):
        return NetworkError(
            f"TLS failed with registry {ref.registry} for {where}: {detail}",
            fix=f"trust its CA in /etc/containers/certs.d/{ref.registry}/ca.crt, or for a "
            "plain-HTTP LAN registry set `tls_verify = false` on this [[image]]",
        )
    return _lookup_error(image, ref, where, detail)


def _lookup_error(image: Image, ref: _Ref, where: str, detail: str) -> OfflineError:
    low = detail.lower()
    if any(s in low for s in _UNREACHABLE):
        return NetworkError(
            f"cannot reach registry {ref.registry} for {where}: {detail}",
            fix=f"check the network or proxy (HTTPS_PROXY) and that {ref.registry} is up: "
            f"`skopeo inspect docker://{ref.source}`",
        )
    if any(s in low for s in _NOT_FOUND):
        return NotFoundError(
            f"{where} not found in registry {ref.registry}: {detail}",
            fix=f"check the name and tag; `skopeo list-tags docker://{ref.name}` lists the tags "
            f"(private registry: `skopeo login {ref.registry}`; a moved tag: rebuild with "
            "--refresh)",
        )
    return ToolError(
        f"skopeo failed for {where}: {detail}",
        fix=f"run `skopeo inspect docker://{ref.source}` to see the full error",
    )
