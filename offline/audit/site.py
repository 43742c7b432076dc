"""The site key that signs audit checkpoints and evidence dossiers, and where event logs go.

One ed25519 key per site signs every chained log's checkpoints (training, firewall, doctor,
serving) and the dossier ``offline evidence build`` writes. It is found, first match first:

1. the path given on the command line;
2. ``$DEEPSEEK_OFFLINE_SITE_KEY``;
3. the workspace's own ``.offline/site-key.pem``, which ``offline init`` creates (0600, kept out
   of git; the public half beside it) unless the site has a key of its own;
4. an installed bundle's ``PREFIX/etc/site-key.pem`` (``offline bundle keygen --out`` it once
   per host).

Without one, logs are still chained (an edit shows) but their checkpoints are unsigned (a
rewrite from some line on, hashes recomputed, does not show).

Event logs of the host's own tools (the doctor's runs) go under ``$DEEPSEEK_OFFLINE_LOG_DIR``,
or ``PREFIX/var/log`` of an installed bundle; the firewall keeps its own in its state directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from offline.audit.chain import ChainWriter

SITE_KEY_VAR = "DEEPSEEK_OFFLINE_SITE_KEY"
LOG_DIR_VAR = "DEEPSEEK_OFFLINE_LOG_DIR"
WORKSPACE_KEY = ".offline/site-key.pem"
INSTALL_KEY = "etc/site-key.pem"


def site_key_path(explicit: Path | None = None, workspace: Path | None = None) -> Path | None:
    """The site key's path (see the module), or None where there is none."""
    if explicit is not None:
        return explicit
    if os.environ.get(SITE_KEY_VAR):
        return Path(os.environ[SITE_KEY_VAR])
    if workspace is not None and (workspace / WORKSPACE_KEY).is_file():
        return workspace / WORKSPACE_KEY
    prefix = install_prefix()
    if prefix is not None and (prefix / INSTALL_KEY).is_file():
        return prefix / INSTALL_KEY
    return None


def site_key(
    explicit: Path | None = None, workspace: Path | None = None
) -> Ed25519PrivateKey | None:
    """The site key, loaded; None where there is none.

    Raises:
        NotFoundError / ConfigError: a key was named but is missing or not an ed25519 PEM.
    """
    from offline.bundle.sign import load_private_key

    path = site_key_path(explicit, workspace)
    return load_private_key(path) if path is not None else None


def create_workspace_key(workspace: Path) -> Path | None:
    """``offline init``'s key, unless the site has its own (``$DEEPSEEK_OFFLINE_SITE_KEY`` or
    the install's ``etc/site-key.pem``)."""
    if site_key_path() is not None:
        return None
    from offline.bundle.sign import keygen

    private, _ = keygen(workspace / WORKSPACE_KEY)
    return private


def log_dir() -> Path | None:
    """Where the host's tools keep their event logs: ``$DEEPSEEK_OFFLINE_LOG_DIR``, else an
    installed bundle's ``PREFIX/var/log``; None in a source checkout or a plain venv."""
    if os.environ.get(LOG_DIR_VAR):
        return Path(os.environ[LOG_DIR_VAR])
    prefix = install_prefix()
    return prefix / "var" / "log" if prefix is not None else None


def install_prefix() -> Path | None:
    """The PREFIX of the installed bundle this toolkit runs from (``PREFIX/envs/toolkit``),
    or ``$DEEPSEEK_OFFLINE_PREFIX``; None in a source checkout or a plain venv."""
    prefix = Path(os.environ.get("DEEPSEEK_OFFLINE_PREFIX") or Path(sys.prefix).parent.parent)
    return prefix if (prefix / "installed.json").is_file() else None


def append_event(path: Path, record: dict[str, Any], key: Ed25519PrivateKey | None) -> None:
    """One record on the chained log ``path``, closed again (a signed final checkpoint): for
    tools that log an event per run, such as the doctor and the firewall."""
    writer = ChainWriter(path, key)
    try:
        writer.write(record)
    finally:
        writer.close()
