"""``offline bundle apply-diff``: turn an installed bundle plus a verified diff into the new bundle.

A diff (``offline bundle build --since OLD/manifest.json``) carries the files that changed and
names its base by the sha256 of the base's ``manifest.json``. Applying it builds the new bundle
beside the base from hard links of the unchanged files and copies of the new ones, checks the
result against the diff's signed manifest, and only then swaps it into place.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from offline.bundle.verify import expected_files, load_manifest, verify_bundle
from offline.errors import ConfigError, IntegrityError, NotFoundError
from offline.fsutil import (
    link_or_copy,
    replace_dir,
    sha256_bytes,
    sha256_file,
    write_sha256sums,
)

# Where install-offline.sh keeps the bundle and the trusted key inside its prefix.
PREFIX_BUNDLE = "bundle"
PREFIX_TRUSTED_KEY = "etc/trusted.pub.pem"


@dataclass
class ApplyResult:
    out: str
    name: str | None
    version: str | None
    base_version: str | None
    reused: int
    added: int
    dropped: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def installed_bundle(base: Path) -> Path:
    """``base`` is a bundle directory or an install prefix holding one."""
    for candidate in (base, base / PREFIX_BUNDLE):
        if (candidate / "manifest.json").is_file():
            return candidate
    raise NotFoundError(
        f"--base {base}: no installed bundle there (no manifest.json, nor {PREFIX_BUNDLE}/)",
        fix="pass the install prefix (e.g. /opt/deepseek-offline) or its bundle directory",
    )


def _trusted_key(base_dir: Path, pubkey: Path | None) -> Path:
    if pubkey is not None:
        return pubkey
    recorded = base_dir.parent / PREFIX_TRUSTED_KEY
    if base_dir.name == PREFIX_BUNDLE and recorded.is_file():
        return recorded
    raise ConfigError(
        "no trusted public key: --base is not an install prefix that recorded one",
        fix="pass the trusted public key with --pubkey",
    )


def apply_diff(
    diff: Path, base: Path, *, pubkey: Path | None = None, out: Path | None = None
) -> ApplyResult:
    """Apply the diff bundle ``diff`` onto the installed bundle ``base``.

    Raises:
        IntegrityError: the diff fails verification, names another base, or a base file changed.
        ConfigError: ``diff`` is a full bundle, or no trusted key is known.
    """
    base_dir = installed_bundle(base)
    key = _trusted_key(base_dir, pubkey)
    verify_bundle(diff, key).raise_for_problems()
    raw, manifest = load_manifest(diff)
    if manifest.get("kind") != "diff" or not manifest.get("base"):
        raise ConfigError(
            f"{diff} is a full bundle, not a diff",
            fix=f"install it directly: scripts/install-offline.sh {diff} --pubkey KEY",
        )
    base_raw, base_manifest = load_manifest(base_dir)
    wanted = manifest["base"]
    if sha256_bytes(base_raw) != wanted.get("manifest_sha256"):
        have = base_manifest.get("bundle") or {}
        raise IntegrityError(
            f"{diff} is a diff against {wanted.get('name')} {wanted.get('version')} "
            f"(created {wanted.get('created')}), but {base_dir} holds {have.get('name')} "
            f"{have.get('version')} (created {base_manifest.get('created')})",
            fix="apply the diffs in order, or install the full bundle of the new version",
        )
    target = (out or base_dir).resolve()
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.applying-"))
    try:
        _assemble(stage, diff, base_dir, manifest, raw)
        verify_bundle(stage, key).raise_for_problems()
        replace_dir(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    carried = {f["path"] for f in expected_files(base_dir, base_manifest)}
    info, base_info = manifest.get("bundle") or {}, base_manifest.get("bundle") or {}
    return ApplyResult(
        out=str(target),
        name=info.get("name"),
        version=info.get("version"),
        base_version=base_info.get("version"),
        reused=len(manifest["base_files"]),
        added=len(manifest["files"]),
        dropped=len(carried - {f["path"] for f in manifest["base_files"]}),
    )


def _assemble(
    stage: Path, diff: Path, base_dir: Path, manifest: dict[str, Any], raw: bytes
) -> None:
    changed = []
    for entry in manifest["base_files"]:
        src = base_dir / entry["path"]
        if not src.is_file():
            raise IntegrityError(
                f"{base_dir}: {entry['path']} is missing; the diff reuses it",
                fix="verify the installed bundle (offline bundle verify) and reinstall it",
            )
        link_or_copy(src, stage / entry["path"])
        if sha256_file(stage / entry["path"]) != entry["sha256"]:
            changed.append(entry["path"])
    if changed:
        raise IntegrityError(
            f"{base_dir}: files the diff reuses were changed since install: {', '.join(changed)}",
            fix="verify the installed bundle (offline bundle verify) and reinstall it",
        )
    for entry in manifest["files"]:
        link_or_copy(diff / entry["path"], stage / entry["path"])
    (stage / "manifest.json").write_bytes(raw)
    shutil.copyfile(diff / "manifest.sig", stage / "manifest.sig")
    write_sha256sums(
        stage, [(f["sha256"], f["path"]) for f in manifest["files"] + manifest["base_files"]]
    )
