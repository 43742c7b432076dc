"""What "offline" means to the toolkit, in one place: the environment that switches every
library's hub access and telemetry off, the loopback test, and where shipped assets live.

Every process the toolkit starts (DVC, training, export, Label Studio, the demo's isolated
side) gets :data:`OFFLINE_ENV`; ``install-offline.sh`` writes the same table to
``PREFIX/etc/offline.env`` and ``deepseek-doctor`` checks a host against it (a test holds the
three to one list). Only the standard library is imported.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from pathlib import Path

# variable -> the value the toolkit sets; every one of them keeps a library off the network
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: no downloads, no API calls
    "TRANSFORMERS_OFFLINE": "1",  # transformers (older releases read this one)
    "HF_DATASETS_OFFLINE": "1",  # datasets
    "HF_HUB_DISABLE_TELEMETRY": "1",  # huggingface_hub's usage pings
    "DO_NOT_TRACK": "1",  # the cross-tool convention (Gradio, Ray, ...)
    "WANDB_MODE": "disabled",  # Weights & Biases, when a user's script imports it
    "DVC_NO_ANALYTICS": "1",  # DVC's usage report
}
_TRUE = ("1", "true", "yes", "on")
# variable -> values that mean "off / offline" to the library that reads it
ACCEPTED: dict[str, tuple[str, ...]] = {
    name: (value, "offline") if name == "WANDB_MODE" else (value, *_TRUE[1:])
    for name, value in OFFLINE_ENV.items()
}
# Label Studio's own telemetry (backend and page Sentry, analytics, the version check): what
# `offline label server` sets, and what the doctor accepts from the host's environment.
LABEL_STUDIO_ENV: dict[str, str] = {
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
}
LABEL_STUDIO_ACCEPTED: dict[str, tuple[str, ...]] = {
    name: ("",) if value == "" else ("", "0", "false", "no", "off")
    for name, value in LABEL_STUDIO_ENV.items()
}


def offline_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) with :data:`OFFLINE_ENV` over it, then
    ``extra``: the environment of a process the toolkit starts."""
    return {**(os.environ if base is None else base), **OFFLINE_ENV, **extra}


def go_offline() -> None:
    """Set every :data:`OFFLINE_ENV` variable this process has not set itself (in-process
    libraries read them at import or first use)."""
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)


def is_loopback(host: str) -> bool:
    """``host`` is localhost or a loopback address (v4 or v6)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shipped_places(name: str, with_override: bool = True) -> list[tuple[str, Path]]:
    """Where a shipped directory of the toolkit (``deploy``, ``bundle``, ``labeling``) can be,
    first match first: ``$DEEPSEEK_OFFLINE_<NAME>_DIR``, the source checkout, a bundle's
    ``files/`` (install-offline.sh puts ``envs/<env>/`` and ``bundle/files/`` under one prefix,
    ``$DEEPSEEK_OFFLINE_PREFIX``), the install prefix's ``share/deepseek-offline``."""
    import offline

    places: list[tuple[str, Path]] = []
    override = os.environ.get(f"DEEPSEEK_OFFLINE_{name.upper()}_DIR")
    if override and with_override:
        places.append((f"$DEEPSEEK_OFFLINE_{name.upper()}_DIR", Path(override)))
    prefix = Path(os.environ.get("DEEPSEEK_OFFLINE_PREFIX") or Path(sys.prefix).parent.parent)
    places += [
        ("the source checkout", Path(offline.__file__).resolve().parents[1] / name),
        ("the bundle", prefix / "bundle" / "files" / name),
        ("the install prefix", Path(sys.prefix) / "share" / "deepseek-offline" / name),
    ]
    return places


def find_shipped(name: str, marker: str | None = None) -> Path | None:
    """The first of :func:`shipped_places` that is a directory (holding ``marker``, if given)."""
    for _, place in shipped_places(name):
        if place.is_dir() and (marker is None or (place / marker).is_file()):
            return place
    return None
