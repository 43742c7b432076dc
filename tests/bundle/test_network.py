"""The one test that talks to the real package registry (marker `network`; CI runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from offline.bundle.build import build

SPEC = """
[bundle]
name = "net"
version = "1"
[target]
python = "3.11"
platforms = ["manylinux_2_28_aarch64"]
[toolkit]
wheel = false
[[env]]
name = "edge"
requirements = "req.in"
index_url = "https://pypi.org/simple"
use_pip_config = false
"""


@pytest.mark.network
def test_foreign_platform_from_the_real_registry(tmp_path: Path) -> None:
    (tmp_path / "req.in").write_text("markupsafe==3.0.2\n")
    (tmp_path / "spec.toml").write_text(SPEC)
    out = tmp_path / "out"
    result = build(tmp_path / "spec.toml", out, cache_dir=tmp_path / "cache")
    wheels = sorted(p.name for p in (out / "wheels").iterdir())
    markupsafe = [w for w in wheels if w.lower().startswith("markupsafe")]
    assert len(markupsafe) == 1 and "aarch64" in markupsafe[0] and "cp311" in markupsafe[0]
    # The bootstrap env travels too: pip, setuptools and wheel for the target.
    assert {w.split("-")[0] for w in wheels} >= {"pip", "setuptools", "wheel"}
    assert result.envs["bootstrap"] >= 3
