"""Secrets out of whatever a report, a card or a log shows, judged by the shape of the value.

A value is not safe because of the variable it came from: an index URL, an error message or a
prompt can carry a credential. ``redact`` masks, in any text:

- the user and password of a URL (``https://user:pass@host`` -> ``https://***@host``);
- query parameters with a secret name (``token``, ``api_key``, ``X-Amz-Signature``, ...);
- ``Authorization:`` header values and ``Bearer <token>``;
- well-known token shapes (Hugging Face, OpenAI-style ``sk-``, GitHub, GitLab, PyPI, AWS access
  key ids, JWTs, PEM private keys).

Hex digests (sha256 and the like) are never touched: reports are full of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "RedactingFormatter", "redact", "redact_tree", "without_userinfo"]

MASK = "***"

# Every pattern runs in time linear in the text (bounded runs, no nested repeats): request
# bodies of hostile clients pass through here on their way to the audit log.
# scheme://, then the authority (up to / ? # or the end of the word); userinfo ends at its last @
_AUTHORITY = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<authority>[^\s/?#\"'<>]+)"
)
_PARAM = re.compile(
    r"(?P<lead>[?&;](?:[\w.-]*[_.-])?(?:api)?"
    r"(?:token|key|secret|password|passwd|pwd|sig|signature|credential|auth)=)"
    r"(?P<value>[^&#;\s\"'<>]+)",
    re.IGNORECASE,
)
_HEADER = re.compile(
    r"(?P<lead>\bauthorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|digest|token|negotiate)\s+)?)(?P<value>[^\s\"',;]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<lead>\bbearer\s+)(?P<value>[^\s\"'<>,;]{8,})", re.IGNORECASE)
# (prefix kept, body masked); bodies that a lowercase hostname could match need upper case
_MIXED = r"(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[0-9])"
_SHAPES = tuple(
    re.compile(pattern)
    for pattern in (
        r"(?<![\w-])(?P<lead>hf_)(?P<value>[A-Za-z0-9]{20,})",
        r"(?<![\w-])(?P<lead>sk-)(?P<value>" + _MIXED + r"[A-Za-z0-9_-]{20,})",
        r"(?<![\w-])(?P<lead>gh[pousr]_)(?P<value>[A-Za-z0-9]{30,})",
        r"(?<![\w-])(?P<lead>github_pat_)(?P<value>[A-Za-z0-9_]{20,})",
        r"(?<![\w-])(?P<lead>glpat-)(?P<value>" + _MIXED + r"[A-Za-z0-9_-]{20,})",
        r"(?<![\w-])(?P<lead>pypi-)(?P<value>[A-Za-z0-9_-]{40,})",
        r"\b(?P<lead>A[KS]IA)(?P<value>[A-Z0-9]{16})\b",
        r"\b(?P<lead>eyJ)(?P<value>[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,})",
        r"(?P<lead>-----BEGIN [A-Z ]*PRIVATE KEY-----)"
        r"(?P<value>[A-Za-z0-9+/=\s]*?-----END [A-Z ]*PRIVATE KEY-----)",
    )
)


def _userinfo(match: re.Match[str]) -> str:
    _, at, host = match["authority"].rpartition("@")
    return match["scheme"] + (MASK + at + host if at else host)


def _masked(match: re.Match[str]) -> str:
    return match["lead"] + MASK


def redact(text: str) -> str:
    """``text`` with every credential-shaped part replaced by ``***``; idempotent."""
    text = _AUTHORITY.sub(_userinfo, text)
    for pattern in (_HEADER, _BEARER, _PARAM, *_SHAPES):
        text = pattern.sub(_masked, text)
    return text


def redact_tree(value: Any) -> Any:
    """A copy of JSON-like ``value`` (mappings, lists, tuples, strings) with every string
    (keys too) redacted; other values are returned as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(v) for v in value]
    return value


def without_userinfo(url: str) -> str:
    """``url`` (one whole value, scheme optional) without everything before its last ``@``:
    the user and password a proxy or index URL may carry, even unescaped ``@`` and ``/``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    return scheme + sep + rest.rpartition("@")[2]


class RedactingFormatter(logging.Formatter):
    """Formats a record with ``inner`` (or as ``logging.Formatter`` would), then redacts the whole
    line: the message, its arguments and any traceback or stack text alike."""

    def __init__(self, inner: logging.Formatter | None = None, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record) if self.inner else super().format(record))
