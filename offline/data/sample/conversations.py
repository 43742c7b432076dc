"""``conversations.jsonl``: support chats with planted duplicates, PII and conversation defects."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from offline.data.sample.noise import near_copy, near_entry
from offline.data.sample.pii import plant_decoy, plant_pii
from offline.data.sample.plan import (
    Originals,
    draw_category,
    draw_lang,
    dump_line,
    line_roles,
    next_index,
    share,
)
from offline.data.sample.text import (
    CHAT,
    MIN_TEXT_CHARS,
    Key,
    Record,
    Slots,
    chat_messages,
    join_plain,
    pick,
)


def _conversation_quotas(n: int) -> dict[str, int]:
    return {
        "exact": share(n, 0.03, 2),
        "near": share(n, 0.03, 2),
        "pii": share(n, 0.05, 4),
        "decoy": share(n, 0.01, 1),
        "issue:empty_turn": share(n, 0.005, 1),
        "issue:role_alternation": share(n, 0.005, 1),
        "issue:missing_content": share(n, 0.005, 1),
        "issue:long": 1,
    }


# --------------------------------------------------------------------------- conversations


@dataclass
class _Conversations:
    """Writes conversation lines in order and notes planted copies, PII and defects."""

    rng: random.Random
    key: Key
    originals: Originals
    counters: dict[str, int] = field(default_factory=dict)

    def line(self, number: int, role: str) -> bytes:
        row_id = f"C{number:06d}"
        where = {"dataset": "conversations", "id": row_id, "line": number}
        if role in ("exact", "near") and (original := self.originals.take()):
            messages, category = self._copy(where, role, original)
        else:
            category, lang = draw_category(self.rng), draw_lang(self.rng)
            messages = self._fresh(where, role, category, lang)
        self.key["categories"]["conversations"][category] += 1
        return dump_line({"id": row_id, "messages": messages, "category": category})

    def _fresh(self, where: Record, role: str, category: str, lang: str) -> list[dict[str, str]]:
        rng = self.rng
        turns = 40 if role == "issue:long" else pick(rng, (2, 2, 4, 4, 6, 8))
        messages = chat_messages(rng, category, lang, turns)
        first = next(i for i, m in enumerate(messages) if m["role"] == "user")
        if role in ("pii", "decoy"):
            plant = plant_pii if role == "pii" else plant_decoy
            index = next_index(self.counters, role)
            parts = plant(rng, [messages[first]["content"]], lang, index, where, self.key)
            messages[first]["content"] = join_plain(parts, lang)
        elif role.startswith("issue:"):
            self._defect(where, role.split(":", 1)[1], messages, first, lang)
        elif len(_chat_text(messages)) >= MIN_TEXT_CHARS:
            self.originals.offer(str(where["id"]), messages, category, lang)
        return messages

    def _defect(
        self, where: Record, problem: str, messages: list[dict[str, str]], first: int, lang: str
    ) -> None:
        """Break one message (``first`` is the first user turn) and note where."""
        rng, turn = self.rng, first
        if problem == "empty_turn":
            turn = rng.randrange(first, len(messages))
            messages[turn]["content"] = pick(rng, ("", " ", "\n"))
        elif problem == "role_alternation":
            turn = first + 1
            follow = pick(rng, CHAT[lang]["follow"]).format_map(Slots(rng, lang))
            messages.insert(turn, {"role": "user", "content": follow})
        elif problem == "missing_content":
            turn = rng.randrange(first, len(messages))
            del messages[turn]["content"]
        else:
            turn = len(messages) - 1
        turns = sum(m["role"] != "system" for m in messages)
        self.key["conversation_issues"].append(
            {**where, "problem": problem, "message": turn, "turns": turns}
        )

    def _copy(
        self, where: Record, role: str, original: tuple[str, Any, str, str]
    ) -> tuple[list[dict[str, str]], str]:
        source, messages, category, lang = original
        messages = [dict(m) for m in messages]
        if role == "exact":
            self.key["exact_duplicates"].append(
                {**where, "original": source, "variant": "identical"}
            )
            return messages, category
        turn = max(range(len(messages)), key=lambda i: len(messages[i]["content"]))
        head, tail = _chat_text(messages[:turn]), _chat_text(messages[turn + 1 :])

        def whole(content: str) -> str:
            return "\n".join(p for p in (head, content, tail) if p)

        content = messages[turn]["content"]
        messages[turn]["content"], edits, score = near_copy(self.rng, content, lang, whole)
        self.key["near_duplicates"].append(
            {**where, "original": source, "message": turn, **near_entry(edits, score)}
        )
        return messages, category


def _chat_text(messages: list[dict[str, str]]) -> str:
    """What near-duplicate scores compare: the contents joined by newlines."""
    return "\n".join(m["content"] for m in messages)


def conversation_lines(rng: random.Random, count: int, key: Key) -> Iterator[bytes]:
    roles = line_roles(rng, count, _conversation_quotas(count), head=5)
    writer = _Conversations(rng, key, Originals(random.Random(rng.getrandbits(64))))
    for number, role in enumerate(roles, start=1):
        yield writer.line(number, role)
