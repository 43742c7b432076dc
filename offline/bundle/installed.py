"""The install record, ``PREFIX/installed.json``: which bundle is installed, when it was built, who
signed it, and whether another bundle may replace it.

An older bundle, even one validly signed, must not silently replace a newer one: replaying an
old bundle is how a known-vulnerable package gets back onto a host. Like ``archive.py`` this
runs on an isolated host before the toolkit exists, as a standalone script next to
``install-offline.sh``, so it uses the standard library only::

    python3 offline-installed.py check PREFIX MANIFEST [--allow-downgrade]
    python3 offline-installed.py record PREFIX MANIFEST --signer SHA256 [--envs "a b"]

Versions are ordered as PEP 440 orders them (``1.2.0rc1 < 1.2.0 < 1.2.0.post1 < 1.10``); the
same version is ordered by build time. Bundles of another name are ordered by build time only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offline.errors import DowngradeError, IntegrityError
else:
    try:
        from offline.errors import DowngradeError, IntegrityError
    except ImportError:  # standalone on a host without the toolkit

        class _Error(Exception):
            exit_code = 1

            def __init__(self, message: str, *, fix: str | None = None) -> None:
                super().__init__(message)
                self.message, self.fix = message, fix

        class DowngradeError(_Error):
            exit_code = 13

        class IntegrityError(_Error):
            exit_code = 7


RECORD = "installed.json"
_CREATED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z", re.ASCII)
_VERSION = re.compile(
    r"^v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|alpha|b|beta|c|rc|pre|preview)[-_.]?(?P<pre_n>\d*))?"
    r"(?:-(?P<post_implicit>\d+)|[-_.]?(?P<post>post|rev|r)[-_.]?(?P<post_n>\d*))?"
    r"(?:[-_.]?(?P<dev>dev)[-_.]?(?P<dev_n>\d*))?\Z",
    re.IGNORECASE | re.ASCII,
)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}

VersionKey = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def version_key(text: str) -> VersionKey | None:
    """A sort key that orders versions as PEP 440 does; None for what PEP 440 cannot read."""
    match = _VERSION.match(text)
    if match is None:
        return None
    release = tuple(int(x) for x in match["release"].split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    post_n = match["post_implicit"] or match["post_n"]
    has_post = match["post_implicit"] is not None or match["post"] is not None
    has_dev = match["dev"] is not None
    if match["pre"]:
        pre: tuple[int, ...] = (_PRE_RANK[match["pre"].lower()], int(match["pre_n"] or 0))
    else:
        pre = (-1,) if has_dev and not has_post else (3,)  # 1.0.dev0 < 1.0a0; 1.0 > 1.0rc9
    post = (int(post_n or 0),) if has_post else (-1,)
    dev = (0, int(match["dev_n"] or 0)) if has_dev else (1,)
    return release, pre, post, dev


def _describe(bundle: dict[str, Any]) -> str:
    built = bundle.get("created") or "at an unknown time"
    return f"{bundle.get('name')} {bundle.get('version')} (built {built})"


def _identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """Name, version and build time of a bundle manifest."""
    info = manifest.get("bundle") or {}
    if not isinstance(info, dict):
        info = {}
    created = manifest.get("created")
    return {
        "name": str(info.get("name", "")),
        "version": str(info.get("version", "")),
        "created": created if isinstance(created, str) and _CREATED.match(created) else None,
    }


def read_record(prefix: Path) -> dict[str, Any] | None:
    """What is installed in PREFIX: the record, completed from the installed manifest when an
    older installer wrote it; None when nothing is installed there."""
    record: dict[str, Any] = {}
    try:
        loaded = json.loads((prefix / RECORD).read_text())
        record = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError, RecursionError):
        pass
    try:
        manifest = json.loads((prefix / "bundle" / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):
        manifest = None
    if not record and not isinstance(manifest, dict):
        return None
    if isinstance(manifest, dict):
        for key, value in _identity(manifest).items():
            record.setdefault(key, value)
    return record


def _built(identity: dict[str, Any]) -> str | None:
    created = identity.get("created")
    return created if isinstance(created, str) and _CREATED.match(created) else None


def refusal(installed: dict[str, Any] | None, candidate: dict[str, Any]) -> str | None:
    """Why ``candidate`` (a manifest's identity) may not replace ``installed``; None if it may."""
    if installed is None:
        return None
    old_built, new_built = _built(installed), _built(candidate)
    older_build = bool(old_built and new_built and new_built < old_built)
    if installed.get("name") != candidate["name"]:
        if older_build:
            return f"it was built before the installed {_describe(installed)}"
        return None
    old_key, new_key = version_key(str(installed.get("version"))), version_key(candidate["version"])
    if old_key is not None and new_key is not None and old_key != new_key:
        return "its version is older than the installed one" if new_key < old_key else None
    if installed.get("version") != candidate["version"] and (old_key is None or new_key is None):
        return "it was built before the installed one" if older_build else None
    return "the same version, built earlier" if older_build else None


def _installed(prefix: Path) -> list[dict[str, Any]]:
    """Every account of what is installed: the record, and the bundle in place (which an
    interrupted install may have swapped in after the record was written)."""
    found = []
    record = read_record(prefix)
    if record is not None:
        found.append(record)
    try:
        manifest = json.loads((prefix / "bundle" / "manifest.json").read_text())
    except (OSError, ValueError, RecursionError):
        manifest = None
    if isinstance(manifest, dict):
        found.append(_identity(manifest))
    return found


def check(prefix: Path, manifest_path: Path, *, allow_downgrade: bool = False) -> str:
    """Refuse (DowngradeError) a bundle older than the one installed in PREFIX; a note when a
    downgrade is allowed, else ''."""
    candidate = _identity(_load(manifest_path))
    for installed in _installed(prefix):
        why = refusal(installed, candidate)
        if why is not None:
            break
    else:
        return ""
    what = f"{_describe(candidate)} is older than the installed {_describe(installed)}: {why}"
    if allow_downgrade:
        return f"warning: downgrading on purpose (--allow-downgrade): {what}"
    raise DowngradeError(
        f"refusing to install {what}; an old bundle can bring back what a newer one fixed",
        fix="install a bundle at least as new as the installed one, or pass --allow-downgrade "
        "to roll back on purpose",
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise IntegrityError(f"{path} is not a readable bundle manifest ({exc})") from exc
    if not isinstance(data, dict):
        raise IntegrityError(f"{path} is not a bundle manifest")
    return data


def record(
    prefix: Path, manifest_path: Path, *, signer: str, envs: list[str], complete: bool = True
) -> dict[str, Any]:
    """Write PREFIX/installed.json (atomically): the bundle in place, and whether the install
    around it finished (``complete``) or only swapped the bundle in so far."""
    manifest_bytes = manifest_path.read_bytes()
    identity = _identity(_load(manifest_path))
    entry = {
        "bundle": f"{identity['name']} {identity['version']}",
        **identity,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "signer_sha256": signer,
        "envs": envs,
        "complete": complete,
        "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # Not offline.fsutil.atomic_write_text: this file runs standalone before the toolkit exists.
    tmp = prefix / f".{RECORD}.tmp"
    with tmp.open("w") as fh:
        json.dump(entry, fh, indent=2)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, prefix / RECORD)
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="offline-installed", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chk = sub.add_parser("check", help="refuse a bundle older than the installed one")
    chk.add_argument("prefix", type=Path)
    chk.add_argument("manifest", type=Path)
    chk.add_argument("--allow-downgrade", action="store_true")
    rec = sub.add_parser("record", help="write PREFIX/installed.json")
    rec.add_argument("prefix", type=Path)
    rec.add_argument("manifest", type=Path)
    rec.add_argument("--signer", required=True, help="sha256 of the trusted key (DER)")
    rec.add_argument("--envs", default="")
    rec.add_argument("--partial", action="store_true", help="the envs are not installed yet")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            note = check(args.prefix, args.manifest, allow_downgrade=args.allow_downgrade)
            if note:
                print(note, file=sys.stderr)
        else:
            record(
                args.prefix,
                args.manifest,
                signer=args.signer,
                envs=args.envs.split(),
                complete=not args.partial,
            )
    except (DowngradeError, IntegrityError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
