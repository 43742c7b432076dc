"""Noise rows (markup, fullwidth, control characters, junk, spam) and planted duplicates: exact
variants and near copies with their edits."""

# ruff: noqa: RUF001

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from offline.data.sample.tables import table
from offline.data.sample.text import (
    SHINGLE,
    Record,
    jaccard,
    join_parts,
    order_number,
    pick,
    pick_distinct,
    rand_int,
    random_code,
)

_NOISE = table("noise")

NEAR_MIN_JACCARD = 0.8


# --------------------------------------------------------------------------- noise


_JUNK: tuple[tuple[str, str], ...] = _NOISE["junk"]
_SPAM: tuple[tuple[str, str], ...] = _NOISE["spam"]
_CONTROL_CHARS = tuple(chr(c) for c in range(0x00, 0x09))
_ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\ufeff")


def junk_row(index: int) -> tuple[str, str]:
    # Numbered past the first round so junk rows never duplicate each other by accident.
    text, lang = _JUNK[index % len(_JUNK)]
    rounds = index // len(_JUNK)
    return (f"{text} {rounds}" if rounds else text), lang


def spam_row(rng: random.Random) -> tuple[str, str]:
    phrase, lang = pick(rng, _SPAM)
    # A per-row code keeps spam rows from being near duplicates of one another.
    unit = f"{phrase} {random_code(rng, 6)}"
    return " ".join([unit] * rand_int(rng, 40, 60)), lang


def markup_noise(rng: random.Random, parts: list[str]) -> tuple[str, list[str]]:
    style = rng.randrange(3)
    parts = list(parts)
    i = rng.randrange(len(parts))
    parts[i] = f"<b>{parts[i]}</b>"
    used = ["<b>"]
    if style == 0:
        text, wrap = "".join(f"<p>{p}</p>" for p in parts), "<p>"
    elif style == 1:
        text, wrap = "<br/>".join(parts), "<br/>"
    else:
        text, wrap = '<div class="ticket">' + "&nbsp;".join(parts) + "</div>", "&nbsp;"
    used.append(wrap)
    extra = pick(rng, ("&amp;", "&lt;3", "&quot;", "&#39;"))
    link = f'<a href="https://help.example.com/kb/{rand_int(rng, 100, 999)}">{extra} more</a>'
    used += [extra, "<a>"]
    return text + " " + link, used


def fullwidth_noise(rng: random.Random, parts: list[str], lang: str) -> tuple[str, int]:
    """Turn the ASCII letters and digits of one or two sentences into their fullwidth forms."""
    parts = list(parts)
    candidates = [i for i, p in enumerate(parts) if re.search(r"[A-Za-z0-9]", p)]
    if not candidates:
        parts.append(("订单号：" if lang == "zh" else "Order: ") + order_number(rng, lang))
        candidates = [len(parts) - 1]
    changed = 0
    for i in rng.sample(candidates, min(2, len(candidates))):
        wide = "".join(_wide(c) for c in parts[i])
        changed += sum(a != b for a, b in zip(parts[i], wide, strict=True))
        parts[i] = wide
    return join_parts(rng, parts, lang), changed


def _wide(ch: str) -> str:
    if ch == " ":
        return "\u3000"
    return chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch


def control_noise(rng: random.Random, text: str) -> tuple[str, list[str]]:
    chars = [pick(rng, _CONTROL_CHARS), pick(rng, _ZERO_WIDTH)]
    chars += [pick(rng, _CONTROL_CHARS + _ZERO_WIDTH) for _ in range(rand_int(rng, 0, 3))]
    for ch in chars:
        at = rand_int(rng, 1, len(text) - 1)
        text = text[:at] + ch + text[at:]
    return text, [f"U+{ord(c):04X}" for c in chars]


# --------------------------------------------------------------------------- near duplicates

_PUNCT_SWAP: dict[str, str] = _NOISE["punct_swap"]
_FILLERS_EN: tuple[str, ...] = _NOISE["fillers_en"]
_FILLERS_ZH: tuple[str, ...] = _NOISE["fillers_zh"]
Edit = dict[str, Any]


def _typo(rng: random.Random, text: str, lang: str) -> Edit | None:
    pattern = r"[\u4e00-\u9fff]{2,}" if lang == "zh" else r"[A-Za-z]{4,}"
    words = list(re.finditer(pattern, text))
    if not words:
        return None
    word = pick(rng, words)
    at = rng.randrange(word.start(), word.end() - 1)
    a, b = text[at], text[at + 1]
    after = b + a if a != b else a + a + b
    return {"op": "typo", "at": at, "before": a + b, "after": after}


def _punctuation(rng: random.Random, text: str, lang: str) -> Edit | None:
    spots = [
        i
        for i, ch in enumerate(text)
        if ch in _PUNCT_SWAP and not (0 < i < len(text) - 1 and text[i + 1].isdigit())
    ]
    if not spots:
        return None
    at = pick(rng, spots)
    return {"op": "punctuation", "at": at, "before": text[at], "after": _PUNCT_SWAP[text[at]]}


def _filler(rng: random.Random, text: str, lang: str) -> Edit | None:
    if lang == "zh":
        spots = [m.end() for m in re.finditer(r"[，。！？]", text) if m.end() < len(text)]
        word = pick(rng, _FILLERS_ZH)
    else:
        spots = [m.start() for m in re.finditer(r"(?<= )[a-z]", text)]
        word = pick(rng, _FILLERS_EN)
    if not spots:
        return None
    return {"op": "filler", "at": pick(rng, spots), "before": "", "after": word}


def _apply(text: str, edits: Sequence[Edit]) -> str:
    # Right to left, so each edit's position still refers to the original text.
    for edit in sorted(edits, key=lambda e: -int(e["at"])):
        at = int(edit["at"])
        text = text[:at] + str(edit["after"]) + text[at + len(str(edit["before"])) :]
    return text


def near_copy(
    rng: random.Random, text: str, lang: str, whole: Callable[[str], str] = str
) -> tuple[str, list[Edit], float]:
    """1-3 small edits of ``text`` at separate places, and the Jaccard of ``whole(text)`` (the
    record it sits in) to its edited form; fewer edits when that would fall below the threshold.
    """
    makers = (_typo, _punctuation, _filler)
    for count in range(rand_int(rng, 1, 3), 0, -1):
        edits: list[Edit] = []
        for make in pick_distinct(rng, makers, count):
            edit = make(rng, text, lang)
            if edit and all(abs(edit["at"] - e["at"]) > SHINGLE + 2 for e in edits):
                edits.append(edit)
        copy = _apply(text, edits)
        score = jaccard(whole(text), whole(copy))
        if edits and score >= NEAR_MIN_JACCARD:
            return copy, edits, round(score, 4)
    # Only a text with no word and no punctuation gets here: add a mark at the end.
    edit = {"op": "punctuation", "at": len(text), "before": "", "after": "!"}
    copy = text + "!"
    return copy, [edit], round(jaccard(whole(text), whole(copy)), 4)


def near_entry(edits: list[Edit], score: float) -> Record:
    # A copy whose only edits are punctuation equals its original once punctuation is stripped,
    # so an exact-dedup step that normalizes punctuation away catches it before near dedup does.
    only = all(e["op"] == "punctuation" for e in edits)
    return {"edits": edits, "jaccard": score, "punctuation_only": only}


# Cycled through in order, so even the smallest sample has one of each.
_EXACT_VARIANTS = ("case", "whitespace", "identical", "identical", "identical")


def exact_variant(rng: random.Random, text: str, index: int) -> tuple[str, str]:
    """The copy's text: identical, or differing only in letter case or in extra whitespace."""
    variant = _EXACT_VARIANTS[index % len(_EXACT_VARIANTS)]
    if variant == "case":
        changed = text.upper() if rng.random() < 0.6 else text.lower()
        if changed != text:
            return changed, "case"
        variant = "whitespace"
    if variant == "whitespace":
        # Only existing whitespace grows, so collapsing runs and stripping restores the original.
        return f" {text.replace(' ', '  ', 2)}  \n", "whitespace"
    return text, "identical"
