"""The ``pii`` step: find personal data in every text value and mask, pseudonymize or reject it.

Types: ``email``, ``phone`` (CN mobiles with optional +86/0086/86 prefix, and "+country" numbers),
``cn_id`` (18-character CN resident ID, date and ISO 7064 MOD 11-2 check validated),
``bank_card`` (13-19 digits, Luhn validated), ``ipv4`` and ``ipv6``. A number whose checksum
fails is not PII. Where two finds overlap, the type listed first in :data:`PII_TYPES` wins, so an
18-digit string that is both a valid ID and Luhn-valid is a ``cn_id``.

Most rows hold no PII, so each text array is first screened with one RE2 pass
(``pyarrow.compute.match_substring_regex``); only the rows it flags get the Python regex and
checksum work.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from offline.config import Strict
from offline.data.records import TEXT_COLUMNS, TEXT_KINDS, kind_of, map_text_arrays
from offline.data.steps.base import Context, Outcome, Step, StepSpec
from offline.errors import ConfigError

PiiType = Literal["email", "cn_id", "bank_card", "ipv6", "ipv4", "phone"]

# Also the overlap priority: an earlier type wins a span a later one also claims.
PII_TYPES: tuple[PiiType, ...] = ("email", "cn_id", "bank_card", "ipv6", "ipv4", "phone")

DEFAULT_KEY_ENV = "DEEPSEEK_OFFLINE_PII_KEY"
MIN_KEY_BYTES = 16

__all__ = [
    "DEFAULT_KEY_ENV",
    "PII_TYPES",
    "PiiMatch",
    "PiiParams",
    "PiiType",
    "cn_id_check_char",
    "cn_id_valid",
    "find_pii",
    "luhn_check_digit",
    "luhn_valid",
    "mask_token",
    "normalize",
    "pii",
    "prefilter_pattern",
    "replace_pii",
]


class PiiParams(Strict):
    """Which personal data to look for and what to do with it."""

    types: list[PiiType] = Field(
        default_factory=lambda: list(PII_TYPES),
        description="types to find: email, phone, cn_id, bank_card, ipv4, ipv6",
    )
    action: Literal["mask", "pseudonymize"] = Field(
        "mask",
        description="mask: [EMAIL]; pseudonymize: [EMAIL:<keyed hash>], stable across runs",
    )
    key_file: str | None = Field(
        None, description="pseudonymize: file holding the secret key bytes (relative: to the cwd)"
    )
    key_env: str = Field(
        DEFAULT_KEY_ENV, description="pseudonymize: env variable holding the key if no key_file"
    )
    reject_types: list[PiiType] = Field(
        default_factory=list,
        description="reject a row holding any of these types (found even if not in types)",
    )


class PiiMatch(NamedTuple):
    """One find: its type, its span in the text, and the matched text."""

    type: PiiType
    start: int
    end: int
    value: str


# --- checksums ---------------------------------------------------------------------------------

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# First two digits of a resident ID: the province-level region (GB/T 2260), plus 9x used by
# foreigners' permanent residence IDs.
_ID_PROVINCES = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46}
    | {50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83}
)


def luhn_valid(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn check (bank card numbers)."""
    if not digits.isdigit() or not digits.isascii():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_check_digit(payload: str) -> str:
    """The digit that, appended to ``payload`` (ASCII digits), makes it pass the Luhn check."""
    return next(d for d in "0123456789" if luhn_valid(payload + d))


def cn_id_check_char(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character of a resident ID's first 17 digits."""
    return _ID_CHECK[sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True)) % 11]


def cn_id_valid(value: str) -> bool:
    """Whether ``value`` is an 18-character CN resident ID: region, birth date and check char."""
    if len(value) != 18 or not value[:17].isdigit() or not value.isascii():
        return False
    if int(value[:2]) not in _ID_PROVINCES and value[0] != "9":
        return False
    try:
        birth = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if not 1900 <= birth.year <= 2099:
        return False
    return cn_id_check_char(value[:17]) == value[17].upper()


# --- patterns ----------------------------------------------------------------------------------

# Digit-based finds must stand alone: not inside a longer digit run, an alphanumeric id or a
# decimal number, nor follow a "+" (a phone). Only ASCII letters count as id characters, since
# Chinese text abuts numbers without spaces. The patterns consume their first character before
# looking behind it: a pattern that opens with a plain character class lets `re` skip ahead to
# candidates instead of testing the lookbehinds at every position (3x faster).
_AFTER_FIRST = r"(?<![0-9A-Za-z+].)(?<!\d\..)"
_NUM_END = r"(?![0-9A-Za-z])(?!\.\d)"


def _compile(pattern: str) -> re.Pattern[str]:
    # ASCII: \d must not match full-width or other script digits the checksums cannot read.
    return re.compile(pattern, re.ASCII)


# Per type: (a substring the text must contain for the pattern to be worth running, pattern).
_PATTERNS: dict[str, tuple[tuple[str, re.Pattern[str]], ...]] = {
    "email": (
        (
            "@",
            _compile(
                r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,24}"
                r"(?![A-Za-z0-9\-])"
            ),
        ),
    ),
    "cn_id": (("", _compile(r"\d" + _AFTER_FIRST + r"\d{16}[\dXx]" + _NUM_END)),),
    "bank_card": (
        (
            "",
            _compile(
                r"\d" + _AFTER_FIRST + r"(?:\d{3}(?:[ \-]\d{4}){2,3}(?:[ \-]\d{1,3})?"
                r"|\d{3}[ \-]\d{6}[ \-]\d{4,5}|\d{12,18})" + _NUM_END
            ),
        ),
    ),
    # A loose run of hex and colons; ipaddress decides. Possessive so a failed lookahead
    # cannot backtrack through long runs.
    "ipv6": (
        (
            ":",
            _compile(
                r"(?<![0-9A-Za-z:.])(?=[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]++(?:(?:\.\d{1,3}){3})?"
                r"(?![0-9A-Za-z:])"
            ),
        ),
    ),
    # Octet ranges are checked in Python; "1.2.3.4.5" is a version, not an address.
    "ipv4": (
        (
            ".",
            _compile(r"\d(?<![0-9A-Za-z].)(?<![0-9A-Za-z]\..)\d{0,2}(?:\.\d{1,3}){3}" + _NUM_END),
        ),
    ),
    "phone": (
        # CN mobile, 3-4-4 with optional space/hyphen separators ...
        ("", _compile(r"1" + _AFTER_FIRST + r"[3-9]\d(?:[ \-]?\d{4}){2}" + _NUM_END)),
        # ... and with a +86 / 0086 / (+86) / 86 prefix.
        (
            "86",
            _compile(
                r"(?<![0-9A-Za-z+])(?<!\d\.)(?:\+86|0086|\(\+?86\)|86)[ \-]?"
                r"1[3-9]\d(?:[ \-]?\d{4}){2}" + _NUM_END
            ),
        ),
        # International: +country then digits, groups split by space/hyphen/dot or (parens).
        (
            "+",
            _compile(
                r"(?<![0-9A-Za-z+])\+[1-9]\d*+(?:[ \-.]?\(\d++\)|[ \-.]?\d++)*+(?![0-9A-Za-z])"
            ),
        ),
    ),
}

# Cheap RE2 screens, one per type: a row none of them flags cannot hold a find.
_SCREENS: dict[str, str] = {
    "email": r"@",
    "cn_id": r"\d{17}",
    "bank_card": r"\d(?:[ \-]?\d){12}",
    "ipv6": r"[0-9A-Fa-f]::|::[0-9A-Fa-f]|(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]",
    "ipv4": r"\d\.\d{1,3}\.\d{1,3}\.\d",
    "phone": r"\d(?:[ \-]?\d){10}|\+[1-9]",
}


def prefilter_pattern(types: Iterable[str]) -> str | None:
    """One RE2 pattern flagging every text that might hold one of ``types`` (None: no types)."""
    screens = sorted({_SCREENS[t] for t in types})
    return "|".join(f"(?:{s})" for s in screens) or None


# --- validation and normalization --------------------------------------------------------------


_CN_MOBILE = re.compile(r"(?:0086|86)?1[3-9]\d{9}")


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def _ipv4_valid(value: str) -> bool:
    return all(len(o) == 1 or (o[0] != "0" and int(o) <= 255) for o in value.split("."))


def _ipv6_valid(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    # "1::2" (a slice) or "a::b" parse, but a real compressed address has a 3+ digit group.
    return "::" not in value or any(len(g) >= 3 for g in re.split(r"[:.]", value))


def _phone_valid(value: str) -> bool:
    # The CN mobile pattern fixes its own length; "+country" numbers carry 7-15 digits (E.164).
    return not value.startswith("+") or 7 <= len(_digits(value)) <= 15


def _card_valid(value: str) -> bool:
    digits = _digits(value)
    # 0086/86 + a CN mobile is a phone even when it happens to pass Luhn (1 in 10 do).
    return 13 <= len(digits) <= 19 and luhn_valid(digits) and not _CN_MOBILE.fullmatch(digits)


_VALID: dict[str, Callable[[str], bool]] = {
    "email": lambda v: True,
    "cn_id": cn_id_valid,
    "bank_card": _card_valid,
    "ipv6": _ipv6_valid,
    "ipv4": _ipv4_valid,
    "phone": _phone_valid,
}


def normalize(kind: str, value: str) -> str:
    """The canonical form of a find, so spellings of one value pseudonymize alike."""
    if kind == "email":
        return value.lower()
    if kind == "cn_id":
        return value.upper()
    if kind == "ipv6":
        return ipaddress.IPv6Address(value).compressed
    if kind == "phone":
        digits = _digits(value)
        is_cn_mobile = _CN_MOBILE.fullmatch(digits) and not value.startswith("+")
        return "+86" + digits[-11:] if is_cn_mobile else "+" + digits
    if kind == "bank_card":
        return _digits(value)
    return value


# --- finding -----------------------------------------------------------------------------------


def _candidates(text: str, types: frozenset[str]) -> Iterator[tuple[int, int, int, PiiType]]:
    for rank, kind in enumerate(PII_TYPES):
        if kind not in types:
            continue
        for needle, pattern in _PATTERNS[kind]:
            if needle not in text:
                continue
            for m in pattern.finditer(text):
                if _VALID[kind](m.group()):
                    yield rank, m.start(), m.end(), kind


def find_pii(text: str, types: Iterable[str] = PII_TYPES) -> list[PiiMatch]:
    """Every PII find in ``text`` of the given types, non-overlapping, in text order.

    Args:
        text: the text to search.
        types: which of :data:`PII_TYPES` to look for.

    Returns:
        The finds sorted by start; where finds overlap, the higher-priority type (earlier in
        :data:`PII_TYPES`) and then the longer span wins.
    """
    wanted = frozenset(types)
    ranked = sorted(_candidates(text, wanted), key=lambda c: (c[0], c[1] - c[2], c[1]))
    taken: list[PiiMatch] = []
    for _, start, end, kind in ranked:
        if all(end <= t.start or start >= t.end for t in taken):
            taken.append(PiiMatch(kind, start, end, text[start:end]))
    return sorted(taken, key=lambda m: m.start)


def mask_token(match: PiiMatch) -> str:
    """The ``mask`` replacement: the type in brackets, e.g. ``[EMAIL]``."""
    return f"[{match.type.upper()}]"


class _Pseudonymizer:
    """Replaces a find with ``[TYPE:<12 hex of HMAC-SHA256(key, type:normalized)>]``."""

    __slots__ = ("_mac",)

    def __init__(self, key: bytes) -> None:
        # Keep only the keyed HMAC state; copying it per value also skips re-keying.
        self._mac = hmac.new(key, digestmod="sha256")

    def __call__(self, match: PiiMatch) -> str:
        mac = self._mac.copy()
        mac.update(f"{match.type}:{normalize(match.type, match.value)}".encode())
        return f"[{match.type.upper()}:{mac.hexdigest()[:12]}]"

    def __repr__(self) -> str:
        return "_Pseudonymizer(key=<hidden>)"


def replace_pii(text: str, matches: list[PiiMatch], token: Callable[[PiiMatch], str]) -> str:
    """``text`` with each of ``matches`` (in text order, non-overlapping) replaced by its token."""
    parts: list[str] = []
    pos = 0
    for m in matches:
        parts += (text[pos : m.start], token(m))
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts)


# --- the key -----------------------------------------------------------------------------------

_KEY_FIX = (
    "head -c 32 /dev/urandom > pii.key && chmod 600 pii.key, then set clean.pii.key_file: "
    "pii.key in params.yaml (or export {env}=<32+ random characters>)"
)


def read_key(params: PiiParams) -> bytes:
    """The pseudonymization key from ``key_file`` or else ``$key_env``; never echoed anywhere."""
    fix = _KEY_FIX.format(env=params.key_env)
    if params.key_file:
        path = Path(params.key_file).expanduser()
        try:
            key = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"clean.pii.key_file {path} cannot be read ({exc.strerror})", fix=fix
            ) from None
        where = f"clean.pii.key_file {path}"
    else:
        key = os.fsencode(os.environ.get(params.key_env, ""))
        where = f"${params.key_env}"
        if not key:
            raise ConfigError(
                f"clean.pii.action is pseudonymize but clean.pii.key_file is not set and "
                f"{where} is empty",
                fix=fix,
            )
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(
            f"{where} holds {len(key)} bytes; a pseudonymization key needs {MIN_KEY_BYTES}+",
            fix=fix,
        )
    return key


# --- the step ----------------------------------------------------------------------------------


class _PiiStep:
    """Scrubs every text value of a batch; rejects rows holding a ``reject_types`` find."""

    name = "pii"
    kinds: tuple[str, ...] = TEXT_KINDS

    def __init__(
        self, types: frozenset[str], reject: frozenset[str], token: Callable[[PiiMatch], str]
    ) -> None:
        self._types = types
        self._reject = reject
        self._token = token
        self._screen = prefilter_pattern(types)

    def __repr__(self) -> str:
        kinds = ",".join(t for t in PII_TYPES if t in self._types)
        return f"PiiStep(types={kinds}, reject={sorted(self._reject)}, token={self._token!r})"

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        counts: Counter[str] = Counter()
        found: list[dict[int, set[str]]] = []

        def scrub(array: pa.Array) -> pa.Array:
            new, hits = self._scrub_array(array, counts)
            found.append(hits)
            return new

        out = map_text_arrays(batch, scrub)
        ordered: dict[str, int] = {t: counts[t] for t in PII_TYPES if counts[t]}
        return Outcome(out, self._reasons(batch, found), ordered)

    def close(self) -> dict[str, int]:
        return {}

    def scrub(self, array: pa.Array) -> pa.Array:
        """``array`` with its PII replaced, not counted: for the columns beside the text
        (the ledger's raw rows, unmapped fields) so no output keeps a value the step hides."""
        return self._scrub_array(array, Counter())[0]

    def _scrub_array(
        self, array: pa.Array, counts: Counter[str]
    ) -> tuple[pa.Array, dict[int, set[str]]]:
        """The array with PII replaced, and the types found per changed element."""
        if self._screen is None or len(array) == 0:
            return array, {}
        flagged = pc.fill_null(pc.match_substring_regex(array, self._screen), False)
        rows = np.flatnonzero(flagged.to_numpy(zero_copy_only=False))
        hits: dict[int, set[str]] = {}
        new_values: list[str] = []
        for i, text in zip(rows.tolist(), array.take(pa.array(rows)).to_pylist(), strict=True):
            matches = find_pii(text, self._types)
            if matches:
                counts.update(m.type for m in matches)
                hits[i] = {m.type for m in matches}
                new_values.append(replace_pii(text, matches, self._token))
        if not hits:
            return array, hits
        changed = np.zeros(len(array), dtype=bool)
        changed[list(hits)] = True
        return pc.replace_with_mask(
            array, pa.array(changed), pa.array(new_values, array.type)
        ), hits

    def _reasons(self, batch: pa.RecordBatch, found: list[dict[int, set[str]]]) -> list[str | None]:
        reasons: list[str | None] = [None] * batch.num_rows
        if not self._reject:
            return reasons
        per_row: defaultdict[int, set[str]] = defaultdict(set)
        # map_text_arrays calls the mapper once per text column, in TEXT_COLUMNS order.
        for name, hits in zip(TEXT_COLUMNS[kind_of(batch)], found, strict=True):
            parents = None
            if name == "messages" and hits:
                parents = pc.list_parent_indices(batch.column(name)).to_numpy()
            for elem, types in hits.items():
                per_row[int(parents[elem]) if parents is not None else elem] |= types
        for row, types in per_row.items():
            bad = [t for t in PII_TYPES if t in types and t in self._reject]
            if bad:
                reasons[row] = f"contains pii: {', '.join(bad)}"
        return reasons


def pii(params: PiiParams, ctx: Context) -> Step:
    """Build the ``pii`` step; reads the pseudonymization key now (ConfigError if absent)."""
    token: Callable[[PiiMatch], str] = mask_token
    if params.action == "pseudonymize":
        token = _Pseudonymizer(read_key(params))
    types = frozenset(params.types) | frozenset(params.reject_types)
    return _PiiStep(types, frozenset(params.reject_types), token)


STEPS = (StepSpec("pii", PiiParams, pii, order=70, counts_in="pii"),)
