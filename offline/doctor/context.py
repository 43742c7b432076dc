"""What the checks look at: the host, the bundle it was installed from, the options given.

Facts that several checks need (the manifest, what nvidia-smi says, an interpreter's installed
distributions, what its torch was built for) are gathered once per context, by whichever check
asks first, in :class:`Facts`; checks running in parallel wait for that one answer.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

# Written by install-offline.sh into PREFIX/etc/offline.env.
BUNDLE_ENV = "DEEPSEEK_OFFLINE_BUNDLE"
TRUSTED_KEY = "etc/trusted.pub.pem"
T = TypeVar("T")


class Facts:
    """One value per key, made on first use and shared by the checks of one context.

    A key names one kind of value (``("python-env", python)``); its maker runs once, under that
    key's own lock, so a slow fact holds up only the checks that need it. A maker that raises
    leaves nothing behind: the next check to ask makes it again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._made: dict[Hashable, object] = {}

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._made:
                self._made[key] = make()
            return cast(T, self._made[key])


@dataclass(frozen=True)
class Context:
    """Read-only inputs shared by every check (checks may run in parallel)."""

    bundle: Path | None = None
    workspace: Path | None = None
    hostfile: Path | None = None
    pubkey: Path | None = None
    deep: bool = False
    ray_address: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    python: str = sys.executable
    facts: Facts = field(default_factory=Facts, init=False, repr=False, compare=False)

    @classmethod
    def create(
        cls,
        bundle: Path | None = None,
        *,
        workspace: Path | None = None,
        hostfile: Path | None = None,
        pubkey: Path | None = None,
        deep: bool = False,
        ray_address: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Context:
        env = dict(os.environ if environ is None else environ)
        if bundle is None and env.get(BUNDLE_ENV):
            bundle = Path(env[BUNDLE_ENV])
        if pubkey is None and bundle is not None:
            recorded = bundle.resolve().parent / TRUSTED_KEY
            pubkey = recorded if recorded.is_file() else None
        return cls(bundle, workspace, hostfile, pubkey, deep, ray_address, env)

    @property
    def manifest(self) -> dict[str, Any] | None:
        """The bundle's manifest.json, or None without a readable one."""
        return self.facts.get("manifest", self._read_manifest)

    def _read_manifest(self) -> dict[str, Any] | None:
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
