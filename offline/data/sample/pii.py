"""PII the sample plants (valid by the detector's own checksums), and decoys that fail them."""

from __future__ import annotations

import random
from datetime import date, timedelta

from offline.data.sample.tables import table
from offline.data.sample.text import FIRST_EN, LAST_EN, Key, Record, pick, rand_int
from offline.data.steps.pii import cn_id_check_char, luhn_check_digit, luhn_valid

_PII = table("pii")


# --------------------------------------------------------------------------- PII and decoys

PII_SENTENCES: dict[str, dict[str, tuple[str, ...]]] = _PII["pii_sentences"]

# (type, format): the PII rows cycle through these, so every one appears in a large enough sample.
PII_FORMATS: tuple[tuple[str, str], ...] = _PII["pii_formats"]
DECOY_FORMATS: tuple[tuple[str, str], ...] = _PII["decoy_formats"]
_CN_REGIONS: tuple[str, ...] = _PII["cn_regions"]
_MOBILE_PREFIXES: tuple[str, ...] = _PII["mobile_prefixes"]
_INTL_PHONES: tuple[tuple[str, tuple[int, ...]], ...] = _PII["intl_phones"]
_CARD_PREFIXES: dict[int, tuple[str, ...]] = {int(k): v for k, v in _PII["card_prefixes"].items()}
_MAIL_DOMAINS: tuple[str, ...] = _PII["mail_domains"]


def _cn_id(rng: random.Random) -> str:
    # Kept off the Luhn-valid set so a 13-19 digit card detector never reports an ID as a card.
    while True:
        born = date(1955, 1, 1) + timedelta(days=rng.randrange(18_600))
        body = f"{pick(rng, _CN_REGIONS)}{born:%Y%m%d}{rng.randrange(1000):03d}"
        value = body + cn_id_check_char(body)
        if not luhn_valid(value):
            return value


def _card_digits(rng: random.Random, length: int) -> str:
    prefix = pick(rng, _CARD_PREFIXES[length])
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - 1 - len(prefix)))
    return body + luhn_check_digit(body)


def _grouped(digits: str) -> str:
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def _phone(rng: random.Random, fmt: str) -> str:
    number = pick(rng, _MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
    if fmt == "cn_mobile":
        return number
    if fmt == "cn_mobile_+86":
        style = rng.randrange(3)
        if style == 0:
            return f"+86 {number}"
        if style == 1:
            return f"+86{number}"
        return f"+86-{number[:3]}-{number[3:7]}-{number[7:]}"
    code, groups = pick(rng, _INTL_PHONES)
    parts = [str(rand_int(rng, 10 ** (g - 1), 10**g - 1)) for g in groups]
    return f"+{code} " + " ".join(parts)


def _email(rng: random.Random) -> str:
    name = pick(rng, FIRST_EN).lower()
    sep = pick(rng, (".", "_", ""))
    user = f"{name}{sep}{pick(rng, LAST_EN).lower()}{rand_int(rng, 1, 999)}"
    return f"{user}@{pick(rng, _MAIL_DOMAINS)}"


def _ipv4(rng: random.Random) -> str:
    first = pick(rng, (8, 23, 36, 58, 61, 101, 112, 113, 114, 116, 120, 180, 183, 203, 218, 222))
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rand_int(rng, 1, 254)}"


def _ipv6(rng: random.Random) -> str:
    groups = [f"{rng.getrandbits(16):x}" for _ in range(8)]
    groups[0] = pick(rng, ("2001", "2400", "2408", "240e", "2a02", "fe80"))
    if rng.random() < 0.5:
        start = rand_int(rng, 2, 5)
        return ":".join(groups[:start]) + "::" + ":".join(groups[start + 2 :])
    return ":".join(groups)


def pii_value(rng: random.Random, kind: str, fmt: str) -> str:
    if kind == "email":
        return _email(rng)
    if kind == "phone":
        return _phone(rng, fmt)
    if kind == "cn_id":
        return _cn_id(rng)
    if kind == "bank_card":
        digits = _card_digits(rng, int(fmt[:2]))
        return _grouped(digits) if fmt.endswith("grouped") else digits
    return _ipv4(rng) if kind == "ipv4" else _ipv6(rng)


def decoy_value(rng: random.Random, kind: str, fmt: str) -> tuple[str, str]:
    """A look-alike that fails its checksum, and why."""
    if kind == "cn_id":
        good = _cn_id(rng)
        while True:
            bad = good[:17] + pick(rng, [c for c in "0123456789X" if c != good[17]])
            if not luhn_valid(bad):
                return bad, f"MOD 11-2 check char is {bad[17]}, expected {good[17]}"
    digits = _card_digits(rng, int(fmt[:2]))
    bad = digits[:-1] + str((int(digits[-1]) + rand_int(rng, 1, 9)) % 10)
    value = _grouped(bad) if fmt.endswith("grouped") else bad
    return value, f"Luhn check digit is {bad[-1]}, expected {digits[-1]}"


def _plant(parts: list[str], rng: random.Random, sentence: str) -> list[str]:
    parts = list(parts)
    parts.insert(rand_int(rng, 1, len(parts)), sentence)
    return parts


def plant_pii(
    rng: random.Random, parts: list[str], lang: str, index: int, where: Record, key: Key
) -> list[str]:
    formats = [PII_FORMATS[index % len(PII_FORMATS)]]
    if rng.random() < 0.2:
        formats.append(pick(rng, PII_FORMATS))
    for kind, fmt in formats:
        value = pii_value(rng, kind, fmt)
        pool = "ip" if kind in ("ipv4", "ipv6") else kind
        sentence = pick(rng, PII_SENTENCES[lang][pool]).replace("{v}", value)
        parts = _plant(parts, rng, sentence)
        key["pii"].append({**where, "type": kind, "format": fmt, "value": value})
    return parts


def plant_decoy(
    rng: random.Random, parts: list[str], lang: str, index: int, where: Record, key: Key
) -> list[str]:
    kind, fmt = DECOY_FORMATS[index % len(DECOY_FORMATS)]
    value, why = decoy_value(rng, kind, fmt)
    sentence = pick(rng, PII_SENTENCES[lang][kind]).replace("{v}", value)
    key["decoys"].append({**where, "type": kind, "format": fmt, "value": value, "why": why})
    return _plant(parts, rng, sentence)
