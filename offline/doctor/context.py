"""What the checks look at: the host, the bundle it was installed from, the options given."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

# Written by install-offline.sh into PREFIX/etc/offline.env.
BUNDLE_ENV = "DEEPSEEK_OFFLINE_BUNDLE"
TRUSTED_KEY = "etc/trusted.pub.pem"


@dataclass(frozen=True)
class Context:
    """Read-only inputs shared by every check (checks may run in parallel)."""

    bundle: Path | None = None
    workspace: Path | None = None
    hostfile: Path | None = None
    pubkey: Path | None = None
    deep: bool = False
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    python: str = sys.executable

    @classmethod
    def create(
        cls,
        bundle: Path | None = None,
        *,
        workspace: Path | None = None,
        hostfile: Path | None = None,
        pubkey: Path | None = None,
        deep: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Context:
        env = dict(os.environ if environ is None else environ)
        if bundle is None and env.get(BUNDLE_ENV):
            bundle = Path(env[BUNDLE_ENV])
        if pubkey is None and bundle is not None:
            recorded = bundle.resolve().parent / TRUSTED_KEY
            pubkey = recorded if recorded.is_file() else None
        return cls(bundle, workspace, hostfile, pubkey, deep, env)

    @cached_property
    def manifest(self) -> dict[str, Any] | None:
        """The bundle's manifest.json, or None without a readable one."""
        if self.bundle is None:
            return None
        try:
            data = json.loads((self.bundle / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @property
    def target_platforms(self) -> list[str]:
        return list((self.manifest or {}).get("target", {}).get("platforms", []))

    @property
    def target_python(self) -> str | None:
        value = (self.manifest or {}).get("target", {}).get("python")
        return str(value) if value else None
