"""normalize, markup and regex: what each does to text, instruction and conversation batches."""

# Fullwidth and CJK characters are the point of these tests.
# ruff: noqa: RUF001

from __future__ import annotations

import pyarrow as pa
import pytest

from offline.data.records import joined_text, schema_for
from offline.data.steps.text import (
    MarkupParams,
    NormalizeParams,
    RegexParams,
    joined_array,
    markup,
    normalize,
    regex,
)
from offline.errors import ConfigError
from tests.data.batches import ctx, make_batch


def texts(batch: pa.RecordBatch) -> list[str | None]:
    return batch.column("text").to_pylist()


# --------------------------------------------------------------------------------- normalize


def test_normalize_folds_fullwidth_and_removes_invisible_characters() -> None:
    rows = [
        "ＡＢＣ１２３ ｏｒｄｅｒ",
        "pass\u200bword\u200d reset\ufeff \u200eok\u202e\u00ad",
        "bell\x07 and\x1b escape\x85",
    ]
    out = normalize(NormalizeParams(), ctx())(make_batch("text", rows))
    assert texts(out.batch) == ["ABC123 order", "password reset ok", "bell and escape"]
    assert out.reasons == [None, None, None]
    assert out.counts == {"changed": 3}


def test_normalize_leaves_chinese_alone() -> None:
    zh = "订单号还没有发货。请帮我查一下「物流」状态"
    out = normalize(NormalizeParams(), ctx())(make_batch("text", [zh]))
    assert texts(out.batch) == [zh]
    assert out.counts == {"changed": 0}


def test_normalize_tidies_whitespace() -> None:
    raw = "  Hello\t\tworld  \r\n  second   line \r\n\r\n\r\n\r\nthird\u3000\u00a0end  "
    out = normalize(NormalizeParams(), ctx())(make_batch("text", [raw]))
    assert texts(out.batch) == ["Hello world\nsecond line\n\nthird end"]


def test_normalize_switches_turn_steps_off() -> None:
    params = NormalizeParams(form=None, collapse_spaces=False, trim_lines=False)
    out = normalize(params, ctx())(make_batch("text", ["ＡＢＣ  x \n  y"]))
    assert texts(out.batch) == ["ＡＢＣ  x \n  y"]


def test_rows_empty_after_normalization_are_rejected() -> None:
    rows = ["\u200b \u3000 \t", None, "fine", "\n\n"]
    out = normalize(NormalizeParams(), ctx())(make_batch("text", rows))
    assert out.reasons == [
        "empty after normalization",
        "empty after normalization",
        None,
        "empty after normalization",
    ]
    assert out.batch.num_rows == 4
    assert out.batch.schema == schema_for("text")


def test_normalize_instruction_rows_use_every_column() -> None:
    rows = [
        ("ｓｙｓ", "  ask\u200b  ", "ａｎｓｗｅｒ"),
        (None, "", "only a response"),
        (None, "\u200b", " "),
    ]
    out = normalize(NormalizeParams(), ctx("instruction"))(make_batch("instruction", rows))
    assert out.batch.column("system").to_pylist() == ["sys", None, None]
    assert out.batch.column("instruction").to_pylist() == ["ask", "", ""]
    assert out.batch.column("response").to_pylist() == ["answer", "only a response", ""]
    assert out.reasons == [None, None, "empty after normalization"]


def test_normalize_conversation_contents_not_roles() -> None:
    rows = [
        [("user", "ｈｉ\u200b  there"), ("assistant", " 你好！ ")],
        None,
        [("user", "\u200b"), ("assistant", "")],
    ]
    out = normalize(NormalizeParams(), ctx("conversation"))(make_batch("conversation", rows))
    messages = out.batch.column("messages").to_pylist()
    assert messages[0] == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "你好!"},
    ]
    assert messages[1] is None
    assert out.reasons == [None, "empty after normalization", "empty after normalization"]


def test_normalize_handles_sliced_batches() -> None:
    rows = [[("user", "a")], [("user", "ｂ"), ("assistant", "ｃ")], [("user", "ｄ")]]
    sliced = make_batch("conversation", rows).slice(1, 2)
    out = normalize(NormalizeParams(), ctx("conversation"))(sliced)
    assert out.batch.column("messages").to_pylist() == [
        [{"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
        [{"role": "user", "content": "d"}],
    ]
    assert out.counts == {"changed": 2}


# ------------------------------------------------------------------------------------ markup


def test_markup_strips_tags_and_decodes_entities() -> None:
    raw = (
        '<div class="ticket"><p>My order <b>#123</b> is late</p>'
        "<p>Tom &amp; Jerry&nbsp;say &#39;hi&#39; &lt;3</p></div>"
    )
    out = markup(MarkupParams(), ctx())(make_batch("text", [raw]))
    assert texts(out.batch) == ["My order #123 is late\n\nTom & Jerry say 'hi' <3"]
    assert out.counts == {"changed": 1}


@pytest.mark.parametrize(
    "kept",
    [
        "a < b and c > d",
        "x<3 and y>2",
        "List<String> names = new ArrayList<>();",
        "write to <john@example.com> or <https://help.example.com>",
        "replace <username> with your login",
        "AT&T and R&D; 5 > 3",
    ],
)
def test_markup_keeps_text_that_only_looks_like_markup(kept: str) -> None:
    out = markup(MarkupParams(), ctx())(make_batch("text", [kept]))
    assert texts(out.batch) == [kept]
    assert out.counts == {"changed": 0}


def test_markup_drops_script_style_and_comments_with_their_content() -> None:
    raw = (
        "<html><head><style>p { color: red }</style>"
        "<script type='text/javascript'>var x = 1 < 2;</script></head>"
        "<body><!-- tracking pixel -->Refund please<SCRIPT>alert(1)</SCRIPT></body></html>"
    )
    out = markup(MarkupParams(), ctx())(make_batch("text", [raw]))
    assert texts(out.batch) == ["Refund please"]


def test_markup_any_tags_and_markdown_options() -> None:
    raw = "<note><to>Tove</to></note> see ![logo](a.png) and [the docs](http://x/y) **now**"
    default = markup(MarkupParams(), ctx())(make_batch("text", [raw]))
    assert texts(default.batch) == [raw]
    both = markup(MarkupParams(tags="any", markdown=True), ctx())(make_batch("text", [raw]))
    assert texts(both.batch) == ["Tove see logo and the docs now"]


def test_markup_rewrites_message_contents() -> None:
    rows = [[("user", "<p>hi</p>"), ("assistant", "use <code>ls &amp;&amp; pwd</code>")]]
    out = markup(MarkupParams(), ctx("conversation"))(make_batch("conversation", rows))
    assert out.batch.column("messages").to_pylist()[0] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "use ls && pwd"},
    ]


def test_markup_rejects_bad_element_names() -> None:
    with pytest.raises(ValueError, match="drop_elements"):
        MarkupParams(drop_elements=["script|.*"])


# ------------------------------------------------------------------------------------- regex


def test_default_regex_rule_drops_emoji_but_keeps_pii_urls_and_cjk() -> None:
    rows = [
        "great 👍 thanks ✅",
        "mail bob.li+vip@example.com, call +86-138-0013-8000, see https://x.cn/a?b=1#c",
        "价格¥1,299.00（含税）、温度25°C —— 好的！",
        "🔥🔥 sale ⭐️ now",
        "thanks ©2024 Acme 🙏🏻\nbye",
    ]
    out = regex(RegexParams(), ctx())(make_batch("text", rows))
    assert texts(out.batch) == [
        "great thanks",
        rows[1],
        rows[2],
        "sale now",
        "thanks 2024 Acme\nbye",
    ]
    assert out.counts == {"changed": 3}
    assert out.reasons == [None] * 5


def test_bad_regex_is_a_config_error_naming_the_rule() -> None:
    params = RegexParams(rules=[{"pattern": "ok"}, {"pattern": "(unclosed", "replace": ""}])
    with pytest.raises(ConfigError) as err:
        regex(params, ctx())
    assert "regex rule 1" in str(err.value)
    assert "(unclosed" in str(err.value)


def test_bad_replacement_group_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rule 0"):
        regex(RegexParams(rules=[{"pattern": "(a)", "replace": r"\3"}]), ctx())


def test_reject_rules_name_their_reason() -> None:
    params = RegexParams(
        rules=[
            {"pattern": r"(?i)unsubscribe", "action": "reject", "reason": "newsletter"},
            {"pattern": r"\d{16}", "action": "reject"},
        ]
    )
    rows = ["Click to UNSUBSCRIBE", "card 4111111111111111", "a normal ticket"]
    out = regex(params, ctx())(make_batch("text", rows))
    assert out.reasons == ["newsletter", "matches regex rule 1", None]
    assert texts(out.batch) == rows


def test_rules_apply_in_order_and_reject_sees_rewritten_text() -> None:
    params = RegexParams(
        rules=[
            {"pattern": r"(\w+)@(\w+)\.com", "replace": r"\2 user \1"},
            {"pattern": "^acme user", "action": "reject", "reason": "internal"},
        ]
    )
    out = regex(params, ctx())(make_batch("text", ["bob@acme.com", "ann@shop.com"]))
    assert texts(out.batch) == ["acme user bob", "shop user ann"]
    assert out.reasons == ["internal", None]


def test_python_only_patterns_fall_back_to_python_re() -> None:
    params = RegexParams(rules=[{"pattern": r"(?<=order )#(\d+)", "replace": r"No.\1"}])
    out = regex(params, ctx())(make_batch("text", ["order #12 and #13"]))
    assert texts(out.batch) == ["order No.12 and #13"]


def test_reject_rules_test_the_joined_instruction_text() -> None:
    params = RegexParams(rules=[{"pattern": "as an AI", "action": "reject", "reason": "refusal"}])
    rows = [("sys", "question", "Sorry, as an AI I cannot"), (None, "as an", "AI")]
    out = regex(params, ctx("instruction"))(make_batch("instruction", rows))
    assert out.reasons == ["refusal", None]


def test_regex_params_round_trip_as_plain_data() -> None:
    data = RegexParams().model_dump(mode="json")
    assert RegexParams.model_validate(data) == RegexParams()


# ------------------------------------------------------------------------------------ shared


def test_joined_array_matches_joined_text_for_every_kind() -> None:
    batches = [
        make_batch("text", ["a", None, ""]),
        make_batch("instruction", [("s", None, "r"), (None, None, None), ("", "i", None)]),
        make_batch(
            "conversation",
            [[("user", "a"), ("assistant", None), ("user", "b")], None, [], [("user", "")]],
        ),
    ]
    for batch in batches:
        assert joined_array(batch).to_pylist() == joined_text(batch)
        sliced = batch.slice(1)
        assert joined_array(sliced).to_pylist() == joined_text(sliced)
