"""What the dataset generators share: quotas, line roles, the pool of originals, the answer key."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any

from offline.data.keywords import CATEGORIES
from offline.data.sample.text import SHINGLE, Key, Record, rand_int

CATEGORY_WEIGHTS = (18, 20, 17, 20, 15, 10)


# --------------------------------------------------------------------------- planning


def share(n: int, fraction: float, floor: int) -> int:
    return max(floor, round(n * fraction))


def line_roles(rng: random.Random, n: int, quotas: dict[str, int], head: int = 10) -> list[str]:
    """One role per line; the first ``head`` lines are plain, so readers sniff a clean start."""
    planted = [role for role, count in quotas.items() for _ in range(count)]
    tail = planted + ["base"] * (n - head - len(planted))
    rng.shuffle(tail)
    return ["base"] * head + tail


class Originals:
    """A bounded, seeded pool of plain rows for planted copies to duplicate (each at most once)."""

    CAP = 4096

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.items: list[tuple[str, Any, str, str]] = []

    def offer(self, row_id: str, content: Any, category: str, lang: str) -> None:
        if self.rng.random() >= 0.3:
            return
        item = (row_id, content, category, lang)
        if len(self.items) < self.CAP:
            self.items.append(item)
        else:
            self.items[self.rng.randrange(self.CAP)] = item

    def take(self) -> tuple[str, Any, str, str] | None:
        if not self.items:
            return None
        i = self.rng.randrange(len(self.items))
        self.items[i], self.items[-1] = self.items[-1], self.items[i]
        return self.items.pop()


def new_key(rows: int, seed: int, conversations: int) -> Key:
    return {
        "format": 1,
        "generator": "offline data sample",
        "rows": rows,
        "seed": seed,
        "shingles": {"unit": "char", "n": SHINGLE, "conversation_text": "contents joined by \\n"},
        "files": {},
        "categories": {
            "tickets": {c: 0 for c in CATEGORIES},
            "conversations": {c: 0 for c in CATEGORIES},
        },
        "exact_duplicates": [],
        "near_duplicates": [],
        "pii": [],
        "decoys": [],
        "noise": {"markup": [], "fullwidth": [], "control": [], "junk": [], "spam": []},
        "malformed": [],
        "conversation_issues": [],
        "sensors": {},
        "counts": {"tickets": rows, "conversations": conversations},
    }


EPOCH = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=8)))


def created_at(rng: random.Random) -> str:
    return (EPOCH + timedelta(seconds=rand_int(rng, 0, 700 * 86_400 - 1))).isoformat()


def next_index(counters: dict[str, int], name: str) -> int:
    """How many ``name`` rows came before this one (formats cycle on it)."""
    counters[name] = counters.get(name, 0) + 1
    return counters[name] - 1


def draw_category(rng: random.Random) -> str:
    return rng.choices(CATEGORIES, CATEGORY_WEIGHTS)[0]


def draw_lang(rng: random.Random) -> str:
    return "zh" if rng.random() < 0.5 else "en"


def dump_line(record: Record) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
