"""Bundles: the connected side packs, the isolated side verifies and installs.

Public API::

    build(spec_path, out, key=..., max_part_size=..., since=..., cache_dir=..., refresh=...)
    load_spec(path) / parse_spec(text, path)
    keygen(private_key_path)
"""

from offline.bundle.build import BuildResult, build
from offline.bundle.sign import keygen
from offline.bundle.spec import LoadedSpec, Spec, load_spec, parse_spec

__all__ = ["BuildResult", "LoadedSpec", "Spec", "build", "keygen", "load_spec", "parse_spec"]
