"""Bundles: the connected side packs, the isolated side verifies and installs.

Public API::

    build(spec_path, out, key=..., max_part_size=..., since=..., cache_dir=..., refresh=...)
    load_spec(path) / parse_spec(text, path)
    keygen(private_key_path)

Imports are lazy: the isolated side uses verify/unpack without the connected side's libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offline.bundle.build import BuildResult, build
    from offline.bundle.sign import keygen
    from offline.bundle.spec import LoadedSpec, Spec, load_spec, parse_spec

_LAZY = {
    "BuildResult": "offline.bundle.build",
    "build": "offline.bundle.build",
    "keygen": "offline.bundle.sign",
    "LoadedSpec": "offline.bundle.spec",
    "Spec": "offline.bundle.spec",
    "load_spec": "offline.bundle.spec",
    "parse_spec": "offline.bundle.spec",
}

__all__ = ["BuildResult", "LoadedSpec", "Spec", "build", "keygen", "load_spec", "parse_spec"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'offline.bundle' has no attribute {name!r}")
