"""Every cleaning step, found in the modules of :mod:`offline.data.steps` that define ``STEPS``.

The registry is read once per process; the default chain is the steps with an ``order``, in
that order. Names are unique: a second step of one name is a programming error, raised here.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

import offline.data.steps as _package
from offline.data.steps.base import StepSpec

_NOT_STEPS = frozenset({"base", "registry"})


@cache
def registry() -> dict[str, StepSpec]:
    """Step name → spec: the default chain's steps in chain order, then the opt-in ones by name."""
    found: dict[str, StepSpec] = {}
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        if info.name in _NOT_STEPS:
            continue
        module = importlib.import_module(f"{_package.__name__}.{info.name}")
        for spec in getattr(module, "STEPS", ()):
            if spec.name in found:
                raise RuntimeError(f"two cleaning steps named {spec.name!r} ({module.__name__})")
            found[spec.name] = spec
    chained = sorted((s for s in found.values() if s.order is not None), key=lambda s: s.order or 0)
    rest = sorted((s for s in found.values() if s.order is None), key=lambda s: s.name)
    return {s.name: s for s in [*chained, *rest]}


def default_chain() -> list[str]:
    """The steps ``clean.steps`` lists by default, in order."""
    return [name for name, spec in registry().items() if spec.order is not None]
