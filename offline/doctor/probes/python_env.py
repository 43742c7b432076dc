"""Print an interpreter's facts as one JSON object on stdout: ``python -I python_env.py DEEP``.

Its version, ``sys.prefix`` and ``sys.base_prefix``, every installed distribution's version and,
with DEEP ``1``, the installed files whose sha256 differs from their RECORD (or that are gone).
Standard library only, run isolated: the doctor's view of an env must not depend on the env.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def _changed(dist: metadata.Distribution) -> list[str]:
    """The files of ``dist`` that do not match their RECORD hash."""
    bad = []
    for file in dist.files or []:
        if not file.hash or file.hash.mode != "sha256":
            continue
        try:
            digest = hashlib.sha256(Path(file.locate()).read_bytes()).digest()
        except OSError:
            bad.append(f"{file} (missing)")
            continue
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != file.hash.value:
            bad.append(str(file))
    return bad


def facts(deep: bool) -> dict[str, Any]:
    dists: dict[str, str] = {}
    bad: dict[str, list[str]] = {}
    for dist in metadata.distributions():
        meta = dist.metadata  # parsed on each access: read it once
        name = (meta["Name"] or "").lower().replace("_", "-").replace(".", "-")
        if not name:
            continue
        dists[name] = meta["Version"]
        changed = _changed(dist) if deep else []
        if changed:
            bad.setdefault(name, []).extend(changed)
    return {
        "version": "{}.{}.{}".format(*sys.version_info[:3]),
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "dists": dists,
        "record_mismatches": bad,
    }


def main() -> None:
    print(json.dumps(facts(sys.argv[1] == "1")))


if __name__ == "__main__":
    main()
