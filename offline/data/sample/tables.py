"""The word lists and sentence templates of the sample, as data files in ``tables/``.

The generators read them once per process. JSON lists come back as tuples, so a table is
immutable and reads exactly as the literal it replaces.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    return value


@cache
def table(name: str) -> Any:
    """The contents of ``tables/<name>.json``, lists as tuples."""
    text = files(__package__).joinpath("tables", f"{name}.json").read_text(encoding="utf-8")
    return _frozen(json.loads(text))
