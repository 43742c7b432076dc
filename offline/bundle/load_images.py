"""Push a bundle's images into a LAN registry, or load them into a local engine, with skopeo.

Every archive under ``images/`` holds one platform manifest, stored byte for byte. The archives
of one ref are unpacked into a single OCI layout; when the bundle carries several platforms of
that ref, a new image index over them becomes the tag, so the tag offers every platform. Copies
use ``--preserve-digests``, and afterwards the registry is asked for each manifest: it must
serve exactly the digest the bundle recorded.

Destinations:

- registry ``HOST:PORT[/PREFIX]``: ``docker.io/library/busybox:1.36`` -> ``HOST:PORT/library/
  busybox:1.36``; ``127.0.0.1:5000/tiny:1.0`` -> ``HOST:PORT/tiny:1.0``; a ref pinned only by
  digest is pushed by digest.
- engine ``docker`` (``docker-daemon:``) or ``podman`` (``containers-storage:``): the original
  name and tag, so existing compose files and unit files keep working; skopeo picks this host's
  platform. A digest-only ref is tagged ``sha256-<hex>`` there (an engine needs a tag).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from offline.bundle.images import (
    _DIGEST,
    _PLAIN_HTTP,
    _TLS,
    _UNREACHABLE,
    _platform_parts,
    _Ref,
    _skopeo_detail,
)
from offline.bundle.progress import NullReporter, Reporter
from offline.errors import (
    ConfigError,
    IntegrityError,
    NetworkError,
    NotFoundError,
    OfflineError,
    ResourceError,
    ToolError,
)
from offline.fsutil import sha256_file

__all__ = ["ENGINES", "LoadedImage", "load_images"]

ENGINES = {"docker": "docker-daemon", "podman": "containers-storage"}

_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_BLOB = re.compile(r"^blobs/sha256/[0-9a-f]{64}$")
_REGISTRY = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+|/)[a-z0-9]+)*)?$"
)
_DENIED = ("denied", "unauthorized", "authentication required")
_NO_DOCKER = ("cannot connect to the docker daemon", "docker.sock")
_TIMEOUT = "120s"


@dataclass(frozen=True)
class LoadedImage:
    """One bundle image at its destination.

    ``served_digest`` is what the destination answers for ``destination`` (the recorded digest,
    or the digest of the index that groups several platforms); ``None`` for a local engine.
    """

    ref: str
    platform: str
    digest: str
    destination: str
    served_digest: str | None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def load_images(
    bundle: Path,
    registry: str | None = None,
    *,
    engine: str | None = None,
    tls_verify: bool = True,
    reporter: Reporter | None = None,
) -> list[LoadedImage]:
    """Copy every image recorded in ``bundle/manifest.json`` to a registry or a local engine.

    Args:
        bundle: the bundle directory (holding ``manifest.json`` and ``images/``).
        registry: ``HOST:PORT`` (optionally ``/PREFIX``) of the LAN registry to push to.
        engine: ``"docker"`` or ``"podman"`` to load into that engine instead.
        tls_verify: verify the registry's TLS certificate; ``False`` also allows plain HTTP.
        reporter: receives progress.

    Returns:
        One entry per image record, in manifest order.

    Raises:
        ConfigError, NotFoundError, IntegrityError, NetworkError, ToolError, ResourceError.
    """
    reporter = reporter or NullReporter()
    dest = _Destination.choose(registry, engine, tls_verify)
    records = _read_records(bundle)
    for record in records:
        _check_archive(record)
    loaded: list[LoadedImage] = []
    for group in _by_ref(records):
        task = f"image {group[0].ref} -> {dest.describe()}"
        reporter.start(task)
        loaded += _load_group(group, dest)
        reporter.done(task)
    return loaded


@dataclass(frozen=True)
class _Record:
    ref: str
    platform: str
    digest: str
    archive_sha256: str
    size: int
    archive: Path

    @property
    def where(self) -> str:
        return f"image {self.ref} ({self.platform})"


@dataclass(frozen=True)
class _Destination:
    registry: str | None
    engine: str | None
    tls_verify: bool

    @classmethod
    def choose(cls, registry: str | None, engine: str | None, tls_verify: bool) -> _Destination:
        if (registry is None) == (engine is None):
            raise ConfigError(
                "give exactly one destination for the images",
                fix="pass --registry HOST:PORT (a LAN registry), or --docker, or --podman",
            )
        if registry is not None:
            return cls(_check_registry(registry), None, tls_verify)
        if engine not in ENGINES:
            raise ConfigError(
                f"unknown container engine {engine!r}", fix="use --docker or --podman"
            )
        _check_engine(engine)
        return cls(None, engine, tls_verify)

    def describe(self) -> str:
        return self.registry or str(self.engine)

    def target(self, ref: _Ref, top_digest: str) -> str:
        """The skopeo destination for ``ref`` whose layout's top manifest is ``top_digest``."""
        if self.registry is not None:
            repo = f"{self.registry}/{_repository(ref)}"
            tail = f":{ref.tag}" if ref.tag else f"@{top_digest}" if ref.digest else ":latest"
            return f"docker://{repo}{tail}"
        tag = ref.tag or ("latest" if ref.digest is None else f"sha256-{_hex(ref.digest)}")
        return f"{ENGINES[str(self.engine)]}:{ref.name}:{tag}"

    def tls(self, flag: str) -> list[str]:
        return [] if self.tls_verify or self.registry is None else [f"{flag}=false"]


def _check_registry(registry: str) -> str:
    text = registry.strip().rstrip("/")
    if text.startswith(("http://", "https://")):
        bare = text.split("://", 1)[1]
        raise ConfigError(
            f"registry {registry!r} has a URL scheme; skopeo wants HOST:PORT",
            fix=f"pass --registry {bare} (add --no-tls-verify for a plain-HTTP registry)",
        )
    if not _REGISTRY.match(text):
        raise ConfigError(
            f"registry {registry!r} is not HOST[:PORT][/PREFIX]",
            fix="pass the LAN registry's address, e.g. --registry registry.lan:5000",
        )
    return text


def _check_engine(engine: str) -> None:
    """Refuse early, before any copy, when the engine cannot be there."""
    if engine == "podman":
        if shutil.which("podman") is None:
            raise ToolError(
                "podman is not installed, so there is no podman image store to load into",
                fix="install podman from the bundle's packages, or push to a LAN registry with "
                "`offline images load BUNDLE --registry HOST:PORT`",
            )
        return
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    socket = Path(host.removeprefix("unix://"))
    if host.startswith("unix://") and not socket.exists():
        raise _no_docker(f"its socket {socket} does not exist")


def _no_docker(why: str) -> ToolError:
    return ToolError(
        f"no Docker engine is running on this host: {why}",
        fix="start it (`systemctl start docker`), set DOCKER_HOST to a running engine, or push to "
        "a LAN registry with `offline images load BUNDLE --registry HOST:PORT`",
    )


def _repository(ref: _Ref) -> str:
    """The repository path without the registry host; Docker Hub's short names get library/."""
    path = ref.name.removeprefix(f"{ref.registry}/")
    if ref.registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return path


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _read_records(bundle: Path) -> list[_Record]:
    manifest_path = bundle / "manifest.json"
    if not manifest_path.is_file():
        raise NotFoundError(
            f"{bundle} is not a bundle: {manifest_path} does not exist",
            fix="pass the bundle directory (the one holding manifest.json), reassembled and "
            "unpacked if it came as split volumes",
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(
            f"{manifest_path} is not readable JSON ({exc})",
            fix="copy the bundle again and check it with `sha256sum -c SHA256SUMS`",
        ) from exc
    entries = manifest.get("images") if isinstance(manifest, dict) else None
    if not entries:
        raise NotFoundError(
            f"bundle {bundle} holds no container images",
            fix="add [[image]] entries to the bundle spec and rebuild it with "
            "`offline bundle build` on the connected side",
        )
    return [_record(bundle, entry, manifest_path) for entry in _as_list(entries, manifest_path)]


def _as_list(entries: object, manifest_path: Path) -> list[dict[str, Any]]:
    if isinstance(entries, list) and all(isinstance(e, dict) for e in entries):
        return entries
    raise _bad_manifest(manifest_path, "'images' is not a list of objects")


def _record(bundle: Path, entry: dict[str, Any], manifest_path: Path) -> _Record:
    fields = ("ref", "platform", "digest", "archive_sha256", "path")
    values = [entry.get(k) for k in fields]
    size = entry.get("size")
    if not all(isinstance(v, str) and v for v in values) or not isinstance(size, int):
        raise _bad_manifest(manifest_path, f"image entry {entry.get('ref')!r} lacks {fields}")
    ref, platform, digest, sha, rel = (str(v) for v in values)
    if not _DIGEST.match(digest):
        raise _bad_manifest(manifest_path, f"image {ref} has a malformed digest {digest!r}")
    archive = bundle / rel
    if not archive.resolve().is_relative_to(bundle.resolve()):
        raise _bad_manifest(manifest_path, f"image {ref} points outside the bundle: {rel!r}")
    return _Record(ref, platform, digest, sha, size, archive)


def _bad_manifest(path: Path, why: str) -> IntegrityError:
    return IntegrityError(
        f"{path}: {why}",
        fix="copy the bundle again and check it with `offline bundle verify` or "
        "`sha256sum -c SHA256SUMS`",
    )


def _check_archive(record: _Record) -> None:
    """The archive must exist and be the very file the manifest describes."""
    if not record.archive.is_file():
        raise NotFoundError(
            f"the archive of {record.where} is missing: {record.archive}",
            fix="copy the bundle's images/ directory again; `sha256sum -c SHA256SUMS` in the "
            "bundle lists every missing or damaged file",
        )
    size = record.archive.stat().st_size
    if size != record.size or sha256_file(record.archive) != record.archive_sha256:
        raise IntegrityError(
            f"the archive of {record.where} does not match the bundle manifest: {record.archive}",
            fix="copy the bundle again; `sha256sum -c SHA256SUMS` in the bundle shows the damage",
        )


def _by_ref(records: Iterable[_Record]) -> list[list[_Record]]:
    groups: dict[str, list[_Record]] = {}
    for record in records:
        groups.setdefault(record.ref, []).append(record)
    return list(groups.values())


def _load_group(group: list[_Record], dest: _Destination) -> list[LoadedImage]:
    ref = _Ref.parse(group[0].ref)
    with tempfile.TemporaryDirectory(prefix="offline-images-") as tmp:
        layout = Path(tmp) / "layout"
        top = _assemble(layout, group)
        target = dest.target(ref, top)
        _copy(layout, target, dest, group)
    served = _verify_registry(group, dest, target, top) if dest.registry else None
    shown = target.removeprefix("docker://")
    return [LoadedImage(r.ref, r.platform, r.digest, shown, served) for r in group]


def _assemble(layout: Path, group: list[_Record]) -> str:
    """Write an OCI layout whose one entry holds ``group``; returns that entry's digest.

    The entry has no ref name: skopeo then takes the only entry whatever its media type, while
    a named lookup would skip Docker schema 2 manifests.
    """
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descriptors = [_unpack(record, blobs) for record in group]
    top = descriptors[0] if len(group) == 1 else _write_index(blobs, group, descriptors)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "mediaType": _OCI_INDEX,
        "manifests": [top],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return str(top["digest"])


def _unpack(record: _Record, blobs: Path) -> dict[str, Any]:
    """Copy the archive's blobs into ``blobs``; returns the descriptor of its one manifest."""
    try:
        with tarfile.open(record.archive) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            descriptor = _archive_manifest(record, tar, members)
            for name, member in members.items():
                if _BLOB.match(name) and member.isfile():
                    _extract(tar, member, blobs / name.rsplit("/", 1)[1])
    except (tarfile.TarError, KeyError, ValueError) as exc:
        raise _bad_archive(record, f"unreadable OCI archive ({exc})") from exc
    except OSError as exc:
        raise _os_error(exc, record) from exc
    if not (blobs / _hex(record.digest)).is_file():
        raise _bad_archive(record, f"its manifest blob {record.digest} is missing")
    return descriptor


def _archive_manifest(
    record: _Record, tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]
) -> dict[str, Any]:
    handle = tar.extractfile(members["index.json"])
    index = json.load(handle) if handle else None
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise _bad_archive(record, "its index.json does not name exactly one manifest")
    entry = entries[0]
    if entry.get("digest") != record.digest:
        raise _bad_archive(record, f"it holds {entry.get('digest')}, not {record.digest}")
    return {k: entry[k] for k in ("mediaType", "digest", "size") if k in entry}


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    if dest.exists():  # content-addressed: a blob shared by two platforms is the same bytes
        return
    source = tar.extractfile(member)
    if source is None:
        raise ValueError(f"{member.name} is not a regular file")
    with source, dest.open("wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


def _bad_archive(record: _Record, why: str) -> IntegrityError:
    return IntegrityError(
        f"the archive of {record.where} is not the image the bundle recorded: {why}",
        fix="rebuild the bundle on the connected side with `offline bundle build`",
    )


def _os_error(exc: OSError, record: _Record) -> OfflineError:
    return ResourceError(
        f"cannot unpack the archive of {record.where} into {tempfile.gettempdir()}: {exc}",
        fix="free space there, or point TMPDIR at a larger filesystem",
    )


def _write_index(
    blobs: Path, group: list[_Record], descriptors: list[dict[str, Any]]
) -> dict[str, Any]:
    """An index over the group's platform manifests (a Docker list if all are Docker)."""
    docker = all(d.get("mediaType") == _DOCKER_MANIFEST for d in descriptors)
    media_type = _DOCKER_LIST if docker else _OCI_INDEX
    entries = [
        {**d, "platform": _platform(r.platform)} for r, d in zip(group, descriptors, strict=True)
    ]
    body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries})
    raw = body.encode()
    digest = hashlib.sha256(raw).hexdigest()
    (blobs / digest).write_bytes(raw)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(raw)}


def _platform(text: str) -> dict[str, str]:
    os_, arch, variant = _platform_parts(text)
    return {"os": os_, "architecture": arch, **({"variant": variant} if variant else {})}


def _copy(layout: Path, target: str, dest: _Destination, group: list[_Record]) -> None:
    if dest.registry is not None:
        options = ["--all", "--preserve-digests", *dest.tls("--dest-tls-verify")]
    else:  # an engine stores one platform; docker-daemon rewrites the manifest, so no digests
        options = ["--preserve-digests"] if dest.engine == "podman" else []
    source = f"oci:{layout}"
    _skopeo(["copy", "--quiet", *options, source, target], group[0], dest)


def _verify_registry(group: list[_Record], dest: _Destination, target: str, top: str) -> str:
    """Ask the registry for every pushed manifest; returns the digest it serves for ``target``."""
    repo = target.split("@", 1)[0] if "@" in target else target.rsplit(":", 1)[0]
    for record in group:
        _expect(record, dest, f"{repo}@{record.digest}", record.digest)
    if "@" not in target:
        _expect(group[0], dest, target, top)
    return top


def _expect(record: _Record, dest: _Destination, reference: str, digest: str) -> None:
    command = ["--command-timeout", _TIMEOUT, "inspect", "--raw", *dest.tls("--tls-verify")]
    raw = _skopeo([*command, reference], record, dest)
    served = f"sha256:{hashlib.sha256(raw).hexdigest()}"
    if served != digest:
        raise IntegrityError(
            f"registry {dest.registry} serves {served} for {record.where} at "
            f"{reference.removeprefix('docker://')}, not the recorded {digest}",
            fix="check that nothing else pushes to that repository and that the registry keeps "
            "manifests unchanged, then run `offline images load` again",
        )


def _skopeo(args: list[str], record: _Record, dest: _Destination) -> bytes:
    exe = shutil.which("skopeo")
    if exe is None:
        raise ToolError(
            f"skopeo is not installed; it is needed to load {record.where}",
            fix="install skopeo from the bundle's packages (apt-get install skopeo)",
        )
    proc = subprocess.run([exe, *args], capture_output=True, check=False)
    if proc.returncode != 0:
        detail = _skopeo_detail(proc.stderr.decode("utf-8", errors="replace"))
        raise _copy_error(record, dest, detail)
    return proc.stdout


def _copy_error(record: _Record, dest: _Destination, detail: str) -> OfflineError:
    low = detail.lower()
    where = f"{record.where} -> {dest.describe()}"
    if "no space left" in low:
        return ResourceError(f"disk full while loading {where}", fix="free space, then retry")
    if dest.engine == "docker" and any(s in low for s in _NO_DOCKER):
        return _no_docker(detail)
    if dest.registry is None:
        return ToolError(f"skopeo failed for {where}: {detail}", fix=_engine_fix(dest))
    return _registry_error(where, str(dest.registry), detail)


def _engine_fix(dest: _Destination) -> str:
    if dest.engine == "podman":
        return "check `podman info` works for this user, then retry"
    return "check `docker info` works for this user, then retry"


def _registry_error(where: str, registry: str, detail: str) -> OfflineError:
    low = detail.lower()
    host = registry.split("/", 1)[0]
    if any(s in low for s in _PLAIN_HTTP):
        return NetworkError(
            f"registry {host} speaks plain HTTP but {where} was sent over HTTPS",
            fix="add --no-tls-verify for a plain-HTTP LAN registry",
        )
    if any(s in low for s in _TLS):
        return NetworkError(
            f"TLS failed with registry {host} for {where}: {detail}",
            fix=f"trust its CA in /etc/containers/certs.d/{host}/ca.crt, or add --no-tls-verify",
        )
    if any(s in low for s in _DENIED):
        return NetworkError(
            f"registry {host} refused {where}: {detail}",
            fix=f"log in with `skopeo login {host}`, then retry",
        )
    if any(s in low for s in _UNREACHABLE):
        return NetworkError(
            f"cannot reach registry {host} for {where}: {detail}",
            fix=f"check that the registry runs and answers: `curl http://{host}/v2/` (or https://)",
        )
    if "manifest unknown" in low:
        return IntegrityError(
            f"registry {host} does not serve what was pushed for {where}: {detail}",
            fix="check that nothing else deletes from that repository, then load again",
        )
    return ToolError(
        f"skopeo failed for {where}: {detail}",
        fix=f"check `skopeo --version` (1.9 or newer) and that {host} accepts pushes, then retry",
    )
