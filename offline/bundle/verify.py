"""``offline bundle verify``: the isolated host's checks of a bundle directory, all at once.

The signed ``manifest.json`` is the only source of truth: it must carry a valid signature by the
TRUSTED key (given out of band; the bundle's own ``manifest.pub`` must be that key), and every
file it lists must be present with its size and sha256. Files it does not list are reported too.
Hashing runs in parallel threads. Every problem is collected; nothing stops at the first.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from offline.bundle.sign import load_public_key, public_pem, verify
from offline.errors import ConfigError, IntegrityError, NotFoundError
from offline.fsutil import sha256_file, sha256_many

# Written after the manifest, so never listed in it.
META_FILES = ("manifest.json", "manifest.sig", "SHA256SUMS")


@dataclass
class Problem:
    path: str
    problem: str  # bad | truncated | missing | unexpected | signature | manifest
    detail: str


@dataclass
class VerifyReport:
    bundle: str
    name: str | None = None
    version: str | None = None
    kind: str | None = None
    signature: str = "unchecked"  # valid | invalid | missing | untrusted-key
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.signature == "valid" and not self.problems

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}

    def summary(self) -> str:
        if self.ok:
            return (
                f"{self.bundle}: {self.name} {self.version} ({self.kind}) verified: "
                f"signature valid, {self.files} files ({self.bytes / 1e6:.1f} MB) intact"
            )
        lines = [f"{self.bundle}: verification FAILED ({len(self.problems)} problems)"]
        lines += [f"  {p.problem:<10} {p.path}: {p.detail}" for p in self.problems]
        return "\n".join(lines)

    def raise_for_problems(self) -> None:
        if not self.ok:
            raise IntegrityError(
                self.summary(),
                fix="get the named files (or the whole bundle) again from the connected side",
            )


def load_manifest(bundle: Path) -> tuple[bytes, dict[str, Any]]:
    path = bundle / "manifest.json"
    if not path.is_file():
        raise NotFoundError(
            f"{bundle} is not a bundle directory (no manifest.json)",
            fix="point at the directory `offline bundle build` wrote, or unpack the archive first",
        )
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise IntegrityError(f"{path} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise IntegrityError(f"{path} is not a bundle manifest (no file list)")
    return raw, data


def expected_files(bundle: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """What a directory holding this manifest must contain (besides META_FILES).

    A diff carries only what changed; once applied onto its base (``apply-diff``) it holds the
    unchanged base files too. Whether it is applied is read off the disk: any base file there.
    """
    files: list[dict[str, Any]] = list(manifest["files"])
    base = manifest.get("base_files") or []
    if manifest.get("kind") == "diff" and any((bundle / f["path"]).exists() for f in base):
        files += base
    return files


def _safe_path(path: object) -> bool:
    if not isinstance(path, str) or not path:
        return False
    parts = PurePosixPath(path).parts
    return not path.startswith("/") and ".." not in parts and "\\" not in path


def check_signature(bundle: Path, raw: bytes, pubkey: Path, report: VerifyReport) -> None:
    trusted = load_public_key(pubkey)
    embedded = bundle / "manifest.pub"
    if embedded.is_file() and embedded.read_bytes().strip() != public_pem(trusted).strip():
        report.signature = "untrusted-key"
        report.problems.append(
            Problem(
                "manifest.pub",
                "signature",
                f"the bundle was signed with a different key than the trusted {pubkey}",
            )
        )
        return
    sig = bundle / "manifest.sig"
    if not sig.is_file():
        report.signature = "missing"
        report.problems.append(Problem("manifest.sig", "signature", "the bundle is not signed"))
        return
    try:
        verify(raw, sig.read_bytes(), trusted, what=str(bundle / "manifest.json"))
    except IntegrityError:
        report.signature = "invalid"
        report.problems.append(
            Problem(
                "manifest.sig",
                "signature",
                f"does not match manifest.json under the trusted key {pubkey} "
                "(the manifest was changed or forged)",
            )
        )
        return
    report.signature = "valid"


def verify_bundle(bundle: Path, pubkey: Path, *, workers: int | None = None) -> VerifyReport:
    """Check ``bundle`` against its signed manifest; every problem lands in the report."""
    started = time.monotonic()
    if not bundle.is_dir():
        raise NotFoundError(f"{bundle}: not a directory", fix="unpack it: offline bundle unpack")
    if not pubkey.is_file():
        raise ConfigError(
            f"trusted public key {pubkey} not found",
            fix="pass the public key you received out of band with --pubkey",
        )
    raw, manifest = load_manifest(bundle)
    info = manifest.get("bundle") or {}
    report = VerifyReport(str(bundle), info.get("name"), info.get("version"), manifest.get("kind"))
    check_signature(bundle, raw, pubkey, report)

    expected: dict[str, dict[str, Any]] = {}
    for entry in expected_files(bundle, manifest):
        if not _safe_path(entry.get("path")):
            report.problems.append(
                Problem(str(entry.get("path")), "manifest", "unsafe path in the manifest")
            )
            continue
        expected[entry["path"]] = entry

    on_disk = {
        str(p.relative_to(bundle)): p for p in bundle.rglob("*") if p.is_file() or p.is_symlink()
    }
    for rel in sorted(set(on_disk) - set(expected) - set(META_FILES)):
        kind = "a symlink" if on_disk[rel].is_symlink() else "a file"
        report.problems.append(Problem(rel, "unexpected", f"{kind} the manifest does not list"))
    to_hash: list[Path] = []
    for rel, entry in sorted(expected.items()):
        path = on_disk.get(rel)
        if path is None or path.is_symlink():
            report.problems.append(Problem(rel, "missing", "listed in the manifest, not on disk"))
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            what = "truncated" if size < entry["size"] else "bad"
            detail = f"{size} bytes, the manifest says {entry['size']}"
            report.problems.append(Problem(rel, what, detail))
            continue
        to_hash.append(path)
    digests = sha256_many(to_hash, workers=workers)
    for path in to_hash:
        rel = str(path.relative_to(bundle))
        if digests[path] != expected[rel]["sha256"]:
            detail = f"sha256 {digests[path]}, the manifest says {expected[rel]['sha256']}"
            report.problems.append(Problem(rel, "bad", detail))
    _check_sums_file(bundle, expected, report)
    report.problems.sort(key=lambda p: (p.problem != "signature", p.path))
    report.files = len(expected)
    report.bytes = sum(int(e["size"]) for e in expected.values())
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _check_sums_file(
    bundle: Path, expected: dict[str, dict[str, Any]], report: VerifyReport
) -> None:
    """SHA256SUMS is unsigned; it must at least agree with the signed manifest."""
    sums = bundle / "SHA256SUMS"
    if not sums.is_file():
        report.problems.append(Problem("SHA256SUMS", "missing", "not on disk"))
        return
    listed: dict[str, str] = {}
    for line in sums.read_text(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name.lstrip("*")] = digest
    for rel, entry in expected.items():
        if rel in listed and listed[rel] != entry["sha256"]:
            report.problems.append(
                Problem("SHA256SUMS", "bad", f"its sha256 for {rel} disagrees with the manifest")
            )
            return
    for name in ("manifest.json", "manifest.sig"):
        path = bundle / name
        if name in listed and path.is_file() and sha256_file(path) != listed[name]:
            report.problems.append(
                Problem("SHA256SUMS", "bad", f"its sha256 for {name} does not match the file")
            )
            return
