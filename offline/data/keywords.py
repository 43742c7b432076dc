"""The ticket categories and their bilingual keywords: what the sample tickets are written with
and what ``offline label push --rules`` pre-labels by. Its own module, so that the pre-labelling
rules do not load the whole sample generator."""

from __future__ import annotations

CATEGORIES = ("billing", "shipping", "account", "technical", "refund", "other")

# Lower-case substrings; every sample text of a category holds one of its own and none of the
# others' ("other" is the fallback: no keyword at all).
# fmt: off
CATEGORY_KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "billing": {
        "en": ("invoice", "billing", "billed", "charged", "payment", "receipt"),
        "zh": ("发票", "账单", "扣费", "扣款", "付款"),
    },
    "shipping": {
        "en": (
            "delivery", "delivered", "shipping", "shipped", "package", "parcel", "courier",
            "tracking",
        ),
        "zh": ("快递", "物流", "发货", "包裹", "配送"),
    },
    "account": {
        "en": ("password", "log in", "login", "sign in", "account", "verification code"),
        "zh": ("密码", "登录", "账号", "验证码"),
    },
    "technical": {
        "en": ("error", "crash", "bug", "not working", "freezes", "keeps restarting"),
        "zh": ("报错", "无法", "崩溃", "闪退", "故障"),
    },
    "refund": {"en": ("refund", "money back", "reimburs"), "zh": ("退款", "退货", "退钱")},
    "other": {"en": (), "zh": ()},
}
# fmt: on
