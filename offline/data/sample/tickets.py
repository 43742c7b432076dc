"""``tickets.jsonl``: support tickets with planted duplicates, PII, noise and malformed lines."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from offline.data.sample.noise import (
    control_noise,
    exact_variant,
    fullwidth_noise,
    junk_row,
    markup_noise,
    near_copy,
    near_entry,
    spam_row,
)
from offline.data.sample.pii import PII_FORMATS, plant_decoy, plant_pii
from offline.data.sample.plan import (
    Originals,
    created_at,
    draw_category,
    draw_lang,
    dump_line,
    line_roles,
    next_index,
    share,
)
from offline.data.sample.text import Key, Record, join_parts, pick, rand_int, ticket_parts

OVERSIZED_BYTES = 1_000_000


_MALFORMED = ("broken_json", "invalid_utf8", "missing_text", "text_number", "text_list")


def _ticket_quotas(n: int) -> dict[str, int]:
    malformed = share(n, 0.005, len(_MALFORMED) + 1)
    quotas = {
        "exact": share(n, 0.03, 3),
        "near": share(n, 0.03, 3),
        "pii": share(n, 0.05, len(PII_FORMATS)),
        "decoy": share(n, 0.01, 2),
        "markup": share(n, 0.02, 2),
        "fullwidth": share(n, 0.01, 1),
        "control": share(n, 0.01, 1),
        "junk": share(n, 0.005, 1),
        "spam": share(n, 0.005, 1),
        "malformed:oversized": 1,
    }
    for i in range(malformed - 1):
        kind = f"malformed:{_MALFORMED[i % len(_MALFORMED)]}"
        quotas[kind] = quotas.get(kind, 0) + 1
    return quotas


# --------------------------------------------------------------------------- tickets


_PRIORITIES = ("low", "normal", "normal", "normal", "high", "urgent")


@dataclass
class _Tickets:
    """Writes ticket lines in order and notes every planted thing in the answer key."""

    rng: random.Random
    key: Key
    originals: Originals
    counters: dict[str, int] = field(default_factory=dict)

    def line(self, number: int, role: str) -> tuple[bytes, Record | None]:
        """The bytes of line ``number`` (1-based) and its record, None when it is not JSON."""
        row_id = f"T{number:06d}"
        if role.startswith("malformed:"):
            return self._malformed(number, row_id, role.split(":", 1)[1])
        text, category, lang = self._text(number, row_id, role)
        self.key["categories"]["tickets"][category] += 1
        record = self._record(row_id, text, category, lang)
        return dump_line(record), record

    def _record(self, row_id: str, text: Any, category: str, lang: str) -> Record:
        return {
            "id": row_id,
            "text": text,
            "category": category,
            "lang": lang,
            "created": created_at(self.rng),
            "priority": pick(self.rng, _PRIORITIES),
        }

    def _text(self, number: int, row_id: str, role: str) -> tuple[str, str, str]:
        rng, where = self.rng, {"dataset": "tickets", "id": row_id, "line": number}
        if role in ("exact", "near") and (original := self.originals.take()):
            return self._copy(where, role, original)
        if role == "junk":
            text, lang = junk_row(next_index(self.counters, "junk"))
            self.key["noise"]["junk"].append(where)
            return text, "other", lang
        if role == "spam":
            text, lang = spam_row(rng)
            self.key["noise"]["spam"].append(where)
            return text, "other", lang
        category, lang = draw_category(rng), draw_lang(rng)
        parts = ticket_parts(rng, category, lang)
        text = self._dress(where, role, parts, lang)
        if role not in ("pii", "decoy", "markup", "fullwidth", "control"):
            self.originals.offer(row_id, text, category, lang)
        return text, category, lang

    def _copy(
        self, where: Record, role: str, original: tuple[str, Any, str, str]
    ) -> tuple[str, str, str]:
        source, text, category, lang = original
        if role == "exact":
            copy, variant = exact_variant(self.rng, text, next_index(self.counters, "exact"))
            self.key["exact_duplicates"].append({**where, "original": source, "variant": variant})
        else:
            copy, edits, score = near_copy(self.rng, text, lang)
            self.key["near_duplicates"].append(
                {**where, "original": source, **near_entry(edits, score)}
            )
        return copy, category, lang

    def _dress(self, where: Record, role: str, parts: list[str], lang: str) -> str:
        """Plant this row's PII, decoy or noise into its sentences."""
        rng = self.rng
        if role == "pii":
            parts = plant_pii(rng, parts, lang, next_index(self.counters, "pii"), where, self.key)
        elif role == "decoy":
            parts = plant_decoy(
                rng, parts, lang, next_index(self.counters, "decoy"), where, self.key
            )
        elif role == "markup":
            text, used = markup_noise(rng, parts)
            self.key["noise"]["markup"].append({**where, "markup": used})
            return text
        elif role == "fullwidth":
            text, changed = fullwidth_noise(rng, parts, lang)
            self.key["noise"]["fullwidth"].append({**where, "chars": changed})
            return text
        text = join_parts(rng, parts, lang)
        if role == "control":
            text, chars = control_noise(rng, text)
            self.key["noise"]["control"].append({**where, "chars": chars})
        return text

    def _malformed(self, number: int, row_id: str, kind: str) -> tuple[bytes, Record | None]:
        rng = self.rng
        category, lang = draw_category(rng), draw_lang(rng)
        text = join_parts(rng, ticket_parts(rng, category, lang), lang)
        record = self._record(row_id, text, category, lang)
        line, detail = _MALFORMERS[kind](rng, record)
        entry = {"dataset": "tickets", "line": number, "id": row_id, "problem": kind}
        self.key["malformed"].append({**entry, "detail": detail, "bytes": len(line) - 1})
        if kind in ("broken_json", "invalid_utf8"):
            return line, None
        return line, json.loads(line)


def _broken_json(rng: random.Random, record: Record) -> tuple[bytes, str]:
    line = json.dumps(record, ensure_ascii=False)
    style = rng.randrange(4)
    if style == 0:
        cut = line.index('"text": "') + 20
        return line[:cut].encode() + b"\n", "truncated inside the text string"
    if style == 1:
        return (line[:-1] + ", }").encode() + b"\n", "trailing comma before the closing brace"
    if style == 2:
        return repr(record).encode() + b"\n", "single-quoted keys (a Python dict, not JSON)"
    bad = line.replace('"text": "', '"text": "he said "hi" and ', 1)
    return bad.encode() + b"\n", "unescaped double quote inside the text string"


def _invalid_utf8(rng: random.Random, record: Record) -> tuple[bytes, str]:
    line = json.dumps(record, ensure_ascii=False).encode("utf-8")
    at = line.index(b'"text": "') + len(b'"text": "')
    raw, what = pick(
        rng,
        (
            (b"\xff\xfe", "bytes FF FE"),
            (b"\xe4\xb8", "a truncated 3-byte sequence"),
            (b"\x80", "a lone continuation byte"),
            (b"caf\xe9 ", "Latin-1 encoded text"),
        ),
    )
    return line[:at] + raw + line[at:] + b"\n", f"{what} in the text value"


def _missing_text(rng: random.Random, record: Record) -> tuple[bytes, str]:
    body = record.pop("text")
    if rng.random() < 0.5:
        record["body"] = body
        return dump_line(record), "no text field (the text is under body)"
    return dump_line(record), "no text field"


def _text_number(rng: random.Random, record: Record) -> tuple[bytes, str]:
    record["text"] = pick(rng, (rand_int(rng, 1, 99_999), round(rng.uniform(0, 1000), 2)))
    return dump_line(record), "text is a number"


def _text_list(rng: random.Random, record: Record) -> tuple[bytes, str]:
    text = str(record["text"])
    record["text"] = [text[: len(text) // 2], text[len(text) // 2 :]]
    return dump_line(record), "text is a list"


def _oversized(rng: random.Random, record: Record) -> tuple[bytes, str]:
    unit = str(record["text"]) + "\n"
    repeat = OVERSIZED_BYTES // len(unit.encode("utf-8")) + 2
    record["text"] = unit * repeat
    line = dump_line(record)
    return line, f"record is {len(line) - 1} bytes (limit {OVERSIZED_BYTES})"


_MALFORMERS: dict[str, Callable[[random.Random, Record], tuple[bytes, str]]] = {
    "broken_json": _broken_json,
    "invalid_utf8": _invalid_utf8,
    "missing_text": _missing_text,
    "text_number": _text_number,
    "text_list": _text_list,
    "oversized": _oversized,
}


def ticket_lines(rng: random.Random, rows: int, key: Key) -> Iterator[tuple[bytes, Record | None]]:
    roles = line_roles(rng, rows, _ticket_quotas(rows))
    writer = _Tickets(rng, key, Originals(random.Random(rng.getrandbits(64))))
    for number, role in enumerate(roles, start=1):
        yield writer.line(number, role)
