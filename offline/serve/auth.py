"""API keys: random bearer tokens, of which the server keeps only a sha256.

The keys file has one key per line, ``<key id> sha256:<hex>``; ``#`` starts a comment. A token
is checked against every entry with a constant-time comparison; only the key id is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from offline.errors import ConfigError

_LINE = re.compile(r"^(?P<id>[A-Za-z0-9._-]{1,64})\s+sha256:(?P<hash>[0-9a-f]{64})$")
TOKEN_PREFIX = "sk-offline-"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = entries  # key id -> sha256 hex

    @classmethod
    def load(cls, path: Path) -> KeyStore:
        """Raises ConfigError naming the line when the file is not a keys file."""
        if not path.is_file():
            raise ConfigError(
                f"--api-keys {path} does not exist",
                fix=f"offline serve-key add --keys {path} --id NAME",
            )
        entries: dict[str, str] = {}
        for number, raw in enumerate(path.read_text().splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            match = _LINE.match(line)
            if not match:
                raise ConfigError(
                    f"{path}:{number}: not '<key id> sha256:<64 hex digits>'"
                    " (plain-text keys are not accepted)",
                    fix=f"offline serve-key add --keys {path} --id NAME writes a valid line",
                )
            entries[match["id"]] = match["hash"]
        if not entries:
            raise ConfigError(f"{path} holds no keys", fix=f"offline serve-key add --keys {path}")
        return cls(entries)

    def identify(self, token: str) -> str | None:
        """The id of the key ``token`` is, or None; every entry is compared."""
        digest = _hash(token)
        found = None
        for key_id, expected in self._entries.items():
            if hmac.compare_digest(digest, expected):
                found = key_id
        return found


def add_key(path: Path, key_id: str) -> str:
    """Append a new key to ``path`` (created mode 0600) and return the token, shown once."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", key_id):
        raise ConfigError(f"--id {key_id!r}: use letters, digits, . _ - (at most 64)")
    if path.is_file() and key_id in KeyStore.load(path)._entries:
        raise ConfigError(f"{path} already has a key {key_id}", fix="choose another --id")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    with path.open("a") as fh:
        fh.write(f"{key_id} sha256:{_hash(token)}\n")
    return token
