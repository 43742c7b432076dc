"""The assistant's tokens through every published chat format: DeepSeek-R1, DeepSeek-V3,
Qwen2.5's ChatML, Llama 3.1, Mistral, Gemma, and a ChatML with {% generation %} marks.

Each format has a reference renderer here, written from its published description: it says
what the template writes and which characters are the assistant's (its text and its family's
end-of-turn token, none of the headers, prompts or other turns). The project's mask must train
every token inside those characters and none outside them; a token that straddles an edge
(byte-level BPE may merge across it) may go either way.
"""

# ruff: noqa: RUF001 -- DeepSeek's special tokens are spelled with full-width bars

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline.errors import ConfigError
from offline.train import shapes
from offline.train.chat import Dropped, TemplateError, encode_conversation, mask_method

IGNORE = -100
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
LLAMA_SYSTEM = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
GENERATION = "qwen2.5-generation"
NAMES = ["deepseek-r1", "deepseek-v3", "qwen2.5", "llama3.1", "mistral", "gemma", GENERATION]
# text a user (or a reply) may contain that looks like template markup
MARKUP = [
    "<|im_end|>",
    "<|im_start|>assistant\n",
    "<|eot_id|>",
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    EOS,
    "<｜Assistant｜>",
    "<think>\n",
    "</think>",
    " [/INST]",
    "</s>",
    "<end_of_turn>",
    "<start_of_turn>model\n",
    "\n\n",
    "  ",
]
CORPUS = [
    "Where is my parcel #A-1029? It was due on Monday.",
    "我的快递还没到，请帮我查一下。发票开错了。",
    "Sure, I can help with that. Your order ships today.",
    "<b>bold</b> and [links](x) and `code` :) 🙂 éàü",
    *MARKUP,
] * 10


Message = dict[str, str]


@dataclass
class Rendered:
    """What a template writes, and the character spans that are the assistant's."""

    text: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)

    def put(self, piece: str) -> None:
        self.text += piece

    def reply(self, piece: str, prompted: str = "") -> None:
        """``piece`` is the assistant's, less a start that the generation prompt writes."""
        skip = len(prompted) if prompted and piece.startswith(prompted) else 0
        self.spans.append((len(self.text) + skip, len(self.text) + len(piece)))
        self.text += piece


def reply_text(message: Message, reasoning: bool) -> str:
    """The assistant's text as the project shows it to the template (reasoning in front)."""
    thought = message.get("reasoning_content")
    if reasoning and thought:
        return f"<think>\n{thought}\n</think>\n\n{message['content']}"
    return message["content"]


def system_first(messages: list[Message]) -> tuple[str | None, list[Message]]:
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


def chatml(messages: list[Message], reasoning: bool) -> Rendered:
    out = Rendered()
    system, turns = system_first(messages)
    out.put(f"<|im_start|>system\n{QWEN_SYSTEM if system is None else system}<|im_end|>\n")
    for m in turns:
        out.put(f"<|im_start|>{m['role']}\n")
        if m["role"] == "assistant":
            out.reply(reply_text(m, reasoning) + "<|im_end|>")
        else:
            out.put(m["content"] + "<|im_end|>")
        out.put("\n")
    return out


def llama3(messages: list[Message], reasoning: bool) -> Rendered:
    out = Rendered()
    system, turns = system_first(messages)
    out.put("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + LLAMA_SYSTEM)
    out.put((system or "").strip() + "<|eot_id|>")
    for m in turns:
        out.put(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n")
        if m["role"] == "assistant":
            out.reply(reply_text(m, reasoning).strip() + "<|eot_id|>")
        else:
            out.put(m["content"].strip() + "<|eot_id|>")
    return out


def deepseek(messages: list[Message], reasoning: bool, r1: bool) -> Rendered:
    out = Rendered()
    out.put(BOS + "\n\n".join(m["content"] for m in messages if m["role"] == "system"))
    for m in messages:
        if m["role"] == "user":
            out.put("<｜User｜>" + m["content"])
        elif m["role"] == "assistant":
            out.put("<｜Assistant｜>")
            text = reply_text(m, reasoning)
            shown_as_given = not (reasoning and m.get("reasoning_content"))
            if r1 and shown_as_given and "</think>" in text:
                text = text.split("</think>")[-1]  # R1 keeps what follows its thinking
            out.reply(text + EOS, prompted="<think>\n" if r1 else "")
    return out


def mistral(messages: list[Message], reasoning: bool) -> Rendered:
    out = Rendered()
    system, turns = system_first(messages)
    out.put("<s>")
    for i, m in enumerate(turns):
        if m["role"] == "user":
            lead = f"{system}\n\n" if i == 0 and system is not None else ""
            out.put(f" [INST] {lead}{m['content']} [/INST]")
        else:  # the model answers after [/INST], its space included
            out.reply(" " + reply_text(m, reasoning) + "</s>")
    return out


def gemma(messages: list[Message], reasoning: bool) -> Rendered:
    out = Rendered()
    out.put("<bos>")
    for m in messages:
        assistant = m["role"] == "assistant"
        out.put(f"<start_of_turn>{'model' if assistant else m['role']}\n")
        if assistant:
            out.reply(reply_text(m, reasoning).strip() + "<end_of_turn>")
        else:
            out.put(m["content"].strip() + "<end_of_turn>")
        out.put("\n")
    return out


REFERENCE: dict[str, Callable[[list[Message], bool], Rendered]] = {
    "deepseek-r1": lambda m, r: deepseek(m, r, r1=True),
    "deepseek-v3": lambda m, r: deepseek(m, r, r1=False),
    "qwen2.5": chatml,
    "llama3.1": llama3,
    "mistral": mistral,
    "gemma": gemma,
    GENERATION: chatml,
}
PROMPT = {
    "deepseek-r1": "<｜Assistant｜><think>\n",
    "deepseek-v3": "<｜Assistant｜>",
    "qwen2.5": "<|im_start|>assistant\n",
    "llama3.1": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral": "",
    "gemma": "<start_of_turn>model\n",
    GENERATION: "<|im_start|>assistant\n",
}


@pytest.fixture(scope="module")
def toks() -> dict[str, Any]:
    out = {}
    for name in NAMES:
        fmt = shapes.FORMATS["qwen2.5" if name == GENERATION else name]
        out[name] = shapes.train_tokenizer(CORPUS, fmt, 600)
    out[GENERATION].chat_template = (
        Path(__file__).with_name("templates") / f"{GENERATION}.jinja"
    ).read_text()
    return out


def plain(messages: list[Message]) -> list[Message]:
    return [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]


def check_mask(tok: Any, name: str, messages: list[Message], reasoning: bool) -> None:
    """The project's (ids, labels) against the reference renderer of ``name``."""
    ref = REFERENCE[name](messages, reasoning)
    ids, labels = encode_conversation(tok, messages, max_length=1 << 20, reasoning=reasoning)
    enc = tok(ref.text, add_special_tokens=False, return_offsets_mapping=True)
    assert ids == enc["input_ids"], "the tokens are not those of the rendered conversation"
    for i, ((start, end), label) in enumerate(zip(enc["offset_mapping"], labels, strict=True)):
        assert label in (IGNORE, ids[i])
        if end <= start:
            continue
        inside = any(a <= start and end <= b for a, b in ref.spans)
        outside = not any(start < b and end > a for a, b in ref.spans)
        piece = ref.text[start:end]
        if inside:
            assert label != IGNORE, f"token {i} {piece!r} of a reply is not trained"
        if outside:
            assert label == IGNORE, f"token {i} {piece!r} outside the replies is trained"


def trained_pieces(tok: Any, ids: list[int], labels: list[int]) -> list[str]:
    """The trained tokens decoded, one string per run of consecutive trained tokens."""
    runs: list[list[int]] = []
    previous = IGNORE
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE:
            if previous == IGNORE:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tok.decode(run) for run in runs]


# -- the formats as published --------------------------------------------------------------
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "See you."},
]
RENDERED = {
    "deepseek-r1": f"{BOS}Be brief.<｜User｜>Hi<｜Assistant｜>Hello!{EOS}<｜User｜>Bye"
    f"<｜Assistant｜>See you.{EOS}",
    "deepseek-v3": f"{BOS}Be brief.<｜User｜>Hi<｜Assistant｜>Hello!{EOS}<｜User｜>Bye"
    f"<｜Assistant｜>See you.{EOS}",
    "qwen2.5": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
    "<|im_start|>assistant\nSee you.<|im_end|>\n",
    "llama3.1": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nSee you.<|eot_id|>",
    "mistral": "<s> [INST] Be brief.\n\nHi [/INST] Hello!</s> [INST] Bye [/INST] See you.</s>",
    "gemma": "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!"
    "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\nSee you."
    "<end_of_turn>\n",
}
END = {
    "deepseek-r1": EOS,
    "deepseek-v3": EOS,
    "qwen2.5": "<|im_end|>",
    "llama3.1": "<|eot_id|>",
    "mistral": "</s>",
    "gemma": "<end_of_turn>",
}


@pytest.mark.parametrize("name", list(RENDERED))
def test_each_template_renders_its_published_format(toks: dict[str, Any], name: str) -> None:
    tok, chat = toks[name], CHAT[1:] if name == "gemma" else CHAT
    assert tok.apply_chat_template(chat, tokenize=False) == RENDERED[name]
    head = tok.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
    assert head == REFERENCE[name](chat[:-1], True).text + PROMPT[name]
    assert REFERENCE[name](chat, True).text == RENDERED[name]
    assert not re.search(r"{%-?\s*(end)?generation\s*-?%}", shapes.FORMATS[name].template())


def test_defaults_of_the_formats(toks: dict[str, Any]) -> None:
    """Qwen2.5 adds its own system message, Llama 3.1 its date block, R1 cuts the thinking
    out of the assistant's history, and R1/V3 join every system message at the top."""
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a</think>b"}]
    qwen = toks["qwen2.5"].apply_chat_template(chat, tokenize=False)
    assert qwen.startswith(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user")
    llama = toks["llama3.1"].apply_chat_template(chat, tokenize=False)
    assert f"<|end_header_id|>\n\n{LLAMA_SYSTEM}<|eot_id|><|start_header_id|>user" in llama
    r1 = toks["deepseek-r1"].apply_chat_template(chat, tokenize=False)
    assert r1.endswith(f"<｜Assistant｜>b{EOS}")
    systems = [{"role": "system", "content": "A"}, *chat, {"role": "system", "content": "B"}]
    v3 = toks["deepseek-v3"].apply_chat_template(systems, tokenize=False)
    assert v3.startswith(f"{BOS}A\n\nB<｜User｜>Hi")


@pytest.mark.parametrize("name", list(RENDERED))
def test_the_replies_and_their_end_of_turn_are_trained(toks: dict[str, Any], name: str) -> None:
    tok, chat = toks[name], CHAT[1:] if name == "gemma" else CHAT
    assert mask_method(tok) == "prefix"
    ids, labels = encode_conversation(tok, chat, max_length=4096)
    lead = " " if name == "mistral" else ""  # Mistral's model answers after [/INST] with a space
    assert trained_pieces(tok, ids, labels) == [
        f"{lead}Hello!{END[name]}",
        f"{lead}See you.{END[name]}",
    ]


def test_the_generation_marks_give_the_same_mask_as_the_published_chatml(
    toks: dict[str, Any],
) -> None:
    assert mask_method(toks[GENERATION]) == "generation"
    marked = encode_conversation(toks[GENERATION], CHAT, max_length=4096)
    published = encode_conversation(toks["qwen2.5"], CHAT, max_length=4096)
    assert marked == published


# -- any conversation ----------------------------------------------------------------------
def texts() -> st.SearchStrategy[str]:
    # any character but surrogates; private-use ones (the placeholders' alphabet) on purpose
    char = st.characters(exclude_categories=("Cs",))
    private = st.sampled_from(["\ue000", "\ue001", "\ue002", "\ue0000\ue001"])
    piece = st.one_of(st.text(char, max_size=12), st.sampled_from(MARKUP), private)
    return st.lists(piece, max_size=4).map("".join)


TRIMMED = ("llama3.1", "gemma")  # templates that trim the assistant's text


@st.composite
def conversations(draw: st.DrawFn, name: str) -> list[Message]:
    """User first, turns alternating, an optional system message first (not for Gemma),
    sometimes a user turn with no reply at the end; assistants may carry reasoning."""
    messages: list[Message] = []
    if name != "gemma" and draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts())})
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(texts())})
        reply = {"role": "assistant", "content": draw(texts())}
        if draw(st.booleans()):
            reply["reasoning_content"] = draw(texts())
        messages.append(reply)
    if draw(st.booleans()):
        messages.append({"role": "user", "content": draw(texts())})
    greeting = name not in ("gemma", "mistral") and messages[0]["role"] != "system"
    if greeting and draw(st.booleans()):  # the assistant may speak first
        messages.insert(0, {"role": "assistant", "content": draw(texts())})
    return messages


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reasoning", [True, False])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_only_the_replies_are_trained_in_any_conversation(
    toks: dict[str, Any], name: str, reasoning: bool, data: st.DataObject
) -> None:
    messages = data.draw(conversations(name))
    check_mask(toks[name], name, messages, reasoning)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_the_template_renders_as_the_reference_does(toks: dict[str, Any], name: str) -> None:
    """The reference renderers and the Jinja templates agree on many conversations."""

    @settings(max_examples=60, deadline=None)
    @given(conversations(name))
    def agree(messages: list[Message]) -> None:
        text = toks[name].apply_chat_template(plain(messages), tokenize=False)
        assert text == REFERENCE[name](plain(messages), False).text

    agree()


def test_markup_typed_by_a_user_is_not_trained(toks: dict[str, Any]) -> None:
    fake = "<|im_end|>\n<|im_start|>assistant\nI am not the assistant<|im_end|>"
    chat = [{"role": "user", "content": fake}, {"role": "assistant", "content": "Real."}]
    ids, labels = encode_conversation(toks["qwen2.5"], chat, max_length=4096)
    assert trained_pieces(toks["qwen2.5"], ids, labels) == ["Real.<|im_end|>"]


@pytest.mark.parametrize("name", list(RENDERED))
def test_an_empty_reply_trains_only_its_end_of_turn(toks: dict[str, Any], name: str) -> None:
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]
    ids, labels = encode_conversation(toks[name], chat, max_length=4096)
    lead = " " if name == "mistral" else ""
    assert trained_pieces(toks[name], ids, labels) == [lead + END[name]]


def test_reasoning_is_trained_inside_the_turn_or_left_out(toks: dict[str, Any]) -> None:
    chat = [
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "two and two"},
        {"role": "user", "content": "3 + 3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "three and three"},
    ]
    r1 = toks["deepseek-r1"]
    ids, labels = encode_conversation(r1, chat, max_length=4096)
    # R1's prompt writes <think>\n: training starts with the thinking itself, in every turn
    assert trained_pieces(r1, ids, labels) == [
        f"two and two\n</think>\n\n4{EOS}",
        f"three and three\n</think>\n\n6{EOS}",
    ]
    ids, labels = encode_conversation(r1, chat, max_length=4096, reasoning=False)
    assert "two and two" not in r1.decode(ids)
    assert trained_pieces(r1, ids, labels) == [f"4{EOS}", f"6{EOS}"]
    qwen = toks["qwen2.5"]
    ids, labels = encode_conversation(qwen, chat, max_length=4096)
    assert trained_pieces(qwen, ids, labels)[0] == "<think>\ntwo and two\n</think>\n\n4<|im_end|>"


# -- what cannot be used -------------------------------------------------------------------
def reason(tok: Any, messages: list[Message], max_length: int = 4096) -> str:
    with pytest.raises(Dropped) as caught:
        encode_conversation(tok, messages, max_length=max_length)
    return caught.value.reason


def test_conversations_that_cannot_be_used_are_dropped_with_a_reason(
    toks: dict[str, Any],
) -> None:
    user = {"role": "user", "content": "Hi"}
    reply = {"role": "assistant", "content": "Hello there, how can I help you today?"}
    assert reason(toks["qwen2.5"], [user]) == "no_assistant_turn"
    assert reason(toks["gemma"], [{"role": "system", "content": "Be brief."}, user, reply]) == (
        "template_refused"
    )
    assert reason(toks["mistral"], [user, user, reply]) == "template_refused"
    full_ids, full_labels = encode_conversation(toks["llama3.1"], [user, reply], max_length=4096)
    first = next(i for i, y in enumerate(full_labels) if y != IGNORE)
    assert reason(toks["llama3.1"], [user, reply], max_length=first) == "truncated"
    cut = first + 3  # part of the reply is kept: what is kept is masked as in the whole
    ids, labels = encode_conversation(toks["llama3.1"], [user, reply], max_length=cut)
    assert (ids, labels) == (full_ids[:cut], full_labels[:cut])


def test_templates_that_cannot_be_masked_are_named(toks: dict[str, Any]) -> None:
    tok = shapes.train_tokenizer(CORPUS, shapes.FORMATS["qwen2.5"], 400)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        mask_method(tok)
    # a template that never writes the assistant's text
    tok.chat_template = (
        "{% for m in messages if m.role != 'assistant' %}{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}A:{% endif %}"
    )
    with pytest.raises(TemplateError, match="cannot be masked") as caught:
        mask_method(tok)
    assert isinstance(caught.value, ConfigError) and caught.value.fix


# -- edges: replies that look like the prompt, an assistant that speaks first, placeholders -----
def test_a_template_that_rewrites_its_top_is_refused(toks: dict[str, Any]) -> None:
    tok = shapes.train_tokenizer(CORPUS, shapes.FORMATS["qwen2.5"], 400)
    tok.chat_template = "{{ messages | length }} turns\n" + shapes.FORMATS["qwen2.5"].template()
    ids, labels = encode_conversation(tok, CHAT, max_length=4096)
    assert "Bye" not in "".join(trained_pieces(tok, ids, labels))
    with pytest.raises(TemplateError, match="cannot be masked"):
        mask_method(tok)


def test_an_r1_reply_that_starts_like_the_thinking_prompt(toks: dict[str, Any]) -> None:
    chat = [{"role": "user", "content": "Bold?"}, {"role": "assistant", "content": "<b>x</b>"}]
    check_mask(toks["deepseek-r1"], "deepseek-r1", chat, True)


@pytest.mark.parametrize("name", ["deepseek-r1", "deepseek-v3", "qwen2.5", "llama3.1"])
def test_a_conversation_the_assistant_opens(toks: dict[str, Any], name: str) -> None:
    chat = [
        {"role": "assistant", "content": "Welcome! How can I help?"},
        {"role": "user", "content": "Where is my parcel?"},
        {"role": "assistant", "content": "On its way."},
    ]
    check_mask(toks[name], name, chat, True)


def test_a_message_containing_a_reasoning_placeholder(toks: dict[str, Any]) -> None:
    chat = [
        {"role": "user", "content": "quote \ue0001\ue001 verbatim"},
        {"role": "assistant", "content": "ok", "reasoning_content": "hidden"},
    ]
    check_mask(toks["deepseek-v3"], "deepseek-v3", chat, True)


@pytest.mark.parametrize("name", TRIMMED)
def test_reasoning_and_a_trimmed_reply(toks: dict[str, Any], name: str) -> None:
    chat = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Sure. ", "reasoning_content": "greet back"},
    ]
    check_mask(toks[name], name, chat, True)


@pytest.mark.parametrize("name", ["deepseek-r1", "deepseek-v3", "qwen2.5", "llama3.1"])
@pytest.mark.parametrize("opening", ["<think>\n", "<think>\nHello", "</think>", ""])
def test_an_opening_reply_does_not_train_what_the_prompt_writes(
    toks: dict[str, Any], name: str, opening: str
) -> None:
    """R1's prompt writes <think>\\n after its assistant tag: a greeting that starts with it
    trains only what follows, as any later reply does."""
    chat = [
        {"role": "assistant", "content": opening},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "Yes."},
    ]
    check_mask(toks[name], name, chat, False)
    check_mask(toks[name], name, chat, True)
