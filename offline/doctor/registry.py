"""Where checks are registered: one module per group, each with ``checks(context) -> list[Check]``.

Most groups return a fixed list; some generate checks from the bundle (one per locked package).
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterable

from offline.doctor.context import Context
from offline.doctor.model import Check

# group -> module. One line per group; a group's checks are ids "<group>.<name>".
GROUPS: dict[str, str] = {
    "system": "offline.doctor.checks.system",
    "python": "offline.doctor.checks.python",
    "accelerators": "offline.doctor.checks.accelerators",
    "frameworks": "offline.doctor.checks.frameworks",
    "offline": "offline.doctor.checks.posture",
    "network": "offline.doctor.checks.network",
    "bundle": "offline.doctor.checks.bundle",
    "models": "offline.doctor.checks.models",
    "cluster": "offline.doctor.checks.cluster",
    "ray": "offline.doctor.checks.ray",
}


def all_checks(context: Context) -> list[Check]:
    found: list[Check] = []
    for module in GROUPS.values():
        found += importlib.import_module(module).checks(context)
    return found


def _matches(check: Check, patterns: Iterable[str]) -> bool:
    return any(
        p == check.group or fnmatch.fnmatchcase(check.id, p) or check.id.startswith(p + ".")
        for p in patterns
    )


def select(checks: list[Check], only: list[str], skip: list[str]) -> list[Check]:
    """``only``/``skip`` name groups, ids, id prefixes or glob patterns (``python.pkg.*``)."""
    chosen = [c for c in checks if not only or _matches(c, only)]
    return [c for c in chosen if not _matches(c, skip)]


def unknown_patterns(checks: list[Check], patterns: Iterable[str]) -> list[str]:
    return [p for p in patterns if not any(_matches(c, [p]) for c in checks)]
