"""The pii step: detection recall and precision per type, mask/pseudonymize, counts, rejects."""

# Chinese text around the values is the point: full-width punctuation is intended.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import random
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offline.data.records import schema_for
from offline.data.steps.base import Context
from offline.data.steps.pii import (
    PiiParams,
    cn_id_valid,
    find_pii,
    luhn_check_digit,
    luhn_valid,
    mask_token,
    pii,
    replace_pii,
)
from offline.errors import ConfigError

KEY = "k3y-for-tests-0123456789abcdef"
OTHER_KEY = "another-key-0123456789abcdefgh"
PROVINCES = (11, 12, 13, 31, 32, 33, 44, 45, 50, 51, 61, 65, 71, 81, 82)


def id_check(first17: str) -> str:
    weights = [2 ** (17 - i) % 11 for i in range(17)]
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, weights, strict=True)) % 11]


def luhn_check(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


def make_ids(rng: random.Random, n: int) -> list[str]:
    ids = []
    start = dt.date(1930, 1, 1).toordinal()
    for _ in range(n):
        birth = dt.date.fromordinal(start + rng.randrange(30_000)).strftime("%Y%m%d")
        first17 = (
            f"{rng.choice(PROVINCES)}{rng.randrange(10_000):04d}{birth}{rng.randrange(1000):03d}"
        )
        ids.append(first17 + id_check(first17))
    return ids


def make_cards(rng: random.Random, n: int) -> list[str]:
    cards: list[str] = []
    while len(cards) < n:
        length = rng.choice((13, 15, 16, 16, 16, 18, 19))
        body = rng.choice("3456") + "".join(rng.choice("0123456789") for _ in range(length - 2))
        card = body + luhn_check(body)
        if not cn_id_valid(card):  # an 18-digit number that is also an ID counts as cn_id
            cards.append(card)
    return cards


def alter_last(rng: random.Random, value: str) -> str:
    """``value`` with its check character replaced so neither ID check nor Luhn passes."""
    options = [c for c in "0123456789" if c != value[-1]]
    rng.shuffle(options)
    for c in options:
        bad = value[:-1] + c
        if not cn_id_valid(bad) and not luhn_valid(bad):
            return bad
    raise AssertionError("no altered form")


def group4(digits: str, sep: str) -> str:
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


def kinds(text: str) -> list[tuple[str, str]]:
    return [(m.type, m.value) for m in find_pii(text)]


def ctx(kind: str = "text") -> Context:
    return Context(workdir=Path("."), dataset="d", kind=kind)


def text_batch(texts: list[str | None]) -> pa.RecordBatch:
    n = len(texts)
    ids = [f"r{i}" for i in range(n)]
    cols = {
        "record_id": ids,
        "dataset": ["d"] * n,
        "source": [f"f:{i}" for i in range(n)],
        "original": ["{}"] * n,
        "id": ids,
        "cluster": ids,
        "meta": [None] * n,
        "text": texts,
        "label": [None] * n,
    }
    schema = schema_for("text")
    return pa.RecordBatch.from_pydict(cols, schema=schema)


def conversation_batch(rows: list[list[dict[str, str]]]) -> pa.RecordBatch:
    n = len(rows)
    ids = [f"r{i}" for i in range(n)]
    cols = {
        "record_id": ids,
        "dataset": ["d"] * n,
        "source": [f"f:{i}" for i in range(n)],
        "original": ["{}"] * n,
        "id": ids,
        "cluster": ids,
        "meta": [None] * n,
        "messages": rows,
        "label": [None] * n,
    }
    return pa.RecordBatch.from_pydict(cols, schema=schema_for("conversation"))


def texts_of(batch: pa.RecordBatch) -> list[str | None]:
    return list(batch.column("text").to_pylist())


# --- checksum types ----------------------------------------------------------------------------


def test_generated_cn_ids_all_found_and_altered_ones_never() -> None:
    rng = random.Random(7)
    ids = make_ids(rng, 400)
    assert all(cn_id_valid(v) for v in ids)
    for value in ids:
        text = f"身份证号：{value}，已登记"
        assert kinds(text) == [("cn_id", value)]
        bad = alter_last(rng, value)
        assert not cn_id_valid(bad)
        assert kinds(f"身份证号：{bad}，已登记") == []


def test_lower_case_x_and_invalid_dates_or_regions() -> None:
    first17 = "11010519491231002"
    assert id_check(first17) == "X"
    assert cn_id_valid(first17 + "x")
    assert kinds(f"证件 {first17}x") == [("cn_id", first17 + "x")]
    feb30 = "11010519490230001"
    assert not cn_id_valid(feb30 + id_check(feb30))
    region0 = "01010519491231002"
    assert not cn_id_valid(region0 + id_check(region0))


def test_generated_cards_found_plain_and_grouped_and_altered_ones_never() -> None:
    rng = random.Random(11)
    cards = make_cards(rng, 400)
    for card in cards:
        assert luhn_valid(card)
        bad = alter_last(rng, card)
        for form, bad_form in (
            (card, bad),
            (group4(card, " "), group4(bad, " ")),
            (group4(card, "-"), group4(bad, "-")),
        ):
            assert kinds(f"卡号{form}，请核对") == [("bank_card", form)], form
            assert kinds(f"卡号{bad_form}，请核对") == [], bad_form


def test_card_and_id_that_coincide_count_as_cn_id() -> None:
    rng = random.Random(3)
    both = next(v for v in make_ids(rng, 2000) if luhn_valid(v))
    assert [m.type for m in find_pii(both)] == ["cn_id"]
    assert [m.type for m in find_pii(both, ["bank_card"])] == ["bank_card"]


def test_digits_inside_longer_runs_or_ids_are_not_pii() -> None:
    card = "4111111111111111"
    for text in (f"9{card}", f"{card}9", f"order{card}", f"{card}abc", f"3.{card}"):
        assert kinds(text) == [], text
    assert kinds("user_13812345678_x") == [("phone", "13812345678")]  # _ separates
    assert kinds("sku13812345678") == []
    assert kinds("1381234567") == []  # 10 digits
    assert kinds("138123456789") == []  # 12 digits


# --- phones, emails, addresses -----------------------------------------------------------------


PHONES = [
    "13812345678",
    "19912345678",
    "138 1234 5678",
    "138-1234-5678",
    "+8613812345678",
    "+86 138 1234 5678",
    "+86-138-1234-5678",
    "008613812345678",
    "0086 13812345678",
    "(+86) 13812345678",
    "+1 (415) 555-2671",
    "+44 20 7946 0958",
    "+49-30-1234567",
    "+33 1 23 45 67 89",
    "+81.3.1234.5678",
]


@pytest.mark.parametrize("phone", PHONES)
def test_phone_numbers_found_whole(phone: str) -> None:
    assert kinds(f"我的手机号是{phone}，请联系") == [("phone", phone)]
    assert kinds(f"call {phone}.") == [("phone", phone)]


@pytest.mark.parametrize(
    "text", ["12812345678", "1381234567", "+1 555", "+12345", "+8613812345678901234", "10%"]
)
def test_not_phone_numbers(text: str) -> None:
    assert [m for m in find_pii(text) if m.type == "phone"] == []


def test_emails() -> None:
    assert kinds("联系 Zhang.San+ml@Mail.Example.com.cn，谢谢") == [
        ("email", "Zhang.San+ml@Mail.Example.com.cn")
    ]
    assert kinds("mail a_b@example.org.") == [("email", "a_b@example.org")]
    assert kinds("13812345678@163.com") == [("email", "13812345678@163.com")]
    assert kinds("@handle, user@localhost, a@b.c, x@@y.com") == []


def test_ipv4_valid_and_invalid() -> None:
    assert kinds("服务器192.168.1.10:8080宕机") == [("ipv4", "192.168.1.10")]
    assert kinds("0.0.0.0 and 255.255.255.255") == [
        ("ipv4", "0.0.0.0"),
        ("ipv4", "255.255.255.255"),
    ]
    for text in ("999.1.1.1", "1.2.3.4.5", "version 1.2.3.4.5", "256.1.1.1", "1.2.3", "v1.2.3.4"):
        assert kinds(text) == [], text
    assert kinds("01.2.3.4") == []  # leading zeros are not an address


IPV6S = [
    "2001:db8::1",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "fe80::1ff:fe23:4567:890a",
    "::ffff:192.168.1.1",
    "2001:DB8::",
]


def test_ipv6_valid_and_invalid() -> None:
    for addr in IPV6S:
        assert kinds(f"地址{addr}，") == [("ipv6", addr)], addr
    for text in (
        "at 12:30",
        "at 12:30:45",
        "00:1a:2b:3c:4d:5e",
        "std::vector",
        "a[1::2]",
        "x ::1 y",
        "2001:db8:::1",
        "1:2:3:4:5:6:7:8:9",
        "2001:db8::g1",
    ):
        assert kinds(text) == [], text


# --- the step: mask ----------------------------------------------------------------------------


def test_mask_replaces_each_type_with_its_token_and_counts_per_type() -> None:
    step = pii(PiiParams(), ctx())
    batch = text_batch(
        [
            "我的手机号是13812345678，邮箱 a@b.com 和 c@d.org",
            "身份证11010519491231002X 卡 4111 1111 1111 1111",
            "from 10.0.0.1 and 2001:db8::1",
            "nothing here 2024-01-01 12:30",
            None,
        ]
    )
    out = step(batch)
    assert texts_of(out.batch) == [
        "我的手机号是[PHONE]，邮箱 [EMAIL] 和 [EMAIL]",
        "身份证[CN_ID] 卡 [BANK_CARD]",
        "from [IPV4] and [IPV6]",
        "nothing here 2024-01-01 12:30",
        None,
    ]
    assert out.counts == {
        "email": 2,
        "cn_id": 1,
        "bank_card": 1,
        "ipv6": 1,
        "ipv4": 1,
        "phone": 1,
    }
    assert out.reasons == [None] * 5
    assert out.batch.schema == batch.schema
    assert out.batch.column("record_id").to_pylist() == batch.column("record_id").to_pylist()


def test_disabled_types_are_left_alone() -> None:
    step = pii(PiiParams(types=["email"]), ctx())
    out = step(text_batch(["a@b.com 13812345678 10.0.0.1"]))
    assert texts_of(out.batch) == ["[EMAIL] 13812345678 10.0.0.1"]
    assert out.counts == {"email": 1}


def test_clean_batch_comes_back_unchanged() -> None:
    step = pii(PiiParams(), ctx())
    batch = text_batch(["plain text", "年份 2023 年, 价格 12.50 元", "1234567"])
    out = step(batch)
    assert out.batch.equals(batch)
    assert out.counts == {}


def test_conversation_contents_masked_and_roles_untouched() -> None:
    step = pii(PiiParams(), ctx("conversation"))
    rows = [
        [
            {"role": "user", "content": "我的邮箱是 a@b.com"},
            {"role": "assistant", "content": "好的"},
        ],
        [{"role": "user", "content": "电话 13812345678"}],
    ]
    out = step(conversation_batch(rows).slice(0, 2))
    assert out.batch.column("messages").to_pylist() == [
        [
            {"role": "user", "content": "我的邮箱是 [EMAIL]"},
            {"role": "assistant", "content": "好的"},
        ],
        [{"role": "user", "content": "电话 [PHONE]"}],
    ]
    assert out.counts == {"email": 1, "phone": 1}


def test_instruction_columns_all_masked() -> None:
    step = pii(PiiParams(), ctx("instruction"))
    cols = {name: ["x"] for name in schema_for("instruction").names}
    cols.update(
        system=["admin a@b.com"], instruction=["ip 10.1.1.1"], response=["call 13812345678"]
    )
    batch = pa.RecordBatch.from_pydict(cols, schema=schema_for("instruction"))
    out = step(batch)
    row = out.batch.to_pylist()[0]
    assert (row["system"], row["instruction"], row["response"]) == (
        "admin [EMAIL]",
        "ip [IPV4]",
        "call [PHONE]",
    )


# --- reject_types ------------------------------------------------------------------------------


def test_reject_types_rejects_rows_and_masks_the_rest() -> None:
    step = pii(PiiParams(reject_types=["cn_id", "bank_card"]), ctx())
    out = step(text_batch(["id 11010519491231002X", "mail a@b.com", "card 4111111111111111"]))
    assert out.reasons == ["contains pii: cn_id", None, "contains pii: bank_card"]
    assert texts_of(out.batch)[1] == "mail [EMAIL]"
    assert out.counts == {"email": 1, "cn_id": 1, "bank_card": 1}


def test_reject_types_in_conversations_points_at_the_right_row() -> None:
    step = pii(PiiParams(reject_types=["phone"]), ctx("conversation"))
    rows = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        [{"role": "user", "content": "a@b.com"}],
        [{"role": "user", "content": "ok"}, {"role": "assistant", "content": "13812345678"}],
    ]
    out = step(conversation_batch(rows).slice(1, 2))
    assert out.reasons == [None, "contains pii: phone"]


# --- pseudonymize ------------------------------------------------------------------------------


def pseudo(monkeypatch: pytest.MonkeyPatch, key: str) -> list[str | None]:
    monkeypatch.setenv("DEEPSEEK_OFFLINE_PII_KEY", key)
    step = pii(PiiParams(action="pseudonymize"), ctx())
    batch = text_batch(
        [
            "a@b.com 13812345678",
            "A@B.COM +86 138-1234-5678",
            "c@d.com 13912345678 11010519491231002X",
        ]
    )
    out = step(batch)
    assert key not in repr(step)
    assert key not in str(out.counts)
    return texts_of(out.batch)


def test_pseudonymize_is_stable_per_value_and_distinct_across_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = pseudo(monkeypatch, KEY)
    again = pseudo(monkeypatch, KEY)
    assert first == again
    row0, row1, row2 = (t.split() if t else [] for t in first)
    assert row0[0].startswith("[EMAIL:") and row0[1].startswith("[PHONE:")
    assert len(row0[0]) == len("[EMAIL:") + 12 + 1
    assert row0 == row1  # same email in another case, same mobile with +86 and hyphens
    assert row2[0] != row0[0] and row2[1] != row0[1]
    assert row2[2].startswith("[CN_ID:")
    assert all(KEY not in (t or "") for t in first)


def test_pseudonymize_tokens_depend_on_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pseudo(monkeypatch, KEY) != pseudo(monkeypatch, OTHER_KEY)


def test_pseudonymize_reads_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_OFFLINE_PII_KEY", raising=False)
    key_file = tmp_path / "pii.key"
    key_file.write_bytes(KEY.encode())
    params = PiiParams(action="pseudonymize", key_file=str(key_file))
    from_file = pii(params, ctx())(text_batch(["a@b.com"]))
    assert KEY not in params.model_dump_json()
    monkeypatch.setenv("DEEPSEEK_OFFLINE_PII_KEY", KEY)
    from_env = pii(PiiParams(action="pseudonymize"), ctx())(text_batch(["a@b.com"]))
    assert texts_of(from_file.batch) == texts_of(from_env.batch)


def test_missing_key_is_a_config_error_with_a_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEEPSEEK_OFFLINE_PII_KEY", raising=False)
    with pytest.raises(ConfigError) as err:
        pii(PiiParams(action="pseudonymize"), ctx())
    assert "DEEPSEEK_OFFLINE_PII_KEY" in str(err.value)
    assert err.value.fix and "head -c 32 /dev/urandom" in err.value.fix
    missing = tmp_path / "nope.key"
    with pytest.raises(ConfigError, match=r"nope\.key"):
        pii(PiiParams(action="pseudonymize", key_file=str(missing)), ctx())
    monkeypatch.setenv("DEEPSEEK_OFFLINE_PII_KEY", "short")
    with pytest.raises(ConfigError) as short:
        pii(PiiParams(action="pseudonymize"), ctx())
    assert "short" not in str(short.value).replace("DEEPSEEK", "")


def test_mask_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_OFFLINE_PII_KEY", raising=False)
    assert texts_of(pii(PiiParams(), ctx())(text_batch(["a@b.com"])).batch) == ["[EMAIL]"]


def test_params_reject_unknown_types() -> None:
    with pytest.raises(ValueError):
        PiiParams.model_validate({"types": ["ssn"]})
    with pytest.raises(ValueError):
        PiiParams.model_validate({"mask": True})


def test_pseudonym_token_is_pinned_hmac_of_type_and_normalized_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tokens must not drift between releases: datasets pseudonymized apart must still join.
    monkeypatch.setenv("DEEPSEEK_OFFLINE_PII_KEY", KEY)
    step = pii(PiiParams(action="pseudonymize"), ctx())
    out = step(text_batch(["Mail A@B.com or 138 1234 5678"]))

    def token(kind: str, value: str) -> str:
        digest = hmac.new(KEY.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
        return f"[{kind.upper()}:{digest[:12]}]"

    expected = f"Mail {token('email', 'a@b.com')} or {token('phone', '+8613812345678')}"
    assert texts_of(out.batch) == [expected]


def test_masking_is_idempotent_and_handles_sliced_and_empty_batches() -> None:
    step = pii(PiiParams(), ctx())
    batch = text_batch(["x", "a@b.com 13812345678", "y 10.0.0.1"]).slice(1, 2)
    once = step(batch)
    assert texts_of(once.batch) == ["[EMAIL] [PHONE]", "y [IPV4]"]
    twice = step(once.batch)
    assert twice.batch.equals(once.batch)
    assert twice.counts == {}
    empty = step(text_batch([]))
    assert empty.batch.num_rows == 0 and empty.reasons == []


def test_batch_prefilter_lets_every_find_through() -> None:
    # The step screens rows with RE2 before the Python patterns; a screen gap would leak PII.
    rng = random.Random(5)
    values = PHONES + IPV6S + ["a@b.com", "10.0.0.1", "11010519491231002X"]
    values += make_ids(rng, 50) + [group4(c, rng.choice(" -")) for c in make_cards(rng, 50)]
    values += make_cards(rng, 50)
    texts = [f"前缀{v}，后缀" for v in values]
    out = pii(PiiParams(), ctx())(text_batch(list(texts)))
    expected = [replace_pii(t, find_pii(t), mask_token) for t in texts]
    assert texts_of(out.batch) == expected
    assert sum(out.counts.values()) == len(values)


@given(st.text("0123456789", min_size=1, max_size=24))
def test_the_luhn_check_digit_is_the_one_digit_that_passes(payload: str) -> None:
    check = luhn_check_digit(payload)
    assert [d for d in "0123456789" if luhn_valid(payload + d)] == [check]
