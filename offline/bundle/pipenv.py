"""The environment for a pip (or uv) that must not read this machine's own configuration.

pip reads ``/etc/pip.conf``, ``/etc/xdg/pip/pip.conf``, the user's and the venv's config files,
and every ``PIP_*`` variable (extra index URLs, find-links, a constraints file, timeouts ...).
A pip that installs from a bundle, or builds for one from settings we pass explicitly, must see
none of them: ``PIP_CONFIG_FILE=os.devnull`` makes pip skip every config file, and dropping the
variables does the rest. uv is run with ``--no-config``, which skips its files but not its
``UV_*`` variables (``UV_INDEX_URL``, ``UV_CONSTRAINT`` ...): they are dropped too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["hermetic_pip_env"]


def hermetic_pip_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) without pip's or uv's configuration."""
    base = os.environ if base is None else base
    env = {k: v for k, v in base.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env
