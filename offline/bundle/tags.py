"""Wheel compatibility for the TARGET host (not this machine): its Python and platform tags."""

from __future__ import annotations

import re
from functools import cache

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")
_LEGACY = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}


def expand_platform(platform: str) -> list[str]:
    """``manylinux_2_28_x86_64`` → itself and every older manylinux tag a glibc 2.28 host runs."""
    match = _MANYLINUX.match(platform)
    if match is None:
        return [platform]
    major, minor, arch = int(match[1]), int(match[2]), match[3]
    out: list[str] = []
    for m in range(minor, 4, -1):
        out.append(f"manylinux_{major}_{m}_{arch}")
        if (major, m) in _LEGACY:
            out.append(f"{_LEGACY[(major, m)]}_{arch}")
    return out


@cache
def target_tags(python: str, platform: str) -> tuple[Tag, ...]:
    """Tags the target accepts, most preferred first (the order pip uses)."""
    version = tuple(int(x) for x in python.split("."))
    interp = f"cp{version[0]}{version[1]}"
    platforms = expand_platform(platform)
    return (
        *cpython_tags(python_version=version, abis=[interp], platforms=platforms),
        *compatible_tags(python_version=version, interpreter=interp, platforms=platforms),
    )


def wheel_rank(filename: str, python: str, platform: str) -> int | None:
    """Position of the wheel's best tag in the target's preference list; None if unusable."""
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    order = target_tags(python, platform)
    ranks = [order.index(t) for t in tags if t in order]
    return min(ranks) if ranks else None


def uv_platform(platform: str) -> str:
    """Spec tag → uv's ``--python-platform`` value (``x86_64-manylinux_2_28``)."""
    match = _MANYLINUX.match(platform)
    if match is None:
        raise ValueError(platform)
    return f"{match[3]}-manylinux_{match[1]}_{match[2]}"
