"""Text assembly for the sample: seeded draws, slot values, sentence pools, tickets' and chats'
sentences, and the character shingles the answer key's Jaccard figures use."""

# ruff: noqa: RUF001

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar

from offline.data.sample.tables import table

_SENTENCES = table("sentences")
_SLOTS = table("slots")

SHINGLE = 5
# Short texts cannot carry 1-3 edits and stay above the near-duplicate threshold.
MIN_TEXT_CHARS = 130

Record = dict[str, Any]
Key = dict[str, Any]
SlotMaker = Callable[[random.Random, str], str]


T = TypeVar("T")


# random.Random.choice/randint/sample go through _randbelow, several times slower than random();
# these keep 200k tickets well inside the benchmark's time budget.
def pick(rng: random.Random, seq: Sequence[T]) -> T:
    return seq[int(rng.random() * len(seq))]


def rand_int(rng: random.Random, lo: int, hi: int) -> int:
    return lo + int(rng.random() * (hi - lo + 1))


def pick_distinct(rng: random.Random, seq: Sequence[T], count: int) -> list[T]:
    """``count`` distinct items of ``seq`` in random order (``count`` is small next to ``seq``)."""
    picked: list[int] = []
    while len(picked) < count:
        i = int(rng.random() * len(seq))
        if i not in picked:
            picked.append(i)
    return [seq[i] for i in picked]


def shuffled(rng: random.Random, seq: Sequence[T]) -> list[T]:
    items = list(seq)
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]
    return items


# --------------------------------------------------------------------------- slot values

_BRANDS: tuple[str, ...] = _SLOTS["brands"]
_KINDS_EN: tuple[str, ...] = _SLOTS["kinds_en"]
_KINDS_ZH: tuple[str, ...] = _SLOTS["kinds_zh"]
_MODEL_LETTERS: str = _SLOTS["model_letters"]
_MODEL_SUFFIXES: tuple[str, ...] = _SLOTS["model_suffixes"]
_CITIES_EN: tuple[str, ...] = _SLOTS["cities_en"]
_CITIES_ZH: tuple[str, ...] = _SLOTS["cities_zh"]
FIRST_EN: tuple[str, ...] = _SLOTS["first_en"]
LAST_EN: tuple[str, ...] = _SLOTS["last_en"]
_SURNAMES_ZH: tuple[str, ...] = _SLOTS["surnames_zh"]
_GIVEN_ZH: tuple[str, ...] = _SLOTS["given_zh"]
_AGENTS_EN: tuple[str, ...] = _SLOTS["agents_en"]
_AGENTS_ZH: tuple[str, ...] = _SLOTS["agents_zh"]
_COLORS_EN: tuple[str, ...] = _SLOTS["colors_en"]
_COLORS_ZH: tuple[str, ...] = _SLOTS["colors_zh"]
_STORES_EN: tuple[str, ...] = _SLOTS["stores_en"]
_STORES_ZH: tuple[str, ...] = _SLOTS["stores_zh"]
_ROOMS_EN: tuple[str, ...] = _SLOTS["rooms_en"]
_ROOMS_ZH: tuple[str, ...] = _SLOTS["rooms_zh"]
_EVENTS_EN: tuple[str, ...] = _SLOTS["events_en"]
_EVENTS_ZH: tuple[str, ...] = _SLOTS["events_zh"]
_RELATIVES_EN: tuple[str, ...] = _SLOTS["relatives_en"]
_RELATIVES_ZH: tuple[str, ...] = _SLOTS["relatives_zh"]
_WEEKDAYS_EN: tuple[str, ...] = _SLOTS["weekdays_en"]
_WEEKDAYS_ZH: tuple[str, ...] = _SLOTS["weekdays_zh"]
_MONTHS_EN: tuple[str, ...] = _SLOTS["months_en"]
_COURIERS_EN: tuple[str, ...] = _SLOTS["couriers_en"]
_COURIERS_ZH: tuple[str, ...] = _SLOTS["couriers_zh"]
_APPS_EN: tuple[str, ...] = _SLOTS["apps_en"]
_APPS_ZH: tuple[str, ...] = _SLOTS["apps_zh"]
_OS: tuple[str, ...] = _SLOTS["os"]
_PAYMENTS_EN: tuple[str, ...] = _SLOTS["payments_en"]
_PAYMENTS_ZH: tuple[str, ...] = _SLOTS["payments_zh"]
_PLANS_EN: tuple[str, ...] = _SLOTS["plans_en"]
_PLANS_ZH: tuple[str, ...] = _SLOTS["plans_zh"]
_COMPANY_WORDS: tuple[str, ...] = _SLOTS["company_words"]
_COMPANY_KINDS_EN: tuple[str, ...] = _SLOTS["company_kinds_en"]
_COMPANY_WORDS_ZH: tuple[str, ...] = _SLOTS["company_words_zh"]
_COMPANY_KINDS_ZH: tuple[str, ...] = _SLOTS["company_kinds_zh"]
_ORDER_PREFIXES: tuple[str, ...] = _SLOTS["order_prefixes"]
_TRACKING_PREFIXES: tuple[str, ...] = _SLOTS["tracking_prefixes"]
_WORDS: tuple[str, ...] = _SLOTS["words"]
_NTH_EN: tuple[str, ...] = _SLOTS["nth_en"]
_NTH_ZH: tuple[str, ...] = _SLOTS["nth_zh"]


def _pick(en: Sequence[str], zh: Sequence[str] | None = None) -> SlotMaker:
    def make(rng: random.Random, lang: str) -> str:
        return pick(rng, zh if lang == "zh" and zh is not None else en)

    return make


def _number(lo: int, hi: int) -> SlotMaker:
    def make(rng: random.Random, lang: str) -> str:
        return str(rand_int(rng, lo, hi))

    return make


def _model(rng: random.Random, lang: str) -> str:
    letter = pick(rng, _MODEL_LETTERS)
    return f"{pick(rng, _BRANDS)} {letter}{rand_int(rng, 1, 99)}{pick(rng, _MODEL_SUFFIXES)}"


def _product(rng: random.Random, lang: str) -> str:
    kinds = _KINDS_ZH if lang == "zh" else _KINDS_EN
    return f"{_model(rng, lang)} {pick(rng, kinds)}"


def _amount(rng: random.Random, lang: str) -> str:
    value = rand_int(rng, 900, 899_900) / 100
    if lang == "zh":
        return f"{value:.2f}元" if rng.random() < 0.6 else f"¥{value:.0f}"
    return pick(rng, (f"${value:.2f}", f"¥{value:.2f}", f"{value:.2f} yuan", f"RMB {value:.0f}"))


def _day(rng: random.Random) -> date:
    return date(2024, 1, 1) + timedelta(days=rand_int(rng, 0, 699))


def _date(rng: random.Random, lang: str) -> str:
    d = _day(rng)
    if lang == "zh":
        return f"{d.month}月{d.day}日" if rng.random() < 0.7 else f"{d.year}年{d.month}月{d.day}日"
    month = _MONTHS_EN[d.month - 1]
    return pick(rng, (f"{month} {d.day}", f"{d.day} {month}", d.isoformat()))


def _time(rng: random.Random, lang: str) -> str:
    hour, minute = rand_int(rng, 7, 22), pick(rng, (0, 10, 15, 20, 30, 40, 45, 50))
    if lang == "zh" and rng.random() < 0.6:
        part = "上午" if hour < 12 else "下午" if hour < 18 else "晚上"
        half = "半" if minute == 30 else f"{minute}分" if minute else ""
        return f"{part}{hour if hour <= 12 else hour - 12}点{half}"
    if lang == "en" and rng.random() < 0.5:
        suffix = "am" if hour < 12 else "pm"
        return f"{hour if hour <= 12 else hour - 12}:{minute:02d} {suffix}"
    return f"{hour}:{minute:02d}"


def order_number(rng: random.Random, lang: str) -> str:
    d = _day(rng)
    return f"{pick(rng, _ORDER_PREFIXES)}{d:%Y%m%d}-{rand_int(rng, 1000, 9999)}"


def _tracking(rng: random.Random, lang: str) -> str:
    # Ten digits: never an 11-digit mobile number, a card or an ID.
    return f"{pick(rng, _TRACKING_PREFIXES)}{rand_int(rng, 10**9, 10**10 - 1)}"


def random_code(rng: random.Random, length: int) -> str:
    return "".join(pick(rng, "BCDFGHJKLMNPQRSTVWXZ23456789") for _ in range(length))


def _errcode(rng: random.Random, lang: str) -> str:
    style = rand_int(rng, 0, 3)
    if style == 0:
        return f"E{rand_int(rng, 1000, 9999)}"
    if style == 1:
        return f"0x{rng.getrandbits(32):08X}"
    if style == 2:
        return f"ERR-{rand_int(rng, 100, 999)}"
    return f"{pick(rng, ('NET', 'AUTH', 'IO', 'DB', 'SYNC'))}_{rand_int(rng, 10, 99)}"


def _company(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        city = pick(rng, _CITIES_ZH)
        return f"{city}{pick(rng, _COMPANY_WORDS_ZH)}{pick(rng, _COMPANY_KINDS_ZH)}有限公司"
    return f"{pick(rng, _COMPANY_WORDS)} {pick(rng, _COMPANY_KINDS_EN)}"


def _fname(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        return pick(rng, _SURNAMES_ZH) + pick(rng, _GIVEN_ZH)
    return pick(rng, FIRST_EN)


_SLOT_MAKERS: dict[str, SlotMaker] = {
    "agent": _pick(_AGENTS_EN, _AGENTS_ZH),
    "amount": _amount,
    "amount2": _amount,
    "app": _pick(_APPS_EN, _APPS_ZH),
    "brand": _pick(_BRANDS),
    "city": _pick(_CITIES_EN, _CITIES_ZH),
    "city2": _pick(_CITIES_EN, _CITIES_ZH),
    "color": _pick(_COLORS_EN, _COLORS_ZH),
    "company": _company,
    "coupon": lambda rng, lang: random_code(rng, rand_int(rng, 6, 9)),
    "courier": _pick(_COURIERS_EN, _COURIERS_ZH),
    "date": _date,
    "days": _number(2, 30),
    "errcode": _errcode,
    "event": _pick(_EVENTS_EN, _EVENTS_ZH),
    "fname": _fname,
    "invoice_no": lambda rng, lang: (
        f"INV-{rand_int(rng, 2023, 2025)}-{rand_int(rng, 10**5, 10**6 - 1)}"
    ),
    "lname": _pick(LAST_EN),
    "member": lambda rng, lang: f"M{rand_int(rng, 10**6, 10**7 - 1)}",
    "model": _model,
    "n": _number(3, 20),
    "nth": _pick(_NTH_EN, _NTH_ZH),
    "order": order_number,
    "os": _pick(_OS),
    "payment": _pick(_PAYMENTS_EN, _PAYMENTS_ZH),
    "percent": _number(5, 95),
    "plan": _pick(_PLANS_EN, _PLANS_ZH),
    "product": _product,
    "product2": _product,
    "qty": _number(2, 6),
    "ref": lambda rng, lang: f"R{random_code(rng, 7)}",
    "relative": _pick(_RELATIVES_EN, _RELATIVES_ZH),
    "room": _pick(_ROOMS_EN, _ROOMS_ZH),
    "serial": lambda rng, lang: f"SN{random_code(rng, 10)}",
    "store": _pick(_STORES_EN, _STORES_ZH),
    "time": _time,
    "tracking": _tracking,
    "username": lambda rng, lang: f"{pick(rng, _WORDS)}_{rand_int(rng, 10, 9999)}",
    "version": lambda rng, lang: (
        f"{rand_int(rng, 1, 9)}.{rand_int(rng, 0, 20)}.{rand_int(rng, 0, 30)}"
    ),
    "weekday": _pick(_WEEKDAYS_EN, _WEEKDAYS_ZH),
    "years": _number(2, 12),
}


# Named things keep one value per text (a ticket is about one product and one order); amounts,
# dates and counts are drawn afresh at each use.
# fmt: off
_STICKY_SLOTS = frozenset((
    "agent", "app", "brand", "company", "courier", "invoice_no", "member", "order", "os",
    "payment", "plan", "product", "product2", "serial", "tracking", "username",
))
# fmt: on


class Slots(dict[str, str]):
    """One text's slot values: named things are drawn on first use and then reused."""

    def __init__(self, rng: random.Random, lang: str) -> None:
        super().__init__()
        self.rng = rng
        self.lang = lang

    def __missing__(self, name: str) -> str:
        value = _SLOT_MAKERS[name](self.rng, self.lang)
        if name in _STICKY_SLOTS:
            self[name] = value
        return value


# --------------------------------------------------------------------------- sentence pools

_EN: dict[str, tuple[str, ...]] = _SENTENCES["en"]

_ZH: dict[str, tuple[str, ...]] = _SENTENCES["zh"]

CORE: dict[str, dict[str, tuple[str, ...]]] = _SENTENCES["core"]

# Support replies and follow-ups for conversations; same keyword discipline as tickets.
_REPLIES: dict[str, dict[str, tuple[str, ...]]] = _SENTENCES["replies"]

CHAT: dict[str, dict[str, tuple[str, ...]]] = _SENTENCES["chat"]


# --------------------------------------------------------------------------- shingles


def shingles(text: str, n: int = SHINGLE) -> set[str]:
    """The set of character ``n``-grams of ``text`` (the text itself when shorter than ``n``)."""
    if len(text) <= n:
        return {text} if text else set()
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def jaccard(a: str, b: str, n: int = SHINGLE) -> float:
    """Jaccard similarity of the character ``n``-gram sets of ``a`` and ``b``."""
    sa, sb = shingles(a, n), shingles(b, n)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


# --------------------------------------------------------------------------- text assembly


def _pools(lang: str) -> dict[str, tuple[str, ...]]:
    return _ZH if lang == "zh" else _EN


def _contexts(rng: random.Random, lang: str, slots: Slots, count: int) -> list[str]:
    """``count`` sentences saying when who did what, each about something different."""
    pools, out = _pools(lang), []
    for did in pick_distinct(rng, pools["did"], count):
        when, who = pick(rng, pools["when"]), pick(rng, pools["who"])
        text = f"{when}{who}{did}。" if lang == "zh" else f"{when}, {who} {did}."
        out.append(text.format_map(slots))
    return out


def _sentence(rng: random.Random, template: str, lang: str, slots: Slots) -> str:
    """A core sentence, half the time with a trailing circumstance, so shared templates differ."""
    end = "。" if lang == "zh" else "."
    if rng.random() < 0.5 and template.endswith(end):
        glue = "，" if lang == "zh" else ", "
        template = template[:-1] + glue + pick(rng, _pools(lang)["circumstance"]) + end
    return template.format_map(slots)


def ticket_parts(rng: random.Random, category: str, lang: str) -> list[str]:
    """The sentences of one ticket: greeting, body in random order, request, sign-off."""
    pools, slots = _pools(lang), Slots(rng, lang)
    # A few spare templates in case the first ones make too short a ticket.
    core = pick_distinct(rng, CORE[lang][category], 6)
    body = [_sentence(rng, core.pop(), lang, slots) for _ in range(rand_int(rng, 2, 3))]
    for name, chance in (("aside", 0.4), ("urgency", 0.4), ("detail", 0.7)):
        if rng.random() < chance:
            body.append(pick(rng, pools[name]).format_map(slots))
    body = shuffled(rng, body)
    context = _contexts(rng, lang, slots, 1 if rng.random() < 0.75 else 2)
    body = context + body if rng.random() < 0.7 else body + context
    while sum(map(len, body)) < MIN_TEXT_CHARS and core:
        body.insert(rng.randrange(len(body) + 1), _sentence(rng, core.pop(), lang, slots))
    head = [pick(rng, pools["greeting"]).format_map(slots)] if rng.random() < 0.7 else []
    tail = [pick(rng, pools["request"]).format_map(slots)] if rng.random() < 0.85 else []
    if rng.random() < 0.6:
        tail.append(pick(rng, pools["closing"]).format_map(slots))
    return head + body + tail


def join_parts(rng: random.Random, parts: Sequence[str], lang: str) -> str:
    sep = "" if lang == "zh" else " "
    if rng.random() < 0.25:
        sep = "\n"
    return sep.join(parts)


def join_plain(parts: Sequence[str], lang: str) -> str:
    return ("" if lang == "zh" else " ").join(parts)


@dataclass
class _Chat:
    """One conversation being written: its slots, and decks so no sentence repeats in it."""

    rng: random.Random
    category: str
    lang: str
    slots: Slots
    decks: dict[str, list[str]] = field(default_factory=dict)

    def deal(self, name: str, pool: Sequence[str], count: int = 1) -> list[str]:
        """``count`` templates off the ``name`` deck, reshuffling ``pool`` when it runs out."""
        deck, out = self.decks.setdefault(name, []), []
        for _ in range(count):
            if not deck:
                deck.extend(shuffled(self.rng, pool))
            out.append(deck.pop())
        return out

    def opening(self) -> str:
        rng, lang, pools = self.rng, self.lang, _pools(self.lang)
        parts = [pick(rng, pools["greeting"])] if rng.random() < 0.5 else []
        if rng.random() < 0.6:
            parts += _contexts(rng, lang, self.slots, 1)
        core = self.deal("core", CORE[lang][self.category], rand_int(rng, 1, 2))
        parts += [_sentence(rng, t, lang, self.slots) for t in core]
        for name, chance in (("detail", 0.5), ("request", 0.5)):
            if rng.random() < chance:
                parts.append(pick(rng, pools[name]))
        return join_plain(parts, lang).format_map(self.slots)

    def follow(self) -> str:
        if self.rng.random() < 0.4:
            template = self.deal("core", CORE[self.lang][self.category])[0]
            return _sentence(self.rng, template, self.lang, self.slots)
        return self.deal("follow", CHAT[self.lang]["follow"])[0].format_map(self.slots)

    def reply(self) -> str:
        rng, chat = self.rng, CHAT[self.lang]
        replies = self.deal("reply", _REPLIES[self.lang][self.category], rand_int(rng, 1, 2))
        parts = [pick(rng, chat["opener"]), *replies]
        if rng.random() < 0.3:
            parts.append(pick(rng, chat["closer"]))
        return join_plain(parts, self.lang).format_map(self.slots)


def chat_messages(rng: random.Random, category: str, lang: str, turns: int) -> list[dict[str, str]]:
    """A support chat: optional system prompt, then ``turns`` alternating user/assistant turns."""
    chat = _Chat(rng, category, lang, Slots(rng, lang))
    messages = []
    if rng.random() < 0.6:
        system = pick(rng, CHAT[lang]["system"]).format_map(chat.slots)
        messages.append({"role": "system", "content": system})
    for turn in range(turns):
        content = chat.reply() if turn % 2 else chat.follow() if turn else chat.opening()
        messages.append({"role": "assistant" if turn % 2 else "user", "content": content})
    return messages
