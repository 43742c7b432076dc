"""length and quality: reasons that name the measure, real tickets kept, spam rejected."""

# Chinese tickets use fullwidth punctuation, as real ones do.
# ruff: noqa: RUF001

from __future__ import annotations

import pytest

from offline.data.steps.quality import LengthParams, QualityParams, length, quality
from tests.data.batches import ctx, make_batch

TICKETS = [
    "Hi, I ordered a laptop (order #A1029-88) on March 3rd and it still hasn't shipped. The "
    "tracking page says 'label created' for a week now. Can you check what is going on and give "
    "me an estimated delivery date? Thanks, Maria",
    "您好，我上周五在官网下单购买了一台空气净化器，订单号是 20240315-7781。到现在还没有发货，"
    "物流信息一直显示“待揽收”。请帮我查一下什么时候能发货，如果一周内还不能发货，我希望申请退款。谢谢！",
    "The VPN client keeps disconnecting every 10 minutes since the update to version 5.2.1. I "
    "already tried reinstalling it and rebooting my machine.\nError shown: 'Connection lost "
    "(code 0x80070005)'.\nOS: Windows 11 Pro 23H2\nPlease advise.",
    "登录的时候一直提示“密码错误”，但是我确定密码是对的，也试过重置密码，重置邮件收不到。"
    "账号是 zhang.wei@example.com，麻烦尽快处理，明天要用系统提交报表。",
    "Hello support team,\n\nI was charged twice for my monthly subscription ($29.99 on 05/01 and "
    "again $29.99 on 05/02). Please refund the duplicate charge to my Visa card ending in 4411."
    "\n\nBest regards,\nTom Becker",
    "打印机无法连接 Wi-Fi。型号：HP LaserJet M428fdw。已经按照说明书重置过网络设置，路由器是 "
    "TP-Link，2.4G 频段。打印测试页显示 IP 地址为 0.0.0.0。请问还需要怎么设置？",
    "Steps to reproduce:\n- open the mobile app (iOS 17.4)\n- go to Settings > Notifications\n"
    "- toggle 'Order updates' off and on again\nExpected: the setting is saved.\nActual: the app "
    "crashes and the toggle is reset. This happens every time on my iPhone 13.",
    "我们公司上个月采购了 50 个企业版授权，但是后台只显示 45 个可用席位。合同编号 HT-2024-0311。"
    "请核实一下是不是开通的时候少开了 5 个，另外发票抬头需要改成“上海星辰科技有限公司”。",
    "Can I change the delivery address for order 5510293? I moved last week and the package is "
    "going to my old apartment. New address: 14 Elm Street, Apt 3B, Springfield. Thank you!",
    "The invoice PDF for April is blank when I download it from the billing portal. I tried "
    "Chrome and Firefox, same result. Could you send it to me by email instead? Account ID: "
    "ACME-00231.",
    "收到的耳机左耳没有声音，右耳正常。已经试过连接两台不同的手机，都是一样的问题。购买不到七天，"
    "申请换货。订单号 88120034519，请告诉我寄回的地址和流程。",
    "Our API integration started returning HTTP 429 'Too Many Requests' this morning, even "
    "though we send fewer than 10 requests per second, well under the documented limit of 50/s. "
    "Request IDs: req_8f2a1c, req_91bb03. Did something change on your side? This is blocking "
    "our checkout flow, so we would appreciate a quick answer.",
    "请问你们的产品支持开具增值税专用发票吗？我们需要报销，公司的税号是 91310115MA1H7XXX，"
    "开户行和账号我可以邮件发过去。另外想确认一下发票一般几个工作日能寄到。",
    "Hi there, I think my account was hacked. I received an email saying my password was "
    "changed, but I didn't do it. I can't log in anymore. My username is jdoe_1987. Please lock "
    "the account and help me recover it as soon as possible.",
    "系统升级以后，导出 Excel 报表的时候中文全部变成了乱码，之前的版本没有这个问题。浏览器是 "
    "Chrome 123，系统 Windows 10。附件是导出的文件截图。麻烦技术同事看一下，是不是编码设置的问题。",
    "I'd like to cancel my subscription at the end of the current billing period. Please "
    "confirm that I won't be charged again, and let me know whether I can still export my data "
    "after cancellation.",
    "The smart thermostat shows 'E4' on the display and the heating does not turn on. I checked "
    "the breaker and replaced the batteries. Model: TH-300, firmware 2.8. It's getting cold "
    "here, please help!",
    "我在 App 里绑定银行卡时一直提示“验证码错误”，但是我输入的就是短信收到的验证码，换了两次"
    "手机号也不行。银行是招商银行，卡号后四位 6617。请帮忙看看是什么原因。",
    "Hello,\nWe are evaluating your product for our team of about 200 people. Could you tell "
    "us:\n1. whether SSO with Azure AD is supported,\n2. if there is an on-premise deployment "
    "option,\n3. what the pricing for the enterprise tier looks like?\nRegards,\nLinda",
    "快递显示已签收，但是我根本没有收到包裹，问了小区门卫和邻居都说没看到。订单号 "
    "JD20240412558，快递单号 SF1402938475。希望你们帮忙联系快递核实，"
    "如果找不到请重新发货或者退款。",
    "My order arrived damaged: the glass top of the coffee table is cracked in two places. I "
    "have photos of the box and the table. What is the process for a replacement? Order number "
    "77-4410-2291.",
    "客服你好，我想把会员从月付改成年付，请问之前已经付的这个月的钱可以抵扣吗？另外年付有没有优惠活动？",
    "Hi! Quick question - is the charger included with the X200 model, or do I need to buy it "
    "separately? The product page doesn't say. Thanks in advance.",
    "您好，我们在测试环境部署了你们的 SDK（版本 3.4.0），调用 init 接口的时候返回错误码 1003，"
    "日志里提示 license 校验失败。License 文件是上周刚申请的，有效期到明年三月。请问是不是需要"
    "绑定服务器的 MAC 地址？我们的测试服务器有两块网卡，不确定应该用哪一个。麻烦给一个详细的配置"
    "说明，谢谢。",
    "Hello, I am writing about my refund request from two weeks ago (case 448812). I returned "
    "the Trail Runner 3 shoes on April 2nd, the tracking number shows they were delivered to "
    "your warehouse on April 5th, but I have not received the refund yet. Your policy says "
    "refunds are processed within 5 business days of receiving the item. The Trail Runner 3 "
    "shoes were unworn and in the original box. Could you please check the status of my refund "
    "and tell me when I can expect the money back on my card? Thank you for your help.",
    "We noticed that the dashboard shows different numbers than the exported CSV for the same "
    "date range. For example, on May 10 the dashboard says 1,204 orders while the CSV has 1,187 "
    "rows. Is the dashboard counting cancelled orders as well? Our finance team relies on these "
    "numbers for monthly reporting, so we need to understand which one is correct and why they "
    "differ. If this is a known issue, is there a workaround we can use in the meantime?",
    "你好，我买的 Vireo P15 空气净化器用了一个月，滤网指示灯一直亮红灯。按说明书复位了两次，"
    "Vireo P15 空气净化器的指示灯还是红的。请问是滤网需要更换，还是机器本身有问题？如果需要"
    "更换滤网，官方滤网在哪里买？订单号 SO20240603-4338。",
]

SPAM = {
    "buy now": "buy now " * 50,
    "haha": "哈" * 100,
    "lines": "BEST PRICE!!! click here to win a free iphone\n" * 20,
    "pills": "cheap pills online " * 30,
    "zh promo": "好消息好消息，全场一折，点击链接领取优惠券。" * 6,
    "code spam": " ".join(["limited offer code XK29QZ"] * 45),
}


def judge(rows: list[str], params: QualityParams | None = None) -> list[str | None]:
    return quality(params or QualityParams(), ctx())(make_batch("text", rows)).reasons


# ------------------------------------------------------------------------------------ length


def test_length_reasons_name_the_measure_and_the_limit() -> None:
    params = LengthParams(min_chars=10, max_chars=60, min_words=5, max_words=12)
    rows = ["hi there", "one two three four", "a" * 61, "w " * 12 + "w", "just right here ok now"]
    out = length(params, ctx())(make_batch("text", rows))
    assert out.reasons == [
        "too short: 8 chars < 10",
        "too short: 4 words < 5",
        "too long: 61 chars > 60",
        "too long: 13 words > 12",
        None,
    ]
    assert out.batch.num_rows == 5


def test_length_counts_each_cjk_character_as_a_word() -> None:
    params = LengthParams(min_chars=1, min_words=5, min_cjk_chars=3, max_cjk_chars=8)
    rows = ["退款了吗", "退款还没到账", "Order 12 退款", "请帮我查一下物流状态谢谢", "a b c d e"]
    out = length(params, ctx())(make_batch("text", rows))
    assert out.reasons == [
        "too short: 4 words < 5",
        None,
        "too short: 4 words < 5",
        "too long: 12 CJK chars > 8",
        "too short: 0 CJK chars < 3",
    ]


def test_length_defaults_suit_tickets() -> None:
    rows = ["ok", "thanks!!!!!!!!", "where is my order?", "退款什么时候到账？", "x" * 100_001]
    rows.append("好的 12")
    out = length(LengthParams(), ctx())(make_batch("text", rows))
    assert out.reasons == [
        "too short: 2 chars < 6",
        "too short: 1 words < 3",
        None,
        None,
        "too long: 100001 chars > 100000",
        "too short: 5 chars < 6",
    ]


def test_length_judges_instruction_and_conversation_rows_as_a_whole() -> None:
    params = LengthParams(min_chars=1, min_words=4)
    instr = make_batch("instruction", [(None, "why?", "because it is"), ("sys", "ok", None)])
    assert length(params, ctx("instruction"))(instr).reasons == [None, "too short: 2 words < 4"]
    conv = make_batch(
        "conversation",
        [[("user", "hi"), ("assistant", "hello you two")], [("user", "a"), ("assistant", "b")]],
    )
    assert length(params, ctx("conversation"))(conv).reasons == [None, "too short: 2 words < 4"]


# ----------------------------------------------------------------------------------- quality


def test_realistic_bilingual_tickets_all_pass() -> None:
    assert len(TICKETS) >= 20
    assert judge(TICKETS) == [None] * len(TICKETS)


@pytest.mark.parametrize("name", sorted(SPAM))
def test_repetitive_spam_is_rejected_with_the_heuristic_and_value(name: str) -> None:
    (reason,) = judge([SPAM[name]])
    assert reason is not None
    assert any(h in reason for h in ("-gram chars", "duplicate lines")), reason
    value, limit = reason.split(": ", 1)[1].split(" > ")
    assert float(value) > float(limit)


def test_spam_mixed_into_a_batch_of_tickets_is_what_gets_rejected() -> None:
    rows = TICKETS[:10] + list(SPAM.values()) + TICKETS[10:]
    reasons = judge(rows)
    rejected = [row for row, reason in zip(rows, reasons, strict=True) if reason]
    assert rejected == list(SPAM.values())


def test_exact_reasons_for_known_spam() -> None:
    assert judge([SPAM["buy now"], SPAM["haha"], SPAM["lines"]]) == [
        "top 2-gram chars: 1.000 > 0.35",
        "top 2-gram chars: 1.980 > 0.35",
        "duplicate lines: 0.950 > 0.3",
    ]


def test_ratio_heuristics() -> None:
    rows = {
        "symbols": " ".join(f"#deal{i} #sale{i}" for i in range(15)),
        "alpha": " ".join(str(1000 + 7 * i) for i in range(30)),
        "short": " ".join("xyzqwertuiopasdfghjklm"),
        "long": " ".join(f"internationalization{i}" for i in range(25)),
        "bullets": "\n".join(f"- item {i} with two words" for i in range(6)),
        "ellipsis": "\n".join(
            f"I waited {i} hours and nobody from support called me ..." for i in range(3)
        ),
    }
    reasons = dict(zip(rows, judge(list(rows.values())), strict=True))
    assert reasons["symbols"] == "symbol/word ratio: 1.000 > 0.1"
    assert reasons["alpha"] == "alphabetic words: 0.000 < 0.8"
    assert reasons["short"] == "mean word length: 1.000 < 3"
    assert reasons["long"] == "mean word length: 21.600 > 10"
    assert reasons["bullets"] == "bullet lines: 1.000 > 0.9"
    assert reasons["ellipsis"] == "ellipsis lines: 1.000 > 0.3"


def test_short_texts_skip_the_ratio_and_repetition_heuristics() -> None:
    rows = ["VPN down... again... help...", "#1 #2 #3 #4 are all broken", "ok ok ok ok ok ok"]
    assert judge(rows) == [None, None, None]


def test_mean_word_length_is_skipped_for_cjk_dominant_text() -> None:
    zh = "我的订单一直没有发货请帮我查询一下物流信息谢谢 " * 2 + " ".join("ABCDEFGHIJKLMNOPQRSTU")
    assert judge([zh], QualityParams(repetition_min_words=10_000)) == [None]


def test_duplicate_ngrams_catch_a_repeated_passage() -> None:
    passage = TICKETS[11]
    reasons = judge([f"{passage} {passage} {passage}"])
    assert (reasons[0] or "").startswith("duplicate 5-gram chars: ")


def test_null_thresholds_turn_checks_off() -> None:
    off = QualityParams(
        max_dup_line_frac=None,
        max_dup_line_char_frac=None,
        max_top_ngram_char_frac={},
        max_dup_ngram_char_frac={},
    )
    assert judge(list(SPAM.values()), off) == [None] * len(SPAM)


def test_quality_counts_rejections_per_heuristic() -> None:
    out = quality(QualityParams(), ctx())(make_batch("text", [SPAM["buy now"], SPAM["lines"]]))
    assert out.counts == {"top_2gram": 1, "dup_lines": 1}


def test_quality_is_deterministic() -> None:
    rows = TICKETS + list(SPAM.values())
    assert judge(rows) == judge(rows)
    assert judge(rows[::-1]) == judge(rows)[::-1]


def test_quality_on_conversations_and_instructions() -> None:
    chat = [
        ("user", "My parcel SF1402938475 says delivered but I never got it."),
        ("assistant", "Sorry to hear that. I have opened a claim with the courier for you."),
        ("user", "谢谢，大概多久有结果？"),
        ("assistant", "通常三到五个工作日，有进展我们会短信通知您。"),
    ]
    spam_chat = [("user", "hi"), ("assistant", "click here to win " * 30)]
    conv = make_batch("conversation", [chat, spam_chat])
    reasons = quality(QualityParams(), ctx("conversation"))(conv).reasons
    assert reasons[0] is None
    assert (reasons[1] or "").startswith("top 2-gram chars")
    instr = make_batch("instruction", [(None, TICKETS[0], TICKETS[1]), (None, "q", SPAM["pills"])])
    reasons = quality(QualityParams(), ctx("instruction"))(instr).reasons
    assert reasons[0] is None
    assert reasons[1] is not None


def test_quality_params_round_trip_as_plain_data() -> None:
    data = QualityParams().model_dump(mode="json")
    assert set(data["max_top_ngram_char_frac"]) == {"2", "3", "4"}
    assert QualityParams.model_validate(data) == QualityParams()
    with pytest.raises(ValueError, match="max_dup_ngram_char_frac"):
        QualityParams(max_dup_ngram_char_frac={0: 0.1})


def test_sliced_batches_are_judged_like_fresh_ones() -> None:
    rows = [SPAM["haha"], *TICKETS[:5], SPAM["buy now"], "ok"]
    batch = make_batch("text", rows).slice(1)
    assert quality(QualityParams(), ctx())(batch).reasons == judge(rows[1:])
    assert length(LengthParams(), ctx())(batch).reasons == [None] * 6 + ["too short: 2 chars < 6"]


def test_length_decodes_every_utf8_width() -> None:
    params = LengthParams(min_chars=1, max_words=4, max_cjk_chars=3)
    rows = ["é ü 𠀀𠀁 😀 ok", "𠀀𠀁𠀂𠀃", "naïve café ok"]
    out = length(params, ctx())(make_batch("text", rows))
    assert out.reasons == ["too long: 5 words > 4", "too long: 4 CJK chars > 3", None]
