"""Doctor checks: the python group."""

from __future__ import annotations

from offline.doctor.context import Context
from offline.doctor.model import Check


def checks(context: Context) -> list[Check]:
    return []
