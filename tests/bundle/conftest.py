from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from offline.bundle.sign import keygen
from tests.fixtures.pyindex import PyIndex

SpecFactory = Callable[..., Path]


def write_safetensors(path: Path, tensors: int = 2) -> None:
    """A structurally valid safetensors file: 8-byte header length, JSON header, data."""
    header = {
        f"w{i}": {"dtype": "F32", "shape": [4], "data_offsets": [16 * i, 16 * (i + 1)]}
        for i in range(tensors)
    }
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16 * tensors)


@pytest.fixture()
def make_spec(tmp_path: Path, pyindex: PyIndex) -> SpecFactory:
    """Write a spec against the test index; keyword arguments tweak it."""

    def factory(
        requirements: str = "alpha\ndelta\n",
        *,
        platforms: tuple[str, ...] = ("manylinux_2_28_x86_64",),
        extra: str = "",
        index_url: str | None = None,
        name: str = "spec.toml",
        version: str = "1.0",
    ) -> Path:
        spec_dir = tmp_path / "spec"
        spec_dir.mkdir(exist_ok=True)
        (spec_dir / "req.in").write_text(requirements)
        plats = ", ".join(f'"{p}"' for p in platforms)
        text = f"""
[bundle]
name = "test"
version = "{version}"
[target]
python = "3.11"
platforms = [{plats}]
[toolkit]
wheel = false
[bootstrap]
requirements = []
[[env]]
name = "app"
requirements = "req.in"
index_url = "{index_url or pyindex.url}"
use_pip_config = false
{extra}
"""
        path = spec_dir / name
        path.write_text(text)
        return path

    return factory


@pytest.fixture()
def signing_key(tmp_path: Path) -> tuple[Path, Path]:
    return keygen(tmp_path / "keys" / "signing.pem")
