"""Which tokens of a conversation are the assistant's, for any chat template.

The loss of supervised fine-tuning sees only what the assistant says. Two ways to find it:

- ``generation``: the template marks the assistant's text with ``{% generation %}`` (the
  toolkit's own tiny model does); transformers returns the mask directly.
- ``prefix``: real templates (DeepSeek-R1/V3, Qwen2/2.5's ChatML, Llama 3, Mistral, Gemma) have
  no such marks. The conversation is rendered whole, and for each assistant turn the template
  is rendered again up to that turn, once as it is and once with a placeholder for its text:
  where the two part is where the reply starts (the turn's header stays out), and the reply
  ends where the turn's rendering does (its end-of-turn token included). A turn whose rendering
  is not the start of the whole conversation (a template that rewrites history) is not
  trained on; a template that does that to the probe conversation is refused.

A message may carry ``reasoning_content`` (DeepSeek-R1-style thinking). Trained on, it goes
inside the assistant turn as ``<think>\\n...\\n</think>\\n\\n`` before the answer, unless the
template renders ``reasoning_content`` itself; templates that cut everything before
``</think>`` (R1's) are rendered around a placeholder so the reasoning survives.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from offline.errors import ConfigError

IGNORE = -100
_GENERATION = re.compile(r"{%-?\s*generation\s*-?%}")
_PROBE = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4."},
    {"role": "user", "content": "And 3 + 3?"},
    {"role": "assistant", "content": "3 + 3 = 6."},
]
# Placeholders that no template rewrites: private-use code points around a number, chosen
# so that no message of the conversation contains one
_HOLD = "\ue000{}\ue001"

Message = Mapping[str, Any]


class TemplateError(ConfigError):
    """The tokenizer's chat template cannot say which tokens are the assistant's."""


class Dropped(Exception):
    """A conversation with nothing to train on; ``reason`` says why in a word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


REASONS = {
    "no_assistant_turn": "no assistant turn",
    "empty": "the assistant's replies are empty",
    "truncated": "nothing of the assistant's left within data.max_length",
    "template_refused": "the chat template refused the conversation",
    "template_mismatch": "the template renders its history differently from the whole",
}


def mask_method(tok: Any) -> str:
    """``generation`` or ``prefix`` (see the module docstring), checked on a probe conversation.

    Raises:
        TemplateError: no chat template, or one whose replies cannot be located.
    """
    template = getattr(tok, "chat_template", None)
    if not isinstance(template, str) or not template.strip():
        raise TemplateError(
            "the tokenizer has no chat template, so conversations cannot be rendered",
            fix="save the model's tokenizer with its chat_template (tokenizer_config.json or"
            " chat_template.jinja), or train with task: pretrain",
        )
    method = "generation" if _GENERATION.search(template) else "prefix"
    try:
        ids, labels = encode_conversation(tok, _PROBE, max_length=1 << 20, method=method)
    except Dropped as exc:
        raise TemplateError(
            f"the chat template cannot be masked ({method} method): on a two-turn probe"
            f" conversation {REASONS.get(exc.reason, exc.reason)}"
            + (f" ({exc.detail})" if exc.detail else ""),
            fix="use the model's published template, or add {% generation %} ..."
            " {% endgeneration %} around the assistant's text in it",
        ) from None
    trained = tok.decode([t for t, y in zip(ids, labels, strict=True) if y != IGNORE])
    for user in ("What is", "And 3"):
        if user in trained:
            raise TemplateError(
                f"the chat template cannot be masked ({method} method): the tokens it marks as"
                f" the assistant's ({trained!r}) include the user's text {user!r}",
                fix="use the model's published template, or add {% generation %} ..."
                " {% endgeneration %} around the assistant's text in it",
            )
    for reply in ("4", "6"):
        if reply not in trained:
            raise TemplateError(
                f"the chat template cannot be masked ({method} method): the tokens it marks as"
                f" the assistant's ({trained!r}) miss the probe's reply ending in {reply!r}",
                fix="use the model's published template, or add {% generation %} ..."
                " {% endgeneration %} around the assistant's text in it",
            )
    return method


def encode_conversation(
    tok: Any,
    messages: Sequence[Message],
    *,
    max_length: int,
    reasoning: bool = True,
    method: str | None = None,
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``: labels are the token ids of the assistant's text, -100 elsewhere.

    Raises:
        Dropped: the conversation has nothing to train on (``reason`` in :data:`REASONS`).
    """
    if not any(m.get("role") == "assistant" for m in messages):
        raise Dropped("no_assistant_turn")
    method = method or ("generation" if _GENERATION.search(tok.chat_template or "") else "prefix")
    native = "reasoning_content" in (tok.chat_template or "")
    hold = None
    if method == "prefix":
        hold = _free_placeholder(messages)
    trims = hold is not None and _trims(tok)
    shown, holds = _prepared(messages, reasoning=reasoning, native=native, hold=hold, trims=trims)
    if method == "generation":
        ids, mask = _generation_mask(tok, shown)
    else:
        ids, mask = _prefix_mask(tok, shown, holds, hold or _HOLD)
    if not any(mask):
        raise Dropped("empty")
    ids, mask = ids[:max_length], mask[:max_length]
    if not any(mask[1:]):  # the first token is never a target
        raise Dropped("truncated", f"{len(ids)} tokens kept")
    return ids, [t if m else IGNORE for t, m in zip(ids, mask, strict=True)]


def _free_placeholder(messages: Sequence[Message]) -> str:
    """A placeholder pattern (``{}`` for a number) that no message's text contains."""
    text = "".join(str(v) for m in messages for v in m.values())
    n = 0
    while "\ue000" + "\ue002" * n in text:
        n += 1
    return "\ue000" + "\ue002" * n + "{}\ue001"


def _trims(tok: Any) -> bool:
    """Whether the template strips the assistant's text (Llama 3, Gemma do)."""
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": " \ue003 "}]
    try:
        text = _render(tok, probe, False)
    except Dropped:
        return False
    return " \ue003 " not in text


def _prepared(
    messages: Sequence[Message],
    *,
    reasoning: bool,
    native: bool,
    hold: str | None,
    trims: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Messages as the template gets them, and what each placeholder stands for."""
    out: list[dict[str, Any]] = []
    holds: dict[str, str] = {}
    for index, message in enumerate(messages):
        item = {k: v for k, v in message.items() if k != "reasoning_content"}
        item["content"] = item.get("content") or ""
        thought = message.get("reasoning_content") if message.get("role") == "assistant" else None
        if reasoning and thought:
            if native:
                item["reasoning_content"] = thought
            else:
                text = f"<think>\n{thought}\n</think>\n\n{item['content']}"
                text = text.strip() if trims else text  # as the template does to its content
                if hold is not None:
                    key = hold.format(index)
                    holds[key] = text
                    item["content"] = key
                else:
                    item["content"] = text
        out.append(item)
    return out, holds


def _render(tok: Any, messages: Sequence[Message], prompt: bool) -> str:
    try:
        text = tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=prompt)
    except Exception as exc:  # a template's own raise_exception(), or a Jinja error
        raise Dropped("template_refused", _first_line(exc)) from None
    return str(text)


def _generation_mask(tok: Any, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    try:
        enc = tok.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
    except Exception as exc:
        raise Dropped("template_refused", _first_line(exc)) from None
    return list(enc["input_ids"]), [int(bool(m)) for m in enc["assistant_masks"]]


def _prefix_mask(
    tok: Any, messages: list[dict[str, Any]], holds: dict[str, str], hold: str
) -> tuple[list[int], list[int]]:
    def render(some: Sequence[Message], prompt: bool = False) -> str:
        text = _render(tok, some, prompt)
        for key, value in holds.items():  # no message contains a placeholder
            text = text.replace(key, value)
        return text

    whole = render(messages)
    spans: list[tuple[int, int]] = []
    mismatched = False
    marker = hold.format("reply")
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        through = render(messages[: index + 1])
        if not whole.startswith(through):
            mismatched = True  # written differently once more follows: not trained
            continue
        blank = render([*messages[:index], {**message, "content": marker}])
        start = blank.find(marker)
        if start < 0 or through[:start] != blank[:start]:
            start = _common_prefix(blank, through)
        # the reply is what the model writes after the prompt of inference: not R1's
        # <think>\n (the prompt has it), but Mistral's space after [/INST]
        if index:
            with contextlib.suppress(Dropped):
                prompt = render(messages[:index], True)
                if through.startswith(prompt):
                    start = len(prompt)
        else:  # the assistant speaks first: no history to render a prompt after
            start += _prompted_lead(through, start, _generation_suffix(tok))
        end = len(through.rstrip())
        if end > start:
            spans.append((start, end))
    if not spans:
        raise Dropped("template_mismatch" if mismatched else "empty")
    return _tokens_in_spans(tok, whole, spans)


def _generation_suffix(tok: Any) -> str:
    """What the generation prompt adds after a conversation ("" when it cannot be told)."""
    probe = [{"role": "user", "content": "\ue003"}]
    try:
        bare, prompted = _render(tok, probe, False), _render(tok, probe, True)
    except Dropped:
        return ""
    return prompted[len(bare) :] if prompted.startswith(bare) else ""


def _prompted_lead(text: str, start: int, suffix: str) -> int:
    """How much of the reply at ``start`` the generation prompt writes: the header before
    ``start`` ends with the prompt's first part and the reply opens with the rest (R1's
    <think>\n after its assistant tag)."""
    for cut in range(len(suffix), 0, -1):
        head, rest = suffix[:cut], suffix[cut:]
        if text[:start].endswith(head):
            return len(rest) if text.startswith(rest, start) else 0
    return 0


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _tokens_in_spans(
    tok: Any, text: str, spans: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """Tokens of ``text`` and whether each overlaps a span (the template adds its own BOS)."""
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        mask = [
            int(e > s and any(s < b and e > a for a, b in spans)) for s, e in enc["offset_mapping"]
        ]
        return ids, mask
    # A slow tokenizer has no offsets: tokenize piece by piece at the span edges.
    ids, mask, cursor = [], [], 0
    for a, b in [*spans, (len(text), len(text))]:
        for piece, inside in ((text[cursor:a], 0), (text[a:b], 1)):
            if piece:
                part = tok(piece, add_special_tokens=False)["input_ids"]
                ids += part
                mask += [inside] * len(part)
        cursor = b
    return ids, mask
