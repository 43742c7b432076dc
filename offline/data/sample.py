"""``offline data sample``: a bilingual sample workspace with the problems the cleaning chain fixes.

:func:`generate` writes four files into a directory:

- ``tickets.jsonl`` (text kind): customer-support tickets in Chinese and English, one category
  each, with category keywords (:data:`CATEGORY_KEYWORDS`) a keyword rule can pre-label from;
- ``conversations.jsonl`` (conversation kind): support chats of 2-8 messages;
- ``sensors.csv`` (tabular kind): a per-minute series with gaps, spikes and unparseable cells;
- ``SAMPLE.json``: the answer key, saying where every planted problem is (duplicates and their
  originals, near duplicates with their edits and 5-gram Jaccard, PII by type, checksum-failing
  decoys, markup and noise rows, malformed lines, conversation defects, sensor gaps and spikes).

``SAMPLE.json`` sections; each row entry names ``dataset``, ``id`` and 1-based ``line``:

- ``exact_duplicates``: ``original`` (an earlier id) and ``variant`` (identical, case, whitespace);
- ``near_duplicates``: ``original``, ``edits`` (``op``, ``at`` in the original text, ``before``,
  ``after``; for a conversation, in message ``message``), ``jaccard`` (character 5-grams; a
  conversation's contents joined by newlines) and ``punctuation_only``;
- ``pii``: ``type`` (email, phone, cn_id, bank_card, ipv4, ipv6), ``format`` and ``value`` as it
  appears in the text; ``decoys``: look-alikes that fail their checksum, with ``why``;
- ``noise``: ``markup``, ``fullwidth``, ``control``, ``junk`` and ``spam`` rows;
- ``malformed``: ``problem`` (broken_json, invalid_utf8, missing_text, text_number, text_list,
  oversized), ``detail`` and ``bytes``; ``conversation_issues``: ``problem`` (empty_turn,
  role_alternation, missing_content, long) and the ``message`` index;
- ``sensors``: ``missing``, ``outliers`` and ``unparseable`` cells by ``row`` (0-based data row),
  ``line`` and ``column``.

Everything is drawn from ``random.Random(seed)``, so the same arguments give byte-identical files.
Base texts are assembled from many independent slots (products, order numbers, amounts, dates,
cities, sentences picked and ordered at random) so that no two of them are near duplicates by
accident; only the planted copies are.
"""

# Chinese text uses fullwidth punctuation on purpose (and the fullwidth-noise rows need it).
# ruff: noqa: RUF001

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from offline.data.keywords import CATEGORIES, CATEGORY_KEYWORDS
from offline.errors import ConfigError
from offline.fsutil import atomic_writer, disk_errors

__all__ = [
    "CATEGORIES",
    "CATEGORY_KEYWORDS",
    "KEY_FILE",
    "MIN_ROWS",
    "SENSOR_ROWS",
    "SampleFile",
    "SampleManifest",
    "bank_card_ok",
    "cn_id_ok",
    "generate",
    "iter_tickets",
    "jaccard",
    "shingles",
]

MIN_ROWS = 100
SENSOR_ROWS = 480
KEY_FILE = "SAMPLE.json"
SHINGLE = 5
NEAR_MIN_JACCARD = 0.8
# Short texts cannot carry 1-3 edits and stay above the near-duplicate threshold.
MIN_TEXT_CHARS = 130
OVERSIZED_BYTES = 1_000_000

_CATEGORY_WEIGHTS = (18, 20, 17, 20, 15, 10)

Record = dict[str, Any]
Key = dict[str, Any]
SlotMaker = Callable[[random.Random, str], str]


T = TypeVar("T")


# random.Random.choice/randint/sample go through _randbelow, several times slower than random();
# these keep 200k tickets well inside the benchmark's time budget.
def _one(rng: random.Random, seq: Sequence[T]) -> T:
    return seq[int(rng.random() * len(seq))]


def _int(rng: random.Random, lo: int, hi: int) -> int:
    return lo + int(rng.random() * (hi - lo + 1))


def _sample(rng: random.Random, seq: Sequence[T], count: int) -> list[T]:
    """``count`` distinct items of ``seq`` in random order (``count`` is small next to ``seq``)."""
    picked: list[int] = []
    while len(picked) < count:
        i = int(rng.random() * len(seq))
        if i not in picked:
            picked.append(i)
    return [seq[i] for i in picked]


def _shuffled(rng: random.Random, seq: Sequence[T]) -> list[T]:
    items = list(seq)
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]
    return items


# --------------------------------------------------------------------------- slot values

# fmt: off
_BRANDS = (
    "Nova", "Aurora", "Kestrel", "Lumen", "Orbit", "Pebble", "Quill", "Sable", "Tundra", "Vireo",
    "Zephyr", "Helix", "Juniper", "Marlin", "Cobalt", "Ember", "Fable", "Granite", "Indigo",
    "Lark", "Mosaic", "Nimbus", "Onyx", "Prism",
)
_KINDS_EN = (
    "wireless earbuds", "smart watch", "air purifier", "robot vacuum", "espresso machine",
    "laptop stand", "mechanical keyboard", "4K monitor", "Wi-Fi router", "electric kettle",
    "standing desk", "phone case", "power bank", "bluetooth speaker", "hair dryer", "rice cooker",
    "hiking backpack", "running shoes", "desk lamp", "webcam", "drawing tablet", "baby monitor",
    "air fryer", "e-reader",
)
_KINDS_ZH = (
    "无线耳机", "智能手表", "空气净化器", "扫地机器人", "咖啡机", "笔记本支架", "机械键盘",
    "显示器", "路由器", "电水壶", "升降桌", "手机壳", "充电宝", "蓝牙音箱", "吹风机", "电饭煲",
    "登山包", "跑鞋", "台灯", "摄像头", "数位板", "婴儿监视器", "空气炸锅", "电子书阅读器",
)
_MODEL_LETTERS = "ABCDEFGHKMNPRSTVXZ"
_MODEL_SUFFIXES = ("", "", " Pro", " Lite", " Max", " Plus", " Mini", " SE", " Ultra", " Air")
_CITIES_EN = (
    "Shanghai", "Beijing", "Shenzhen", "Hangzhou", "Chengdu", "Wuhan", "Nanjing", "Xi'an",
    "Suzhou", "Chongqing", "Tianjin", "Qingdao", "Xiamen", "Kunming", "Harbin", "Dalian",
    "Changsha", "Zhengzhou", "Shenyang", "Fuzhou", "Singapore", "Hong Kong", "Taipei", "Toronto",
    "London", "Sydney", "Berlin", "Seattle", "Austin", "Dublin",
)
_CITIES_ZH = (
    "上海", "北京", "深圳", "杭州", "成都", "武汉", "南京", "西安", "苏州", "重庆", "天津", "青岛",
    "厦门", "昆明", "哈尔滨", "大连", "长沙", "郑州", "沈阳", "福州", "新加坡", "香港", "台北",
    "宁波", "合肥", "济南", "南宁", "贵阳", "兰州", "无锡",
)
_FIRST_EN = (
    "Emma", "Liam", "Olivia", "Noah", "Ava", "Ethan", "Mia", "Lucas", "Chloe", "Mason", "Grace",
    "Leo", "Zoe", "Owen", "Ruby", "Caleb", "Nora", "Isaac", "Hazel", "Adrian", "Wei", "Jing",
    "Tao", "Ming", "Hui", "Jun", "Lin", "Yan", "Priya", "Omar", "Sofia", "Mateo", "Hannah",
    "Felix", "Ivy", "Daniel", "Clara", "Hugo", "Alice", "Ryan",
)
_LAST_EN = (
    "Smith", "Chen", "Wang", "Li", "Zhang", "Liu", "Brown", "Garcia", "Martin", "Lee", "Walker",
    "Young", "King", "Wright", "Lopez", "Hill", "Scott", "Green", "Adams", "Baker", "Nelson",
    "Carter", "Mitchell", "Roberts", "Turner", "Phillips", "Campbell", "Parker", "Evans",
    "Edwards", "Collins", "Stewart", "Morris", "Murphy", "Cook",
)
_SURNAMES_ZH = (
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林",
    "何", "郭", "马", "罗",
)
_GIVEN_ZH = (
    "伟", "芳", "娜", "敏", "静", "磊", "洋", "艳", "勇", "军", "杰", "娟", "涛", "明", "超",
    "秀英", "晓东", "雨桐", "子涵", "浩然", "思远", "欣怡", "宇航", "梓萱",
)
_AGENTS_EN = ("Lily", "Jason", "Coco", "Kevin", "Amy", "Eric", "Vivian", "Tony", "Sunny", "Mark")
_AGENTS_ZH = (
    "小美", "小林", "阿杰", "7号客服", "小雨", "阿强", "小周", "12号客服", "小唐", "阿May",
)
_COLORS_EN = (
    "black", "white", "silver", "navy", "olive", "rose gold", "sky blue", "graphite", "sand",
    "forest green", "coral", "lavender", "charcoal", "ivory", "burgundy",
)
_COLORS_ZH = (
    "黑色", "白色", "银色", "藏青色", "橄榄绿", "玫瑰金", "天蓝色", "石墨灰", "沙色", "森林绿",
    "珊瑚红", "薰衣草紫", "炭灰色", "象牙白", "酒红色",
)
_STORES_EN = (
    "online store", "Tmall flagship store", "JD flagship store", "official website", "mall kiosk",
    "airport shop", "WeChat shop", "downtown showroom",
)
_STORES_ZH = (
    "官网商城", "天猫旗舰店", "京东旗舰店", "线下门店", "商场专柜", "机场店", "微信小店",
    "市中心体验店",
)
_ROOMS_EN = ("living room", "bedroom", "kitchen", "study", "home office", "garage", "nursery")
_ROOMS_ZH = ("客厅", "卧室", "厨房", "书房", "阳台", "办公室", "儿童房")
_EVENTS_EN = (
    "Double 11", "618", "Black Friday", "Spring Festival", "back-to-school", "anniversary",
    "Singles' Day", "summer clearance",
)
_EVENTS_ZH = ("双十一", "618", "年货节", "开学季", "周年庆", "黑五", "双十二", "夏季清仓")
_RELATIVES_EN = ("sister", "brother", "uncle", "cousin", "mother-in-law", "grandfather", "aunt")
_RELATIVES_ZH = ("姐姐", "弟弟", "舅舅", "表哥", "婆婆", "爷爷", "小姨")
_WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WEEKDAYS_ZH = (
    "周一", "周二", "周三", "周四", "周五", "周六", "周日", "星期一", "星期三", "星期五",
)
_MONTHS_EN = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
_COURIERS_EN = (
    "SF Express", "JD Logistics", "ZTO Express", "YTO Express", "Yunda", "EMS", "DHL", "FedEx",
    "UPS", "Cainiao",
)
_COURIERS_ZH = ("顺丰", "京东物流", "中通", "圆通", "申通", "韵达", "EMS", "德邦", "极兔")
_APPS_EN = (
    "mobile app", "iOS app", "Android app", "desktop client", "web portal", "mini program",
    "tablet app", "smart home app",
)
_APPS_ZH = ("App", "小程序", "网页版", "电脑客户端", "平板版App", "智能家居App")
_OS = (
    "iOS 17", "iOS 18", "Android 13", "Android 14", "HarmonyOS 4", "Windows 11", "macOS 14",
    "Windows 10", "iPadOS 17", "Android 12",
)
_PAYMENTS_EN = (
    "Alipay", "WeChat Pay", "UnionPay", "PayPal", "Apple Pay", "Visa card", "Mastercard",
)
_PAYMENTS_ZH = ("支付宝", "微信支付", "银联", "信用卡", "花呗", "云闪付")
_PLANS_EN = (
    "Premium plan", "Family plan", "Pro annual plan", "Basic monthly plan", "Student plan",
    "Business plan", "VIP membership", "Plus bundle",
)
_PLANS_ZH = (
    "高级会员", "家庭套餐", "年度专业版", "月度基础版", "学生套餐", "企业版", "超级VIP",
    "Plus套餐",
)
_COMPANY_WORDS = (
    "Bluepeak", "Redwood", "Sunrise", "Northgate", "Silverline", "Greenfield", "Brightway",
    "Harbor", "Summit", "Evergreen", "Clearwater", "Starlight",
)
_COMPANY_KINDS_EN = (
    "Trading Co.", "Consulting Ltd.", "Studio", "Technology Co.", "Foods Ltd.", "Design Group",
    "Logistic Partners",
)
_COMPANY_WORDS_ZH = (
    "蓝峰", "红杉", "朝阳", "北门", "银线", "绿野", "明途", "海港", "峰顶", "长青",
)
_COMPANY_KINDS_ZH = ("贸易", "咨询", "设计", "科技", "食品", "文化传媒", "电子")
_ORDER_PREFIXES = ("SO", "WX", "JD", "TB", "PO", "#")
_TRACKING_PREFIXES = ("SF", "JD", "YT", "ZT", "EMS", "1Z", "DPK", "JT")
_WORDS = (
    "sunny", "pixel", "maple", "tiger", "cloud", "river", "orange", "rocket", "panda", "ocean",
    "lemon", "comet",
)
_NTH_EN = ("third", "fourth", "fifth", "sixth")
_NTH_ZH = ("三", "四", "五", "六")
# fmt: on


def _pick(en: Sequence[str], zh: Sequence[str] | None = None) -> SlotMaker:
    def make(rng: random.Random, lang: str) -> str:
        return _one(rng, zh if lang == "zh" and zh is not None else en)

    return make


def _number(lo: int, hi: int) -> SlotMaker:
    def make(rng: random.Random, lang: str) -> str:
        return str(_int(rng, lo, hi))

    return make


def _model(rng: random.Random, lang: str) -> str:
    letter = _one(rng, _MODEL_LETTERS)
    return f"{_one(rng, _BRANDS)} {letter}{_int(rng, 1, 99)}{_one(rng, _MODEL_SUFFIXES)}"


def _product(rng: random.Random, lang: str) -> str:
    kinds = _KINDS_ZH if lang == "zh" else _KINDS_EN
    return f"{_model(rng, lang)} {_one(rng, kinds)}"


def _amount(rng: random.Random, lang: str) -> str:
    value = _int(rng, 900, 899_900) / 100
    if lang == "zh":
        return f"{value:.2f}元" if rng.random() < 0.6 else f"¥{value:.0f}"
    return _one(rng, (f"${value:.2f}", f"¥{value:.2f}", f"{value:.2f} yuan", f"RMB {value:.0f}"))


def _day(rng: random.Random) -> date:
    return date(2024, 1, 1) + timedelta(days=_int(rng, 0, 699))


def _date(rng: random.Random, lang: str) -> str:
    d = _day(rng)
    if lang == "zh":
        return f"{d.month}月{d.day}日" if rng.random() < 0.7 else f"{d.year}年{d.month}月{d.day}日"
    month = _MONTHS_EN[d.month - 1]
    return _one(rng, (f"{month} {d.day}", f"{d.day} {month}", d.isoformat()))


def _time(rng: random.Random, lang: str) -> str:
    hour, minute = _int(rng, 7, 22), _one(rng, (0, 10, 15, 20, 30, 40, 45, 50))
    if lang == "zh" and rng.random() < 0.6:
        part = "上午" if hour < 12 else "下午" if hour < 18 else "晚上"
        half = "半" if minute == 30 else f"{minute}分" if minute else ""
        return f"{part}{hour if hour <= 12 else hour - 12}点{half}"
    if lang == "en" and rng.random() < 0.5:
        suffix = "am" if hour < 12 else "pm"
        return f"{hour if hour <= 12 else hour - 12}:{minute:02d} {suffix}"
    return f"{hour}:{minute:02d}"


def _order(rng: random.Random, lang: str) -> str:
    d = _day(rng)
    return f"{_one(rng, _ORDER_PREFIXES)}{d:%Y%m%d}-{_int(rng, 1000, 9999)}"


def _tracking(rng: random.Random, lang: str) -> str:
    # Ten digits: never an 11-digit mobile number, a card or an ID.
    return f"{_one(rng, _TRACKING_PREFIXES)}{_int(rng, 10**9, 10**10 - 1)}"


def _code(rng: random.Random, length: int) -> str:
    return "".join(_one(rng, "BCDFGHJKLMNPQRSTVWXZ23456789") for _ in range(length))


def _errcode(rng: random.Random, lang: str) -> str:
    style = _int(rng, 0, 3)
    if style == 0:
        return f"E{_int(rng, 1000, 9999)}"
    if style == 1:
        return f"0x{rng.getrandbits(32):08X}"
    if style == 2:
        return f"ERR-{_int(rng, 100, 999)}"
    return f"{_one(rng, ('NET', 'AUTH', 'IO', 'DB', 'SYNC'))}_{_int(rng, 10, 99)}"


def _company(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        city = _one(rng, _CITIES_ZH)
        return f"{city}{_one(rng, _COMPANY_WORDS_ZH)}{_one(rng, _COMPANY_KINDS_ZH)}有限公司"
    return f"{_one(rng, _COMPANY_WORDS)} {_one(rng, _COMPANY_KINDS_EN)}"


def _fname(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        return _one(rng, _SURNAMES_ZH) + _one(rng, _GIVEN_ZH)
    return _one(rng, _FIRST_EN)


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
    "coupon": lambda rng, lang: _code(rng, _int(rng, 6, 9)),
    "courier": _pick(_COURIERS_EN, _COURIERS_ZH),
    "date": _date,
    "days": _number(2, 30),
    "errcode": _errcode,
    "event": _pick(_EVENTS_EN, _EVENTS_ZH),
    "fname": _fname,
    "invoice_no": lambda rng, lang: f"INV-{_int(rng, 2023, 2025)}-{_int(rng, 10**5, 10**6 - 1)}",
    "lname": _pick(_LAST_EN),
    "member": lambda rng, lang: f"M{_int(rng, 10**6, 10**7 - 1)}",
    "model": _model,
    "n": _number(3, 20),
    "nth": _pick(_NTH_EN, _NTH_ZH),
    "order": _order,
    "os": _pick(_OS),
    "payment": _pick(_PAYMENTS_EN, _PAYMENTS_ZH),
    "percent": _number(5, 95),
    "plan": _pick(_PLANS_EN, _PLANS_ZH),
    "product": _product,
    "product2": _product,
    "qty": _number(2, 6),
    "ref": lambda rng, lang: f"R{_code(rng, 7)}",
    "relative": _pick(_RELATIVES_EN, _RELATIVES_ZH),
    "room": _pick(_ROOMS_EN, _ROOMS_ZH),
    "serial": lambda rng, lang: f"SN{_code(rng, 10)}",
    "store": _pick(_STORES_EN, _STORES_ZH),
    "time": _time,
    "tracking": _tracking,
    "username": lambda rng, lang: f"{_one(rng, _WORDS)}_{_int(rng, 10, 9999)}",
    "version": lambda rng, lang: f"{_int(rng, 1, 9)}.{_int(rng, 0, 20)}.{_int(rng, 0, 30)}",
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


class _Slots(dict[str, str]):
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

# fmt: off
_EN: dict[str, tuple[str, ...]] = {
    "greeting": (
        "Hello,", "Hi,", "Hi there,", "Dear support team,", "Good morning,", "Good afternoon,",
        "Good evening,", "To whom it may concern,", "Hey team,", "Hello {agent},", "Hi {agent},",
        "Dear {agent},", "Dear customer service,", "Greetings,", "Hello again,",
    ),
    "when": (
        "Last {weekday}", "Yesterday morning", "Yesterday evening", "Two days ago",
        "Three days ago", "Over the weekend", "Earlier this month", "On {date}",
        "Right after the holiday", "This morning", "A week ago", "Late last night",
        "Around {time} today", "Just before the long weekend", "At the start of the month",
        "About ten days ago", "On my lunch break today", "Before my trip to {city}",
    ),
    "who": (
        "I", "my wife", "my husband", "my colleague {fname}", "my father", "my mother",
        "our office manager", "my roommate", "my son", "my daughter", "our team in {city}",
        "a friend of mine", "my neighbor {fname}", "my sister",
    ),
    "did": (
        "bought the {product} from your {store}", "ordered a {color} {product} for {fname}",
        "picked the {product} as a birthday gift", "upgraded to the {plan}",
        "set up the {product} in the {room}", "switched from a competitor to your {plan}",
        "started using the {product} at the office", "moved to a new apartment in {city}",
        "chose your {store} because a friend recommended it",
        "ordered {qty} units of the {product} for the team",
        "got a coupon worth {amount} and decided to try the {product}",
        "compared three brands and went with the {product}", "went to {city} for a conference",
        "signed up during the {event} sale", "replaced an old {product2} with the new {model}",
    ),
    "aside": (
        "I have been a loyal customer for {years} years.", "This is my {nth} message about this.",
        "Your chat agent {agent} was kind but could not help.",
        "I am writing from {city}, in case that matters.", "I already read the FAQ page twice.",
        "My {relative} says the same thing happened to them.",
        "We use the {product} every single day.",
        "I am not very good with technology, so please be patient.",
        "I rated your {store} five stars before this happened.",
        "I have attached a screenshot to this message.",
        "Honestly I expected better from {brand}.", "It worked fine for the first {days} days.",
        "My {relative} in {city2} recommended your brand to me.",
        "I only noticed it because of the {event} promotion.",
    ),
    "urgency": (
        "This is quite urgent for me.",
        "I need this sorted out before my trip to {city} on {date}.",
        "It is the {nth} time I am contacting you about this.", "I am really disappointed.",
        "No rush, but I would like an answer this week.",
        "My {relative} needs it for work, so it matters a lot.",
        "I have waited {days} days already.", "This is frustrating.",
        "I would hate to leave a bad review.", "Thanks for your patience with me.",
        "We have guests arriving on {weekday}, so timing matters.",
    ),
    "request": (
        "Could you please look into this?", "Please get back to me as soon as possible.",
        "What should I do next?", "I would appreciate a reply before {date}.",
        "Please let me know the next steps.", "Can someone call me back on {weekday}?",
        "I hope you can sort this out quickly.", "Please advise.", "Thank you for checking.",
        "Kindly reply by email.", "Any help would be appreciated.",
        "Let me know if you need more details from me.", "Please escalate this if needed.",
        "I am available after {time} if you want to talk.", "I look forward to your answer.",
    ),
    "closing": (
        "Thanks, {fname}", "Best regards, {fname} {lname}", "Regards, {fname}",
        "Thank you! {fname}", "Cheers, {fname}", "Many thanks, {fname} {lname}",
        "Sincerely, {fname} {lname}", "-- {fname}", "Sent from my phone", "Thanks in advance.",
    ),
    "circumstance": (
        "which never happened before", "even though I followed the manual",
        "and nobody has answered my emails", "according to a message I got on {date}",
        "as far as I can tell", "and my {relative} noticed it too", "just like last {weekday}",
        "if I read your website correctly", "and I have screenshots of it",
        "right after I came back from {city}", "although your hotline told me otherwise",
        "which is very inconvenient", "and I really need it fixed by {date}",
        "as my {relative} pointed out", "unless I am missing something",
        "and I am not the only one", "despite two calls to your hotline",
        "which {agent} from your team confirmed", "and the chat bot could not help",
        "so I am writing to you directly", "and this is costing me time",
        "and I checked again on {weekday}", "which surprised me a lot", "as of {time} today",
        "for the {nth} time this month", "and my colleague {fname} has the same issue",
        "even after waiting {days} days", "since we moved to {city}",
        "both at home and at the office", "which makes me worry about the {product2}",
    ),
    "detail": (
        "For reference, the order is {order}, placed on {date}.", "It came to {amount} in total.",
        "My member number is {member}.", "The item is the {color} {product}, bought in {city}.",
        "I am using {os} with the {app}, version {version}.",
        "We bought {qty} of them at the {store} on {date}.",
        "The serial number on the box is {serial}.",
        "You can find me under the name {fname} {lname} in your system.",
    ),
}

_ZH: dict[str, tuple[str, ...]] = {
    "greeting": (
        "你好，", "您好，", "客服你好，", "客服您好，", "在吗？", "你们好，", "{agent}你好，",
        "打扰一下，", "哈喽，", "亲，", "早上好，", "晚上好，", "您好客服，", "请问一下，",
    ),
    "when": (
        "上{weekday}", "昨天上午", "昨天晚上", "前两天", "三天前", "周末的时候", "这个月初",
        "{date}那天", "节后第一天", "今天早上", "一周前", "昨天深夜", "今天{time}左右",
        "出差去{city}之前", "大概十天前", "中午休息的时候", "上个月底",
    ),
    "who": (
        "我", "我老婆", "我老公", "我同事{fname}", "我爸", "我妈", "我们办公室", "我室友",
        "我儿子", "我女儿", "我们{city}的团队", "我朋友", "我邻居{fname}", "我姐姐",
    ),
    "did": (
        "在你们{store}买了{product}", "给{fname}订了一台{color}的{product}",
        "挑了{product}当生日礼物", "升级成了{plan}", "把{product}装在了{room}",
        "从别家换成了你们的{plan}", "开始在公司用{product}", "搬到了{city}的新家",
        "听朋友推荐来你们{store}下单", "一次订了{qty}台{product}给团队用",
        "领了一张{amount}的优惠券，顺手买了{product}", "对比了三个牌子最后选了{product}",
        "去{city}参加展会", "在{event}活动的时候开通了{plan}", "把旧的{product2}换成了新款{model}",
    ),
    "aside": (
        "我是你们{years}年的老客户了。", "这是我第{nth}次反映这个问题。",
        "在线客服{agent}态度很好，但没解决。", "我人在{city}，不知道有没有影响。",
        "帮助中心的文章我已经看过两遍了。", "我{relative}也遇到过一样的情况。",
        "我们每天都在用{product}。", "我不太懂这些，麻烦耐心一点。",
        "出事之前我还给你们{store}打了五星好评。", "截图已经附在后面了。",
        "对{brand}这个牌子有点失望。", "前{days}天用着还挺正常的。",
        "是{city2}的{relative}推荐我买你们家的。", "当时是冲着{event}的活动价买的。",
    ),
    "urgency": (
        "这件事对我来说挺急的。", "我{date}要去{city}出差，希望之前能解决。",
        "这已经是我第{nth}次联系你们了。", "真的很失望。", "不着急，但希望这周内有答复。",
        "家里{relative}工作要用，挺重要的。", "我已经等了{days}天了。", "太让人着急了。",
        "不想给差评。", "辛苦了。", "{weekday}家里要来客人，时间比较紧。",
    ),
    "request": (
        "麻烦帮忙查一下。", "请尽快回复我。", "我接下来该怎么办？", "希望{date}之前能给个答复。",
        "请告诉我后续怎么处理。", "{weekday}方便的话给我回个电话。", "希望能尽快解决。",
        "请指教。", "谢谢帮忙核实。", "请用邮件回复我。", "非常感谢！",
        "如果需要更多信息请告诉我。", "必要的话请帮我升级处理。", "我{time}以后都有空。",
        "等你们的回复。",
    ),
    "closing": (
        "谢谢！", "谢谢，{fname}", "{fname}", "辛苦了，{fname}", "感谢！——{fname}", "多谢。",
        "祝好，{fname}",
    ),
    "circumstance": (
        "以前从来没有过", "按说明书操作也一样", "发邮件也没人回", "{date}收到的短信就是这么说的",
        "我{relative}也发现了", "跟上{weekday}一模一样", "截图我都留着",
        "从{city}回来之后就这样了", "热线那边说法又不一样", "真的很不方便",
        "希望{date}之前能处理好", "不知道是不是我操作有问题", "身边好几个朋友都这样",
        "打了两次热线也没用", "{agent}也确认过了", "机器人客服解决不了", "所以直接来找你们",
        "耽误了我不少时间", "{weekday}又看了一次还是这样", "让我挺意外的",
        "截至今天{time}还是这样", "这个月已经是第{nth}次了", "同事{fname}也遇到一样的情况",
        "等了{days}天还是没变化", "搬到{city}以后一直这样", "在家和公司都一样",
        "连{product2}都有点担心了",
    ),
    "detail": (
        "参考信息：订单号{order}，{date}下的单。", "一共花了{amount}。", "我的会员号是{member}。",
        "买的是{color}的{product}，在{city}买的。", "我用的是{os}上的{app}，版本{version}。",
        "在{store}一共买了{qty}台，{date}买的。", "包装盒上的序列号是{serial}。",
        "系统里我的名字是{fname}。",
    ),
}

_CORE: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "billing": (
            "I was charged {amount} twice for order {order}.",
            "The invoice for order {order} shows {amount}, but the price on the page was "
            "{amount2}.",
            "My {plan} renewed on {date} and I was charged without any notice.",
            "Could you send me a VAT invoice made out to {company}?",
            "The billing statement lists a fee of {amount} that I do not recognize.",
            "I need a receipt for the {product} for my expense report.",
            "My payment through {payment} went through but order {order} still says unpaid.",
            "There is an extra service fee of {amount} on my billing page.",
            "Please correct the tax number on invoice {invoice_no}.",
            "I was billed for {qty} items but only ordered one.",
            "The discount code {coupon} was not applied, so I was charged the full {amount}.",
            "Why does my monthly billing jump from {amount} to {amount2}?",
            "The payment failed three times with {payment}, yet my bank shows a pending hold.",
            "Our finance team needs the invoice issued to {company} before {date}.",
            "I switched to annual billing on {date} but I am still billed monthly.",
            "Please split the invoice for order {order} into two separate receipts.",
            "I cannot find where to download the invoice for my {plan}.",
        ),
        "shipping": (
            "My package for order {order} has not arrived after {days} days.",
            "The tracking number {tracking} has not updated since {date}.",
            "The courier {courier} marked it as delivered, but nothing came to my door.",
            "Delivery to {city} was promised by {date}, and it is still in transit.",
            "The parcel arrived with the box crushed and the {product} scratched.",
            "Can I change the delivery address to my office in {city}?",
            "I was told it shipped on {date}, yet the tracking page says label created.",
            "Only {qty} of the items were in the package; the rest is missing.",
            "The courier left the parcel at a pickup station far from my home.",
            "Is express delivery to {city} available for the {product}?",
            "The delivery driver called at {time} but I was at work.",
            "Order {order} shows shipped, but {courier} says they never received it.",
            "The package went to {city} instead of my address in {city2}.",
            "I chose next-day delivery and it took {days} days.",
            "Could you ask {courier} to hold the parcel until {weekday}?",
            "The shipping label has the wrong name on it.",
            "Tracking shows the package stuck at the {city} sorting center.",
        ),
        "account": (
            "I cannot log in to my account since {date}.",
            "The verification code never arrives on my phone.",
            "I forgot my password and the reset link has expired.",
            "Someone changed the email on my account without my permission.",
            "My account was locked after {n} failed login attempts.",
            "I want to merge my two accounts into one.",
            "How do I close my account and remove all my data?",
            "The sign in page keeps asking for my password again.",
            "I would like to change the username on my account to {username}.",
            "My account shows a membership level lower than it should be.",
            "Two-step login is on, but I lost the phone that gets the codes.",
            "The password reset email goes to an address I no longer use.",
            "My son created an account with my details; please close it.",
            "After I changed my password on {date}, the {app} logs me out every hour.",
            "Your system says my account does not exist, but I have used it for {years} years.",
            "Scanning the QR code to sign in fails on my new phone.",
        ),
        "technical": (
            "The {product} shows error {errcode} every time I turn it on.",
            "The {app} crashes as soon as I open the settings page.",
            "Since the update to version {version}, the {product} is not working with my {os} "
            "phone.",
            "The screen freezes after about {n} minutes of use.",
            "There seems to be a bug: the timer resets itself at {time}.",
            "The {product} keeps restarting by itself, even when idle.",
            "Bluetooth pairing fails with error {errcode} on {os}.",
            "The firmware update to {version} stopped at {percent}% with an error.",
            "The battery drops from full to {percent}% in an hour; it looks like a bug.",
            "The {app} freezes on the loading screen.",
            "The touch buttons on the {product} are not working after the last update.",
            "I reinstalled the {app} twice and it still crashes on {os}.",
            "The {product} makes a clicking noise and then shows error {errcode}.",
            "Wi-Fi setup fails at the last step with error {errcode}.",
            "Syncing with the {app} is not working since {date}.",
            "The display flickers and then the whole device freezes.",
        ),
        "refund": (
            "I would like a refund for order {order}.",
            "I sent the {product} back on {date}, and the refund has still not arrived.",
            "Please refund the {amount} to my original {payment}.",
            "The refund for {order} was approved {days} days ago but I see nothing yet.",
            "I want my money back; the {product} is not as described.",
            "Your agent {agent} promised a full refund of {amount}.",
            "How long does a refund to {payment} usually take?",
            "I only got a partial refund of {amount} instead of {amount2}.",
            "Can I get a refund if the box is already opened?",
            "The refund request for order {order} was rejected without a reason.",
            "I would prefer a refund over a replacement this time.",
            "Please confirm when my money back request for the {product} is processed.",
            "Is there a restocking fee taken out of the refund?",
            "The refund went to an old card I no longer have.",
            "I was told to expect my money back within {days} working days.",
            "Can you reimburse the {amount} I spent on a repair shop?",
        ),
        "other": (
            "Do you have a physical store in {city}?",
            "What are your customer service hours on {weekday}?",
            "I just want to say that the {product} is excellent.",
            "Will the {product} be available in {color} later this year?",
            "Can you recommend a {product} for a small apartment?",
            "Is there a student discount for the {plan}?",
            "I have a suggestion: please add a dark mode to the {app}.",
            "Our company, {company}, is interested in a partnership.",
            "Where can I find the user manual for the {model}?",
            "Does the {product} come with a warranty card in English?",
            "Are you hiring part-time staff in {city}?",
            "My compliments to {agent}, who was very helpful last time.",
            "Is the {product} compatible with the {product2}?", "When is the next {event} sale?",
            "Could you tell me which materials the {product} is made of?",
            "Do you run workshops for new users in {city}?",
        ),
    },
    "zh": {
        "billing": (
            "订单{order}被重复扣款了{amount}。",
            "订单{order}的发票金额是{amount}，可页面上标的是{amount2}。",
            "我的{plan}在{date}自动续费扣费了，事先没有任何提醒。",
            "麻烦开一张增值税专用发票，抬头是{company}。",
            "账单里有一笔{amount}的费用我完全不认识。",
            "报销需要{product}的电子发票，请尽快开具。",
            "我用{payment}付款成功了，订单{order}却一直显示未付款。",
            "账单页面多了一笔{amount}的服务费。", "发票{invoice_no}上的税号写错了，请更正。",
            "我只买了一件，却按{qty}件扣费。", "优惠码{coupon}没有生效，直接扣款{amount}。",
            "为什么这个月账单从{amount}涨到了{amount2}？",
            "用{payment}付款连续失败三次，银行却显示冻结了一笔钱。",
            "财务要求{date}之前把发票开给{company}。", "我{date}改成了按年付款，账单还是按月出。",
            "订单{order}的发票能不能拆成两张？", "找不到{plan}的发票下载入口。",
        ),
        "shipping": (
            "订单{order}已经{days}天了，包裹还没到。",
            "快递单号{tracking}从{date}开始就没有更新过。",
            "{courier}显示已签收，但我根本没收到包裹。",
            "说好{date}前配送到{city}，现在还在路上。",
            "包裹到的时候箱子压坏了，{product}也有划痕。",
            "能不能把配送地址改成我在{city}的公司？",
            "客服说{date}已经发货了，物流信息却只显示已揽件。",
            "包裹里只有{qty}件，其余的都没有。", "快递员把包裹放到了离我家很远的驿站。",
            "{product}能加急配送到{city}吗？", "配送员{time}打电话的时候我在上班。",
            "订单{order}显示已发货，但{courier}说没收到货。",
            "包裹被送到了{city}，我的地址明明在{city2}。", "我选了次日达，结果物流走了{days}天。",
            "能不能让{courier}把包裹留到{weekday}？", "快递面单上的名字写错了。",
            "物流显示包裹一直卡在{city}转运中心。",
        ),
        "account": (
            "从{date}开始我就登录不了账号了。", "手机一直收不到验证码。",
            "忘记密码了，重置链接也过期了。", "有人在我不知情的情况下改了账号绑定的邮箱。",
            "密码输错{n}次以后账号被锁了。", "我有两个账号，想合并成一个。",
            "怎么注销账号并删除所有数据？", "登录页面一直反复让我输入密码。",
            "想把账号的用户名改成{username}。", "账号显示的会员等级比实际低。",
            "开了两步验证，但是接收验证码的手机丢了。", "重置密码的邮件发到了我不用的旧邮箱。",
            "孩子用我的信息注册了账号，请帮忙关闭。",
            "{date}改完密码后，{app}每小时都要重新登录。",
            "系统说我的账号不存在，可我已经用了{years}年了。", "换了新手机以后扫码登录一直失败。",
        ),
        "technical": (
            "{product}每次开机都报错{errcode}。", "{app}一打开设置页面就闪退。",
            "升级到{version}版本以后，{product}无法连接我的{os}手机。",
            "用了大约{n}分钟屏幕就卡死，只能强制重启，感觉是系统故障。",
            "定时功能有问题，每到{time}就自动重置，应该是软件故障。",
            "{product}老是自己重启，放着不用也会崩溃。", "蓝牙配对失败，{os}上报错{errcode}。",
            "固件升级到{version}时卡在{percent}%，然后报错。",
            "电池一小时就从满电掉到{percent}%，是不是软件故障？",
            "{app}一直卡在加载页面，无法进入。", "上次更新后，{product}的触控按键完全无法使用。",
            "{app}重装了两次，在{os}上还是闪退。", "{product}发出咔哒声，然后报错{errcode}。",
            "配网到最后一步失败，提示报错{errcode}。", "从{date}起{app}就无法同步数据了。",
            "屏幕闪烁几下之后整机崩溃。",
        ),
        "refund": (
            "订单{order}申请退款。", "我{date}已经寄回了{product}，退款还没到账。",
            "请把{amount}退款退回到原来的{payment}。",
            "订单{order}的退款{days}天前就审核通过了，可我一直没收到。",
            "{product}和描述的不一样，我要退货退款。", "你们客服{agent}答应全额退款{amount}。",
            "退款到{payment}一般要多久？", "只退了{amount}，应该退{amount2}才对。",
            "包装已经拆开了还能退货吗？", "订单{order}的退款申请被驳回了，也没说原因。",
            "这次我不想换货，想直接退款。", "{product}的退货申请麻烦尽快处理。",
            "退货会扣手续费吗？", "退款退到了一张我已经注销的银行卡上。",
            "客服说{days}个工作日内退钱，现在已经超时了。", "自己找维修店花的{amount}能退钱吗？",
        ),
        "other": (
            "请问你们在{city}有线下门店吗？", "{weekday}的客服工作时间是几点到几点？",
            "想说一下，{product}真的很好用。", "{product}今年会出{color}吗？",
            "小户型适合用哪款{product}？", "{plan}有学生优惠吗？",
            "有个建议：{app}能不能加一个深色模式？", "我们公司{company}想和你们谈合作。",
            "{model}的说明书在哪里可以找到？", "{product}的保修卡有英文版吗？",
            "你们在{city}招兼职吗？", "上次{agent}服务特别好，想表扬一下。",
            "{product}和{product2}能一起用吗？", "下一次{event}活动是什么时候？",
            "{product}是什么材质做的？", "你们在{city}有没有新用户培训课？",
        ),
    },
}
# fmt: on

# Support replies and follow-ups for conversations; same keyword discipline as tickets.
# fmt: off
_REPLIES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "billing": (
            "I can see the duplicate charge of {amount}; finance will reverse it.",
            "A corrected invoice will be emailed to you within {days} business days.",
            "Your billing cycle now starts on {date}.",
            "The payment is confirmed on our side, and order {order} will update shortly.",
            "I have added the tax number to the invoice; please download it again.",
            "The fee of {amount} is the annual billing adjustment for the {plan}.",
            "I have refreshed the invoice for order {order}; the new total is {amount}.",
            "The hold of {amount} on your card is released automatically within {days} days.",
            "Our records show one payment on {date}, but I will ask finance to double check.",
            "I have turned off auto-renewal for the {plan}, so you will not be charged again.",
            "The billing address on the invoice is now {company}.",
            "A receipt for the {product} is attached to this chat.",
        ),
        "shipping": (
            "The package is with {courier} and should arrive by {date}.",
            "I have opened a tracking inquiry with the courier, reference {ref}.",
            "Delivery has been moved to {weekday}, as you asked.",
            "The parcel was scanned in {city} this morning.",
            "I have arranged a new delivery of the {product} at no cost.",
            "The courier will call you before {time} on the day of delivery.",
            "I can see the parcel left the {city} warehouse on {date}.",
            "Tracking number {tracking} now shows it out for delivery.",
            "I have asked {courier} to deliver again on {weekday} after {time}.",
            "The delivery address for order {order} is now updated to {city}.",
            "A damaged package report is filed under {ref}; a photo of the box would help.",
            "Express shipping to {city} takes about {days} days for the {product}.",
        ),
        "account": (
            "I have sent a password reset link to your registered email.",
            "Your account is unlocked now; please try to log in again.",
            "For security, please confirm the last sign in city on your account.",
            "The verification code can take up to {n} minutes to arrive.",
            "I have merged the two accounts; your history is under {username}.",
            "Please clear the {app} cache and then log in again.",
            "The login lock clears itself after {n} minutes.",
            "I have reset the two-step settings on your account; please set them up again.",
            "Your username is now {username}.",
            "Please try to sign in from the {app} instead of the browser.",
            "I removed the unknown email from your account and sent a new verification code.",
            "Your account closing request {ref} will finish within {days} days.",
        ),
        "technical": (
            "Please hold the power button for {n} seconds; does the error still appear?",
            "We know about a bug in version {version}; a fix ships next week.",
            "Could you tell me the exact error code on the screen?",
            "A factory reset usually stops the crash; your settings will be lost though.",
            "Please update the {app} to {version} and try again; the freezes should stop.",
            "If it is still not working, we can replace the {product} under warranty.",
            "Error {errcode} usually means the firmware did not finish; please update again.",
            "Please send us the logs from the {app} so we can find the bug.",
            "Version {version} fixes the crash on {os}; it rolls out this week.",
            "If the screen still freezes, please try another charger first.",
            "We have a known bug with {os}; a workaround is to turn Bluetooth off and on.",
            "Our engineers reproduced the error and opened ticket {ref}.",
        ),
        "refund": (
            "Your refund of {amount} was issued on {date}; banks take {days} days to post it.",
            "I have approved the refund for order {order}.",
            "The refund goes back to {payment}, usually within {days} working days.",
            "I can reimburse the repair once we receive a photo of the bill.",
            "The rest of your money back, {amount2}, will follow in a separate refund.",
            "Refund request {ref} is now marked as urgent.",
            "The refund of {amount} for the {product} is on its way.",
            "Since the box is opened, the refund will be {amount} after the restocking fee.",
            "I have moved the refund to your {payment} instead of the old card.",
            "Once the warehouse scans the returned item, the refund starts automatically.",
            "Your money back request {ref} was approved by {agent}.",
            "A second refund of {amount2} was sent on {date}.",
        ),
        "other": (
            "Our {city} store opens at 10 am on weekdays.",
            "Thank you for the suggestion; I have passed it to the product team.",
            "The {product} will come in {color} this autumn.",
            "Yes, students get a discount on the {plan} with a valid student card.",
            "The user manual for the {model} is on our website under Support.",
            "I will share your kind words with {agent}.",
            "Yes, the {product} works with the {product2}.",
            "The next {event} sale starts on {date}.",
            "We are not hiring in {city} right now, but please check our careers page.",
            "The {product} is made of recycled aluminum and cotton.",
            "Our partnership team will email {company} within {days} days.",
            "A dark mode for the {app} is planned for version {version}.",
        ),
    },
    "zh": {
        "billing": (
            "看到了重复扣款{amount}，财务会原路冲正。",
            "更正后的发票会在{days}个工作日内发到您的邮箱。", "您的账单周期已改为从{date}开始。",
            "系统已确认付款，订单{order}稍后会更新状态。", "税号已补充到发票上，请重新下载。",
            "{amount}是{plan}的年度账单调整费用。",
            "订单{order}的发票已重新生成，新的金额是{amount}。",
            "卡上冻结的{amount}会在{days}天内自动解冻。",
            "记录显示{date}只有一笔付款，我再请财务核对一下。",
            "{plan}的自动续费已关闭，之后不会再扣费。", "发票抬头已改为{company}。",
            "{product}的付款凭证已发到聊天窗口。",
        ),
        "shipping": (
            "包裹在{courier}手上，预计{date}送达。", "已经向快递公司发起查件，编号{ref}。",
            "已按您的要求把配送改到{weekday}。", "包裹今天早上在{city}扫描过。",
            "已经给您重新安排发货{product}，不收费用。",
            "配送当天{time}之前快递员会先给您打电话。", "包裹{date}已经从{city}仓库发出。",
            "快递单号{tracking}显示正在派送中。",
            "已经让{courier}在{weekday}{time}以后再配送一次。",
            "订单{order}的配送地址已改成{city}。",
            "包裹破损已登记，编号{ref}，麻烦拍一张箱子的照片。",
            "{product}加急配送到{city}大约需要{days}天。",
        ),
        "account": (
            "重置密码的链接已发到您注册的邮箱。", "账号已经解锁，请重新登录试试。",
            "为了安全，请确认一下账号最近一次登录的城市。", "验证码可能要{n}分钟左右才能收到。",
            "两个账号已合并，记录都在{username}下面。", "请清除{app}缓存后再登录。",
            "登录锁定{n}分钟后会自动解除。", "已经重置了账号的两步验证，请重新设置。",
            "您的用户名已经改成{username}，下次登录请用新名字。",
            "请试试用{app}登录，不要用浏览器。", "已移除账号上的陌生邮箱，并重新发送了验证码。",
            "账号注销申请{ref}会在{days}天内完成。",
        ),
        "technical": (
            "请长按电源键{n}秒，看看还报错吗？", "{version}版本有个已知故障，下周会修复。",
            "能告诉我屏幕上具体的报错代码吗？", "恢复出厂设置一般可以解决闪退，不过设置会丢失。",
            "请把{app}升级到{version}再试试，应该就不会崩溃了。",
            "如果还是无法使用，可以在保修期内给您换一台{product}。",
            "报错{errcode}一般是固件没装完，请重新升级。",
            "麻烦把{app}的日志发给我们，方便排查故障。",
            "{version}版本修复了{os}上的闪退，这周推送。",
            "如果屏幕还是卡住无法操作，请先换个充电器试试。",
            "{os}有个已知故障，可以先把蓝牙关掉再打开。", "工程师已经复现了报错，工单号{ref}。",
        ),
        "refund": (
            "{amount}的退款已在{date}发出，银行入账需要{days}天。",
            "订单{order}的退款已经审批通过。",
            "退款会原路退回{payment}，一般{days}个工作日内到账。",
            "收到维修单照片后，维修费可以退钱给您。", "剩下的{amount2}会单独再退款一次。",
            "退款申请{ref}已标记为加急。", "{product}的{amount}退款已经在路上了。",
            "因为包装已拆，扣除手续费后退款{amount}。",
            "退款已改为退到您的{payment}，不走旧卡了。", "仓库签收退回的商品后会自动退款。",
            "退款申请{ref}已经由{agent}审批通过。", "第二笔{amount2}的退款已在{date}发出。",
        ),
        "other": (
            "{city}门店工作日上午10点开门。", "谢谢您的建议，已经转给产品团队了。",
            "{product}今年秋天会出{color}。", "学生凭有效学生证购买{plan}可以打折。",
            "{model}的说明书在官网的服务支持页面。", "会把您的表扬转达给{agent}。",
            "{product}可以和{product2}一起使用。", "下一次{event}活动{date}开始。",
            "{city}暂时没有招聘，可以关注官网招聘页面。", "{product}用的是再生铝和棉质材料。",
            "商务合作团队会在{days}天内联系{company}。",
            "{app}的深色模式计划在{version}版本上线。",
        ),
    },
}
# fmt: on

# fmt: off
_CHAT: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "system": (
            "You are a helpful customer support assistant for {brand}.",
            "You are {agent}, a support agent at {brand}. Be concise and polite.",
            "Answer customer questions politely. Today is {date}.",
            "You work for the {brand} help desk in {city}. Reply in English.",
            "You are a patient assistant. Keep answers short and friendly.",
        ),
        "opener": (
            "Thanks for reaching out, {fname}.", "I'm sorry to hear about this.",
            "Thank you for your patience.", "Let me check that for you.",
            "I understand how annoying this is.", "Happy to help with that.",
            "Thanks for the details.", "Sorry for the trouble, {fname}.", "Got it.",
        ),
        "closer": (
            "Is there anything else I can help with?", "Have a nice day!",
            "Please reply here if the problem continues.",
            "Feel free to message us again any time.",
        ),
        "follow": (
            "Okay, thanks.", "The order number is {order}.", "I already tried that twice.",
            "How long will that take?", "That worked, thank you!", "Still the same problem.",
            "Can you confirm by email?", "Great, appreciate it.", "I am using {os}.",
            "It happened again this morning at {time}.",
            "My {relative} has the same {product}, by the way.",
            "Alright, I will wait until {weekday}.",
            "My member number is {member}, if you need it.", "I tried again at {time}, no luck.",
            "Can you send that to me in writing?", "Is there a phone number I can call instead?",
            "OK, I will check on {weekday} and get back to you.", "The serial number is {serial}.",
            "I bought it at the {store} in {city}.", "That is strange; it worked on {date}.",
        ),
    },
    "zh": {
        "system": (
            "你是{brand}的客服助手，请耐心回答用户问题。",
            "你是{brand}的客服{agent}，回答要简洁礼貌。", "请礼貌地回答用户问题。今天是{date}。",
            "你在{brand}{city}客服中心工作，请用中文回复。", "你是一个耐心的助手，回答简短友好。",
        ),
        "opener": (
            "感谢您的反馈，{fname}。", "很抱歉给您带来不便。", "感谢您的耐心等待。",
            "我帮您查一下。", "理解您的心情。", "很高兴为您服务。", "收到，谢谢您提供的信息。",
            "不好意思让您久等了。", "好的。",
        ),
        "closer": (
            "还有其他可以帮您的吗？", "祝您生活愉快！", "如果问题还在，请直接回复这里。",
            "有问题随时联系我们。",
        ),
        "follow": (
            "好的，谢谢。", "订单号是{order}。", "这个我已经试过两次了。", "大概要多久？",
            "可以了，谢谢！", "还是一样的问题。", "能发邮件确认一下吗？", "太好了，感谢。",
            "我用的是{os}。", "今天早上{time}又出现了。",
            "顺便说一下，我{relative}也有同款{product}。", "行，那我等到{weekday}。",
            "我的会员号是{member}，需要的话可以查。", "我{time}又试了一次，还是不行。",
            "能书面发给我吗？", "有没有电话可以直接打？", "好，我{weekday}再看看，回头联系你们。",
            "序列号是{serial}。", "是在{city}的{store}买的。", "奇怪，{date}的时候还是好的。",
        ),
    },
}
# fmt: on

# --------------------------------------------------------------------------- PII and decoys

# fmt: off
_PII_SENTENCES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "email": (
            "You can reach me at {v}.", "My email is {v}, please reply there.",
            "Please send the confirmation to {v}.", "Contact: {v}",
        ),
        "phone": (
            "My phone number is {v}.", "Call me on {v} after 6 pm.", "Mobile: {v}",
            "You can text me at {v} any time.",
        ),
        "cn_id": ("My ID number is {v}.", "For verification, my resident ID is {v}.", "ID: {v}"),
        "bank_card": (
            "The card I used was {v}.", "Card number {v}, in case you need it.",
            "I paid with card {v}.",
        ),
        "ip": (
            "My IP address is {v} if that helps.", "The router shows {v} as the address.",
            "Your logs should show requests from {v}.",
        ),
    },
    "zh": {
        "email": ("我的邮箱是{v}，有结果请发邮件。", "联系邮箱：{v}。", "请把确认信发到 {v} 。"),
        "phone": (
            "我的手机号是{v}，请联系我。", "电话：{v}；", "有事打我电话 {v} 。",
            "联系方式{v}（晚上六点后）",
        ),
        "cn_id": ("我的身份证号是{v}。", "实名信息：身份证 {v}。", "身份证号码{v}，请核对。"),
        "bank_card": ("我用的卡号是{v}。", "银行卡 {v} ，以防你们需要。", "卡号：{v}。"),
        "ip": (
            "我这边的IP是{v}。", "路由器显示的地址是 {v} 。", "日志里应该能看到来自{v}的请求。",
        ),
    },
}
# fmt: on

# (type, format): the PII rows cycle through these, so every one appears in a large enough sample.
# fmt: off
_PII_FORMATS: tuple[tuple[str, str], ...] = (
    ("email", "email"), ("phone", "cn_mobile"), ("phone", "cn_mobile_+86"), ("phone", "intl"),
    ("cn_id", "cn_id"), ("bank_card", "16"), ("bank_card", "16_grouped"), ("bank_card", "19"),
    ("bank_card", "19_grouped"), ("ipv4", "ipv4"), ("ipv6", "ipv6"),
)
# fmt: on
# fmt: off
_DECOY_FORMATS: tuple[tuple[str, str], ...] = (
    ("cn_id", "cn_id"), ("bank_card", "16"), ("bank_card", "16_grouped"), ("bank_card", "19"),
)
# fmt: on
# fmt: off
_CN_REGIONS = (
    "110101", "110105", "310104", "310115", "440305", "440106", "330106", "510107", "420111",
    "320102", "370202", "500103", "350203", "610113", "120101", "430104",
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_MOBILE_PREFIXES = (
    "130", "131", "132", "133", "135", "136", "138", "139", "150", "151", "152", "155", "158",
    "159", "166", "177", "180", "181", "186", "187", "188", "189", "191", "199",
)
_INTL_PHONES = (
    ("1", (3, 3, 4)),
    ("44", (2, 4, 4)),
    ("65", (4, 4)),
    ("852", (4, 4)),
    ("81", (1, 4, 4)),
    ("49", (2, 8)),
    ("61", (1, 4, 4)),
    ("33", (1, 2, 2, 2, 2)),
)
_CARD_PREFIXES = {16: ("622202", "622848", "621700", "4", "51", "55"), 19: ("621226", "622588")}
_MAIL_DOMAINS = (
    "qq.com", "163.com", "gmail.com", "outlook.com", "example.com", "126.com", "foxmail.com",
    "yahoo.co.jp", "mail.example.org",
)
# fmt: on


def cn_id_ok(value: str) -> bool:
    """Whether ``value`` is an 18-char CN resident ID with a valid date and MOD 11-2 check char."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == value[17].upper()


def bank_card_ok(value: str) -> bool:
    """Whether the digits of ``value`` (spaces and dashes ignored) pass the Luhn check."""
    digits = value.replace(" ", "").replace("-", "")
    if not digits.isdigit():
        return False
    return _luhn_sum(digits) % 10 == 0


def _luhn_sum(digits: str) -> int:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total


def _luhn_digit(payload: str) -> str:
    return str(-_luhn_sum(payload + "0") % 10)


def _cn_id(rng: random.Random) -> str:
    # Kept off the Luhn-valid set so a 13-19 digit card detector never reports an ID as a card.
    while True:
        born = date(1955, 1, 1) + timedelta(days=rng.randrange(18_600))
        body = f"{_one(rng, _CN_REGIONS)}{born:%Y%m%d}{rng.randrange(1000):03d}"
        total = sum(int(d) * w for d, w in zip(body, _ID_WEIGHTS, strict=True))
        value = body + _ID_CHECK[total % 11]
        if not bank_card_ok(value):
            return value


def _card_digits(rng: random.Random, length: int) -> str:
    prefix = _one(rng, _CARD_PREFIXES[length])
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - 1 - len(prefix)))
    return body + _luhn_digit(body)


def _grouped(digits: str) -> str:
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def _phone(rng: random.Random, fmt: str) -> str:
    number = _one(rng, _MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
    if fmt == "cn_mobile":
        return number
    if fmt == "cn_mobile_+86":
        style = rng.randrange(3)
        if style == 0:
            return f"+86 {number}"
        if style == 1:
            return f"+86{number}"
        return f"+86-{number[:3]}-{number[3:7]}-{number[7:]}"
    code, groups = _one(rng, _INTL_PHONES)
    parts = [str(_int(rng, 10 ** (g - 1), 10**g - 1)) for g in groups]
    return f"+{code} " + " ".join(parts)


def _email(rng: random.Random) -> str:
    name = _one(rng, _FIRST_EN).lower()
    sep = _one(rng, (".", "_", ""))
    user = f"{name}{sep}{_one(rng, _LAST_EN).lower()}{_int(rng, 1, 999)}"
    return f"{user}@{_one(rng, _MAIL_DOMAINS)}"


def _ipv4(rng: random.Random) -> str:
    first = _one(rng, (8, 23, 36, 58, 61, 101, 112, 113, 114, 116, 120, 180, 183, 203, 218, 222))
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{_int(rng, 1, 254)}"


def _ipv6(rng: random.Random) -> str:
    groups = [f"{rng.getrandbits(16):x}" for _ in range(8)]
    groups[0] = _one(rng, ("2001", "2400", "2408", "240e", "2a02", "fe80"))
    if rng.random() < 0.5:
        start = _int(rng, 2, 5)
        return ":".join(groups[:start]) + "::" + ":".join(groups[start + 2 :])
    return ":".join(groups)


def _pii_value(rng: random.Random, kind: str, fmt: str) -> str:
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


def _decoy_value(rng: random.Random, kind: str, fmt: str) -> tuple[str, str]:
    """A look-alike that fails its checksum, and why."""
    if kind == "cn_id":
        good = _cn_id(rng)
        while True:
            bad = good[:17] + _one(rng, [c for c in "0123456789X" if c != good[17]])
            if not bank_card_ok(bad):
                return bad, f"MOD 11-2 check char is {bad[17]}, expected {good[17]}"
    digits = _card_digits(rng, int(fmt[:2]))
    bad = digits[:-1] + str((int(digits[-1]) + _int(rng, 1, 9)) % 10)
    value = _grouped(bad) if fmt.endswith("grouped") else bad
    return value, f"Luhn check digit is {bad[-1]}, expected {digits[-1]}"


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


def _contexts(rng: random.Random, lang: str, slots: _Slots, count: int) -> list[str]:
    """``count`` sentences saying when who did what, each about something different."""
    pools, out = _pools(lang), []
    for did in _sample(rng, pools["did"], count):
        when, who = _one(rng, pools["when"]), _one(rng, pools["who"])
        text = f"{when}{who}{did}。" if lang == "zh" else f"{when}, {who} {did}."
        out.append(text.format_map(slots))
    return out


def _sentence(rng: random.Random, template: str, lang: str, slots: _Slots) -> str:
    """A core sentence, half the time with a trailing circumstance, so shared templates differ."""
    end = "。" if lang == "zh" else "."
    if rng.random() < 0.5 and template.endswith(end):
        glue = "，" if lang == "zh" else ", "
        template = template[:-1] + glue + _one(rng, _pools(lang)["circumstance"]) + end
    return template.format_map(slots)


def _ticket_parts(rng: random.Random, category: str, lang: str) -> list[str]:
    """The sentences of one ticket: greeting, body in random order, request, sign-off."""
    pools, slots = _pools(lang), _Slots(rng, lang)
    # A few spare templates in case the first ones make too short a ticket.
    core = _sample(rng, _CORE[lang][category], 6)
    body = [_sentence(rng, core.pop(), lang, slots) for _ in range(_int(rng, 2, 3))]
    for name, chance in (("aside", 0.4), ("urgency", 0.4), ("detail", 0.7)):
        if rng.random() < chance:
            body.append(_one(rng, pools[name]).format_map(slots))
    body = _shuffled(rng, body)
    context = _contexts(rng, lang, slots, 1 if rng.random() < 0.75 else 2)
    body = context + body if rng.random() < 0.7 else body + context
    while sum(map(len, body)) < MIN_TEXT_CHARS and core:
        body.insert(rng.randrange(len(body) + 1), _sentence(rng, core.pop(), lang, slots))
    head = [_one(rng, pools["greeting"]).format_map(slots)] if rng.random() < 0.7 else []
    tail = [_one(rng, pools["request"]).format_map(slots)] if rng.random() < 0.85 else []
    if rng.random() < 0.6:
        tail.append(_one(rng, pools["closing"]).format_map(slots))
    return head + body + tail


def _join(rng: random.Random, parts: Sequence[str], lang: str) -> str:
    sep = "" if lang == "zh" else " "
    if rng.random() < 0.25:
        sep = "\n"
    return sep.join(parts)


def _join_plain(parts: Sequence[str], lang: str) -> str:
    return ("" if lang == "zh" else " ").join(parts)


@dataclass
class _Chat:
    """One conversation being written: its slots, and decks so no sentence repeats in it."""

    rng: random.Random
    category: str
    lang: str
    slots: _Slots
    decks: dict[str, list[str]] = field(default_factory=dict)

    def deal(self, name: str, pool: Sequence[str], count: int = 1) -> list[str]:
        """``count`` templates off the ``name`` deck, reshuffling ``pool`` when it runs out."""
        deck, out = self.decks.setdefault(name, []), []
        for _ in range(count):
            if not deck:
                deck.extend(_shuffled(self.rng, pool))
            out.append(deck.pop())
        return out

    def opening(self) -> str:
        rng, lang, pools = self.rng, self.lang, _pools(self.lang)
        parts = [_one(rng, pools["greeting"])] if rng.random() < 0.5 else []
        if rng.random() < 0.6:
            parts += _contexts(rng, lang, self.slots, 1)
        core = self.deal("core", _CORE[lang][self.category], _int(rng, 1, 2))
        parts += [_sentence(rng, t, lang, self.slots) for t in core]
        for name, chance in (("detail", 0.5), ("request", 0.5)):
            if rng.random() < chance:
                parts.append(_one(rng, pools[name]))
        return _join_plain(parts, lang).format_map(self.slots)

    def follow(self) -> str:
        if self.rng.random() < 0.4:
            template = self.deal("core", _CORE[self.lang][self.category])[0]
            return _sentence(self.rng, template, self.lang, self.slots)
        return self.deal("follow", _CHAT[self.lang]["follow"])[0].format_map(self.slots)

    def reply(self) -> str:
        rng, chat = self.rng, _CHAT[self.lang]
        replies = self.deal("reply", _REPLIES[self.lang][self.category], _int(rng, 1, 2))
        parts = [_one(rng, chat["opener"]), *replies]
        if rng.random() < 0.3:
            parts.append(_one(rng, chat["closer"]))
        return _join_plain(parts, self.lang).format_map(self.slots)


def _messages(rng: random.Random, category: str, lang: str, turns: int) -> list[dict[str, str]]:
    """A support chat: optional system prompt, then ``turns`` alternating user/assistant turns."""
    chat = _Chat(rng, category, lang, _Slots(rng, lang))
    messages = []
    if rng.random() < 0.6:
        system = _one(rng, _CHAT[lang]["system"]).format_map(chat.slots)
        messages.append({"role": "system", "content": system})
    for turn in range(turns):
        content = chat.reply() if turn % 2 else chat.follow() if turn else chat.opening()
        messages.append({"role": "assistant" if turn % 2 else "user", "content": content})
    return messages


# --------------------------------------------------------------------------- noise


# fmt: off
_JUNK: tuple[tuple[str, str], ...] = (
    ("ok", "en"), ("???", "en"), ("test", "en"), ("asdf", "en"), ("...", "en"), ("hi", "en"),
    ("1", "en"), ("lol", "en"), ("no", "en"), ("好的", "zh"), ("嗯嗯", "zh"),
    ("？？？", "zh"), ("谢谢", "zh"), ("。。。", "zh"), ("在", "zh"), ("哈哈", "zh"),
    ("1111", "zh"),
)
_SPAM: tuple[tuple[str, str], ...] = (
    ("buy now", "en"), ("cheap watches", "en"), ("click here", "en"), ("limited offer", "en"),
    ("free gift", "en"), ("earn money fast", "en"), ("加微信领红包", "zh"), ("免费领取", "zh"),
    ("点击链接", "zh"), ("低价出售", "zh"), ("代开各类票据", "zh"),
)
# fmt: on
_CONTROL_CHARS = tuple(chr(c) for c in range(0x00, 0x09))
_ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\ufeff")


def _junk(index: int) -> tuple[str, str]:
    # Numbered past the first round so junk rows never duplicate each other by accident.
    text, lang = _JUNK[index % len(_JUNK)]
    rounds = index // len(_JUNK)
    return (f"{text} {rounds}" if rounds else text), lang


def _spam(rng: random.Random) -> tuple[str, str]:
    phrase, lang = _one(rng, _SPAM)
    # A per-row code keeps spam rows from being near duplicates of one another.
    unit = f"{phrase} {_code(rng, 6)}"
    return " ".join([unit] * _int(rng, 40, 60)), lang


def _markup(rng: random.Random, parts: list[str]) -> tuple[str, list[str]]:
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
    extra = _one(rng, ("&amp;", "&lt;3", "&quot;", "&#39;"))
    link = f'<a href="https://help.example.com/kb/{_int(rng, 100, 999)}">{extra} more</a>'
    used += [extra, "<a>"]
    return text + " " + link, used


def _fullwidth(rng: random.Random, parts: list[str], lang: str) -> tuple[str, int]:
    """Turn the ASCII letters and digits of one or two sentences into their fullwidth forms."""
    parts = list(parts)
    candidates = [i for i, p in enumerate(parts) if re.search(r"[A-Za-z0-9]", p)]
    if not candidates:
        parts.append(("订单号：" if lang == "zh" else "Order: ") + _order(rng, lang))
        candidates = [len(parts) - 1]
    changed = 0
    for i in rng.sample(candidates, min(2, len(candidates))):
        wide = "".join(_wide(c) for c in parts[i])
        changed += sum(a != b for a, b in zip(parts[i], wide, strict=True))
        parts[i] = wide
    return _join(rng, parts, lang), changed


def _wide(ch: str) -> str:
    if ch == " ":
        return "\u3000"
    return chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch


def _control(rng: random.Random, text: str) -> tuple[str, list[str]]:
    chars = [_one(rng, _CONTROL_CHARS), _one(rng, _ZERO_WIDTH)]
    chars += [_one(rng, _CONTROL_CHARS + _ZERO_WIDTH) for _ in range(_int(rng, 0, 3))]
    for ch in chars:
        at = _int(rng, 1, len(text) - 1)
        text = text[:at] + ch + text[at:]
    return text, [f"U+{ord(c):04X}" for c in chars]


# --------------------------------------------------------------------------- near duplicates

# fmt: off
_PUNCT_SWAP = {
    ".": "!",
    ",": ";",
    "!": ".",
    "?": "!",
    ";": ",",
    "。": "！",
    "，": "、",
    "！": "。",
    "？": "！",
    "；": "，",
    "：": "，",
}
# fmt: on
_FILLERS_EN = ("really ", "actually ", "just ", "honestly ", "basically ", "kindly ")
_FILLERS_ZH = ("其实", "真的", "就是", "那个", "麻烦")
Edit = dict[str, Any]


def _typo(rng: random.Random, text: str, lang: str) -> Edit | None:
    pattern = r"[\u4e00-\u9fff]{2,}" if lang == "zh" else r"[A-Za-z]{4,}"
    words = list(re.finditer(pattern, text))
    if not words:
        return None
    word = _one(rng, words)
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
    at = _one(rng, spots)
    return {"op": "punctuation", "at": at, "before": text[at], "after": _PUNCT_SWAP[text[at]]}


def _filler(rng: random.Random, text: str, lang: str) -> Edit | None:
    if lang == "zh":
        spots = [m.end() for m in re.finditer(r"[，。！？]", text) if m.end() < len(text)]
        word = _one(rng, _FILLERS_ZH)
    else:
        spots = [m.start() for m in re.finditer(r"(?<= )[a-z]", text)]
        word = _one(rng, _FILLERS_EN)
    if not spots:
        return None
    return {"op": "filler", "at": _one(rng, spots), "before": "", "after": word}


def _apply(text: str, edits: Sequence[Edit]) -> str:
    # Right to left, so each edit's position still refers to the original text.
    for edit in sorted(edits, key=lambda e: -int(e["at"])):
        at = int(edit["at"])
        text = text[:at] + str(edit["after"]) + text[at + len(str(edit["before"])) :]
    return text


def _near_copy(
    rng: random.Random, text: str, lang: str, whole: Callable[[str], str] = str
) -> tuple[str, list[Edit], float]:
    """1-3 small edits of ``text`` at separate places, and the Jaccard of ``whole(text)`` (the
    record it sits in) to its edited form; fewer edits when that would fall below the threshold.
    """
    makers = (_typo, _punctuation, _filler)
    for count in range(_int(rng, 1, 3), 0, -1):
        edits: list[Edit] = []
        for make in _sample(rng, makers, count):
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


def _near_entry(edits: list[Edit], score: float) -> Record:
    # A copy whose only edits are punctuation equals its original once punctuation is stripped,
    # so an exact-dedup step that normalizes punctuation away catches it before near dedup does.
    only = all(e["op"] == "punctuation" for e in edits)
    return {"edits": edits, "jaccard": score, "punctuation_only": only}


# Cycled through in order, so even the smallest sample has one of each.
_EXACT_VARIANTS = ("case", "whitespace", "identical", "identical", "identical")


def _exact_variant(rng: random.Random, text: str, index: int) -> tuple[str, str]:
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


# --------------------------------------------------------------------------- planning


def _share(n: int, fraction: float, floor: int) -> int:
    return max(floor, round(n * fraction))


_MALFORMED = ("broken_json", "invalid_utf8", "missing_text", "text_number", "text_list")


def _ticket_quotas(n: int) -> dict[str, int]:
    malformed = _share(n, 0.005, len(_MALFORMED) + 1)
    quotas = {
        "exact": _share(n, 0.03, 3),
        "near": _share(n, 0.03, 3),
        "pii": _share(n, 0.05, len(_PII_FORMATS)),
        "decoy": _share(n, 0.01, 2),
        "markup": _share(n, 0.02, 2),
        "fullwidth": _share(n, 0.01, 1),
        "control": _share(n, 0.01, 1),
        "junk": _share(n, 0.005, 1),
        "spam": _share(n, 0.005, 1),
        "malformed:oversized": 1,
    }
    for i in range(malformed - 1):
        kind = f"malformed:{_MALFORMED[i % len(_MALFORMED)]}"
        quotas[kind] = quotas.get(kind, 0) + 1
    return quotas


def _conversation_quotas(n: int) -> dict[str, int]:
    return {
        "exact": _share(n, 0.03, 2),
        "near": _share(n, 0.03, 2),
        "pii": _share(n, 0.05, 4),
        "decoy": _share(n, 0.01, 1),
        "issue:empty_turn": _share(n, 0.005, 1),
        "issue:role_alternation": _share(n, 0.005, 1),
        "issue:missing_content": _share(n, 0.005, 1),
        "issue:long": 1,
    }


def _roles(rng: random.Random, n: int, quotas: dict[str, int], head: int = 10) -> list[str]:
    """One role per line; the first ``head`` lines are plain, so readers sniff a clean start."""
    planted = [role for role, count in quotas.items() for _ in range(count)]
    tail = planted + ["base"] * (n - head - len(planted))
    rng.shuffle(tail)
    return ["base"] * head + tail


class _Originals:
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


def _new_key(rows: int, seed: int, conversations: int) -> Key:
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


# --------------------------------------------------------------------------- tickets


_PRIORITIES = ("low", "normal", "normal", "normal", "high", "urgent")
_EPOCH = datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=8)))


def _created(rng: random.Random) -> str:
    return (_EPOCH + timedelta(seconds=_int(rng, 0, 700 * 86_400 - 1))).isoformat()


def _next(counters: dict[str, int], name: str) -> int:
    """How many ``name`` rows came before this one (formats cycle on it)."""
    counters[name] = counters.get(name, 0) + 1
    return counters[name] - 1


def _category(rng: random.Random) -> str:
    return rng.choices(CATEGORIES, _CATEGORY_WEIGHTS)[0]


def _lang(rng: random.Random) -> str:
    return "zh" if rng.random() < 0.5 else "en"


@dataclass
class _Tickets:
    """Writes ticket lines in order and notes every planted thing in the answer key."""

    rng: random.Random
    key: Key
    originals: _Originals
    counters: dict[str, int] = field(default_factory=dict)

    def line(self, number: int, role: str) -> tuple[bytes, Record | None]:
        """The bytes of line ``number`` (1-based) and its record, None when it is not JSON."""
        row_id = f"T{number:06d}"
        if role.startswith("malformed:"):
            return self._malformed(number, row_id, role.split(":", 1)[1])
        text, category, lang = self._text(number, row_id, role)
        self.key["categories"]["tickets"][category] += 1
        record = self._record(row_id, text, category, lang)
        return _dump(record), record

    def _record(self, row_id: str, text: Any, category: str, lang: str) -> Record:
        return {
            "id": row_id,
            "text": text,
            "category": category,
            "lang": lang,
            "created": _created(self.rng),
            "priority": _one(self.rng, _PRIORITIES),
        }

    def _text(self, number: int, row_id: str, role: str) -> tuple[str, str, str]:
        rng, where = self.rng, {"dataset": "tickets", "id": row_id, "line": number}
        if role in ("exact", "near") and (original := self.originals.take()):
            return self._copy(where, role, original)
        if role == "junk":
            text, lang = _junk(_next(self.counters, "junk"))
            self.key["noise"]["junk"].append(where)
            return text, "other", lang
        if role == "spam":
            text, lang = _spam(rng)
            self.key["noise"]["spam"].append(where)
            return text, "other", lang
        category, lang = _category(rng), _lang(rng)
        parts = _ticket_parts(rng, category, lang)
        text = self._dress(where, role, parts, lang)
        if role not in ("pii", "decoy", "markup", "fullwidth", "control"):
            self.originals.offer(row_id, text, category, lang)
        return text, category, lang

    def _copy(
        self, where: Record, role: str, original: tuple[str, Any, str, str]
    ) -> tuple[str, str, str]:
        source, text, category, lang = original
        if role == "exact":
            copy, variant = _exact_variant(self.rng, text, _next(self.counters, "exact"))
            self.key["exact_duplicates"].append({**where, "original": source, "variant": variant})
        else:
            copy, edits, score = _near_copy(self.rng, text, lang)
            self.key["near_duplicates"].append(
                {**where, "original": source, **_near_entry(edits, score)}
            )
        return copy, category, lang

    def _dress(self, where: Record, role: str, parts: list[str], lang: str) -> str:
        """Plant this row's PII, decoy or noise into its sentences."""
        rng = self.rng
        if role == "pii":
            parts = _plant_pii(rng, parts, lang, _next(self.counters, "pii"), where, self.key)
        elif role == "decoy":
            parts = _plant_decoy(rng, parts, lang, _next(self.counters, "decoy"), where, self.key)
        elif role == "markup":
            text, used = _markup(rng, parts)
            self.key["noise"]["markup"].append({**where, "markup": used})
            return text
        elif role == "fullwidth":
            text, changed = _fullwidth(rng, parts, lang)
            self.key["noise"]["fullwidth"].append({**where, "chars": changed})
            return text
        text = _join(rng, parts, lang)
        if role == "control":
            text, chars = _control(rng, text)
            self.key["noise"]["control"].append({**where, "chars": chars})
        return text

    def _malformed(self, number: int, row_id: str, kind: str) -> tuple[bytes, Record | None]:
        rng = self.rng
        category, lang = _category(rng), _lang(rng)
        text = _join(rng, _ticket_parts(rng, category, lang), lang)
        record = self._record(row_id, text, category, lang)
        line, detail = _MALFORMERS[kind](rng, record)
        entry = {"dataset": "tickets", "line": number, "id": row_id, "problem": kind}
        self.key["malformed"].append({**entry, "detail": detail, "bytes": len(line) - 1})
        if kind in ("broken_json", "invalid_utf8"):
            return line, None
        return line, json.loads(line)


def _dump(record: Record) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"


def _plant(parts: list[str], rng: random.Random, sentence: str) -> list[str]:
    parts = list(parts)
    parts.insert(_int(rng, 1, len(parts)), sentence)
    return parts


def _plant_pii(
    rng: random.Random, parts: list[str], lang: str, index: int, where: Record, key: Key
) -> list[str]:
    formats = [_PII_FORMATS[index % len(_PII_FORMATS)]]
    if rng.random() < 0.2:
        formats.append(_one(rng, _PII_FORMATS))
    for kind, fmt in formats:
        value = _pii_value(rng, kind, fmt)
        pool = "ip" if kind in ("ipv4", "ipv6") else kind
        sentence = _one(rng, _PII_SENTENCES[lang][pool]).replace("{v}", value)
        parts = _plant(parts, rng, sentence)
        key["pii"].append({**where, "type": kind, "format": fmt, "value": value})
    return parts


def _plant_decoy(
    rng: random.Random, parts: list[str], lang: str, index: int, where: Record, key: Key
) -> list[str]:
    kind, fmt = _DECOY_FORMATS[index % len(_DECOY_FORMATS)]
    value, why = _decoy_value(rng, kind, fmt)
    sentence = _one(rng, _PII_SENTENCES[lang][kind]).replace("{v}", value)
    key["decoys"].append({**where, "type": kind, "format": fmt, "value": value, "why": why})
    return _plant(parts, rng, sentence)


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
    raw, what = _one(
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
        return _dump(record), "no text field (the text is under body)"
    return _dump(record), "no text field"


def _text_number(rng: random.Random, record: Record) -> tuple[bytes, str]:
    record["text"] = _one(rng, (_int(rng, 1, 99_999), round(rng.uniform(0, 1000), 2)))
    return _dump(record), "text is a number"


def _text_list(rng: random.Random, record: Record) -> tuple[bytes, str]:
    text = str(record["text"])
    record["text"] = [text[: len(text) // 2], text[len(text) // 2 :]]
    return _dump(record), "text is a list"


def _oversized(rng: random.Random, record: Record) -> tuple[bytes, str]:
    unit = str(record["text"]) + "\n"
    repeat = OVERSIZED_BYTES // len(unit.encode("utf-8")) + 2
    record["text"] = unit * repeat
    line = _dump(record)
    return line, f"record is {len(line) - 1} bytes (limit {OVERSIZED_BYTES})"


_MALFORMERS: dict[str, Callable[[random.Random, Record], tuple[bytes, str]]] = {
    "broken_json": _broken_json,
    "invalid_utf8": _invalid_utf8,
    "missing_text": _missing_text,
    "text_number": _text_number,
    "text_list": _text_list,
    "oversized": _oversized,
}


def _ticket_lines(rng: random.Random, rows: int, key: Key) -> Iterator[tuple[bytes, Record | None]]:
    roles = _roles(rng, rows, _ticket_quotas(rows))
    writer = _Tickets(rng, key, _Originals(random.Random(rng.getrandbits(64))))
    for number, role in enumerate(roles, start=1):
        yield writer.line(number, role)


# --------------------------------------------------------------------------- conversations


@dataclass
class _Conversations:
    """Writes conversation lines in order and notes planted copies, PII and defects."""

    rng: random.Random
    key: Key
    originals: _Originals
    counters: dict[str, int] = field(default_factory=dict)

    def line(self, number: int, role: str) -> bytes:
        row_id = f"C{number:06d}"
        where = {"dataset": "conversations", "id": row_id, "line": number}
        if role in ("exact", "near") and (original := self.originals.take()):
            messages, category = self._copy(where, role, original)
        else:
            category, lang = _category(self.rng), _lang(self.rng)
            messages = self._fresh(where, role, category, lang)
        self.key["categories"]["conversations"][category] += 1
        return _dump({"id": row_id, "messages": messages, "category": category})

    def _fresh(self, where: Record, role: str, category: str, lang: str) -> list[dict[str, str]]:
        rng = self.rng
        turns = 40 if role == "issue:long" else _one(rng, (2, 2, 4, 4, 6, 8))
        messages = _messages(rng, category, lang, turns)
        first = next(i for i, m in enumerate(messages) if m["role"] == "user")
        if role in ("pii", "decoy"):
            plant = _plant_pii if role == "pii" else _plant_decoy
            index = _next(self.counters, role)
            parts = plant(rng, [messages[first]["content"]], lang, index, where, self.key)
            messages[first]["content"] = _join_plain(parts, lang)
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
            messages[turn]["content"] = _one(rng, ("", " ", "\n"))
        elif problem == "role_alternation":
            turn = first + 1
            follow = _one(rng, _CHAT[lang]["follow"]).format_map(_Slots(rng, lang))
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
        messages[turn]["content"], edits, score = _near_copy(self.rng, content, lang, whole)
        self.key["near_duplicates"].append(
            {**where, "original": source, "message": turn, **_near_entry(edits, score)}
        )
        return messages, category


def _chat_text(messages: list[dict[str, str]]) -> str:
    """What near-duplicate scores compare: the contents joined by newlines."""
    return "\n".join(m["content"] for m in messages)


def _conversation_lines(rng: random.Random, count: int, key: Key) -> Iterator[bytes]:
    roles = _roles(rng, count, _conversation_quotas(count), head=5)
    writer = _Conversations(rng, key, _Originals(random.Random(rng.getrandbits(64))))
    for number, role in enumerate(roles, start=1):
        yield writer.line(number, role)


# --------------------------------------------------------------------------- sensors

_SENSOR_START = datetime(2024, 3, 1, tzinfo=UTC)
_SENSOR_COLUMNS = ("timestamp", "temperature", "pressure")
# Neither is a token pandas reads as NA, so a reader must report them rather than skip them.
_BAD_NUMBERS = ("ERR", "#VALUE!", "12..5", "sensor offline")
_BAD_TIMES = ("2024-03-01T25:61:00Z", "2024-02-30T10:00:00Z", "not-a-time", "01/03/2024 9h")


def _sensor_rows(rng: random.Random, n: int, key: Key) -> list[list[str]]:
    """The CSV cells: a slow wave plus noise, then planted gaps, spikes and unparseable cells."""
    rows = []
    for i in range(n):
        stamp = (_SENSOR_START + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        temperature = 21.5 + 2.5 * math.sin(2 * math.pi * i / 240) + rng.gauss(0, 0.15)
        pressure = 1012.8 + 1.2 * math.sin(2 * math.pi * i / 360 + 1) + rng.gauss(0, 0.1)
        rows.append([stamp, f"{temperature:.2f}", f"{pressure:.1f}"])
    missing, spikes = max(4, n * 3 // 100), max(3, n // 100)
    # Distinct rows away from the edges, so no cell carries two planted problems.
    picked = rng.sample(range(5, n - 1), missing + spikes + 2)
    key["sensors"] = {
        "rows": n,
        "columns": list(_SENSOR_COLUMNS),
        "interval_s": 60,
        "missing": _gaps(rng, rows, sorted(picked[:missing])),
        "outliers": [_spike(rng, rows, row) for row in sorted(picked[missing:-2])],
        "unparseable": _bad_cells(rng, rows, picked[-2], picked[-1]),
    }
    return rows


def _cell(row: int, column: str, value: str | None = None) -> Record:
    where: Record = {"row": row, "line": row + 2, "column": column}
    return where if value is None else {**where, "value": value}


def _gaps(rng: random.Random, rows: list[list[str]], picked: list[int]) -> list[Record]:
    """Empty cells; the first picked row loses both readings."""
    out = []
    for row in picked:
        both = row == picked[0]
        for column in _SENSOR_COLUMNS[1:] if both else [_one(rng, _SENSOR_COLUMNS[1:])]:
            rows[row][_SENSOR_COLUMNS.index(column)] = ""
            out.append(_cell(row, column))
    return out


def _spike(rng: random.Random, rows: list[list[str]], row: int) -> Record:
    column = _one(rng, _SENSOR_COLUMNS[1:])
    index = _SENSOR_COLUMNS.index(column)
    jump = rng.uniform(25, 40) if index == 1 else rng.uniform(80, 150)
    value = float(rows[row][index]) + _one(rng, (-1, 1)) * jump
    rows[row][index] = f"{value:.{2 if index == 1 else 1}f}"
    return _cell(row, column, rows[row][index])


def _bad_cells(rng: random.Random, rows: list[list[str]], number: int, stamp: int) -> list[Record]:
    """One unparseable reading at row ``number`` and one broken timestamp at row ``stamp``."""
    column = _one(rng, _SENSOR_COLUMNS[1:])
    rows[number][_SENSOR_COLUMNS.index(column)] = _one(rng, _BAD_NUMBERS)
    rows[stamp][0] = _one(rng, _BAD_TIMES)
    cells = sorted(((number, column), (stamp, "timestamp")))
    return [_cell(r, c, rows[r][_SENSOR_COLUMNS.index(c)]) for r, c in cells]


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SampleFile:
    """One written file: its name, how many records (lines or CSV rows) and bytes, its sha256."""

    name: str
    records: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SampleManifest:
    """What :func:`generate` wrote: the directory, its files, and a tally of planted problems."""

    out: Path
    rows: int
    seed: int
    files: tuple[SampleFile, ...]
    planted: dict[str, int]
    key: Path

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json`` output."""
        return {
            "out": str(self.out),
            "rows": self.rows,
            "seed": self.seed,
            "key": str(self.key),
            "files": [asdict(f) for f in self.files],
            "planted": dict(self.planted),
        }


class _Sink:
    """A binary file being written through a same-directory temp file; tallies lines and bytes."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.lines = 0
        self.size = 0

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.digest.update(data)
        self.lines += 1
        self.size += len(data)


@contextmanager
def _atomic(path: Path) -> Iterator[_Sink]:
    """Stream into a temp file beside ``path``; fsync and rename only when the body succeeds."""
    with atomic_writer(path, buffering=1 << 20) as fh:
        yield _Sink(fh)


def _write(path: Path, lines: Iterator[bytes], records: int | None = None) -> SampleFile:
    with _atomic(path) as sink:
        for line in lines:
            sink.write(line)
    count = sink.lines if records is None else records
    return SampleFile(path.name, count, sink.size, sink.digest.hexdigest())


def _check_rows(rows: int) -> None:
    if rows < MIN_ROWS:
        raise ConfigError(
            f"offline data sample: rows={rows} is too few to plant every kind of problem",
            fix=f"use rows >= {MIN_ROWS} (the default is 2000)",
        )


def _check_args(out: Path, rows: int) -> None:
    _check_rows(rows)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"offline data sample: {out} exists and is not a directory",
            fix="choose a directory (it is created when missing)",
        )


def _seeds(seed: int) -> tuple[int, int, int]:
    # One independent stream per file: the tickets never depend on how conversations are drawn.
    master = random.Random(seed)
    return master.getrandbits(64), master.getrandbits(64), master.getrandbits(64)


def iter_tickets(rows: int = 2000, seed: int = 0) -> Iterator[Record]:
    """Yield the ticket records :func:`generate` writes for these arguments, in file order.

    Lines that are not JSON (broken syntax, invalid UTF-8) are skipped; the other planted rows
    (duplicates, PII, noise, a missing or mistyped ``text``, the oversized record) are included.
    Useful to build an in-memory benchmark corpus without touching the disk.
    """
    _check_rows(rows)
    key = _new_key(rows, seed, 0)
    for _, record in _ticket_lines(random.Random(_seeds(seed)[0]), rows, key):
        if record is not None:
            yield record


def _planted(key: Key) -> dict[str, int]:
    counts = {
        name: len(key[name])
        for name in (
            "exact_duplicates",
            "near_duplicates",
            "pii",
            "decoys",
            "malformed",
            "conversation_issues",
        )
    }
    counts.update({f"noise.{name}": len(rows) for name, rows in key["noise"].items()})
    counts.update(
        {
            f"sensors.{name}": len(key["sensors"][name])
            for name in ("missing", "outliers", "unparseable")
        }
    )
    return counts


def generate(out: Path, rows: int = 2000, seed: int = 0) -> SampleManifest:
    """Write the sample datasets and their answer key into ``out``.

    Args:
        out: Directory to write into; created when missing. Our four file names are replaced
            (atomically, one by one); other files there are left alone.
        rows: Number of lines in ``tickets.jsonl``; ``conversations.jsonl`` gets half as many.
        seed: Seed of every random choice; the same arguments give byte-identical files.

    Returns:
        The files written and a tally of every planted problem (details are in ``SAMPLE.json``).

    Raises:
        ConfigError: ``rows`` is below :data:`MIN_ROWS` or ``out`` is not a directory.
    """
    out = Path(out)
    _check_args(out, rows)
    with disk_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    conversations = max(MIN_ROWS // 2, rows // 2)
    key = _new_key(rows, seed, conversations)
    t_seed, c_seed, s_seed = _seeds(seed)
    tickets = (line for line, _ in _ticket_lines(random.Random(t_seed), rows, key))
    files = [
        _write(out / "tickets.jsonl", tickets),
        _write(
            out / "conversations.jsonl",
            _conversation_lines(random.Random(c_seed), conversations, key),
        ),
    ]
    cells = _sensor_rows(random.Random(s_seed), SENSOR_ROWS, key)
    csv_lines = (
        ",".join(r).encode() + b"\n" for r in [["timestamp", "temperature", "pressure"], *cells]
    )
    files.append(_write(out / "sensors.csv", csv_lines, records=len(cells)))
    key["files"] = {
        f.name: {"records": f.records, "bytes": f.bytes, "sha256": f.sha256} for f in files
    }
    text = json.dumps(key, ensure_ascii=False, indent=1) + "\n"
    with _atomic(out / KEY_FILE) as sink:
        sink.write(text.encode("utf-8"))
    return SampleManifest(out, rows, seed, tuple(files), _planted(key), out / KEY_FILE)
