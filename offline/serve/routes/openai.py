"""``POST /v1/completions`` and ``POST /v1/chat/completions`` in OpenAI's wire format, with
``stream: true`` as server-sent events ending in ``data: [DONE]`` (after an ``error`` event
when the model fails half way, since the status line has already gone out)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from offline.serve.engine import Busy, Delta, Sampling
from offline.serve.schemas import ChatRequest, CompletionRequest
from offline.serve.service import RETRY, ApiError, KeyId, Service, Slot, Svc, limit_error

router = APIRouter(tags=["openai"])
log = logging.getLogger("offline.serve")
FAILED = {  # what a client is told when the model fails; the server log has the traceback
    "message": "the model failed while generating: see the server log",
    "type": "server_error",
    "code": "generation_failed",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"},
    404: {"description": "unknown model"},
    413: {"description": "body too large"},
    429: {"description": "too many generations waiting; retry after Retry-After seconds"},
}


@router.post("/v1/completions", responses=ERRORS)
async def completions(body: CompletionRequest, svc: Svc, _key: KeyId) -> Any:
    """Continue a prompt."""
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise limit_error("prompt", "one prompt per request", len(body.prompt))
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    slot = _generation_slot(svc, body.model)
    ids = slot.model.tokenizer(prompt)["input_ids"] or [_start_token(slot)]
    return await _respond(svc, slot, ids, body, body.max_tokens or 16, chat=False)


@router.post("/v1/chat/completions", responses=ERRORS)
async def chat_completions(body: ChatRequest, svc: Svc, _key: KeyId) -> Any:
    """Answer a conversation, through the model's chat template."""
    slot = _generation_slot(svc, body.model)
    tok = slot.model.tokenizer
    messages = [
        {
            "role": "system" if m.role == "developer" else m.role,
            "content": m.content
            if isinstance(m.content, str)
            else "".join(p.text for p in m.content),
        }
        for m in body.messages
    ]
    if tok.chat_template:
        text = _apply_template(slot, messages)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:  # a tokenizer without a template: plain "role: content" lines
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        ids = tok(text)["input_ids"]
    wanted = body.max_completion_tokens or body.max_tokens
    return await _respond(svc, slot, ids, body, wanted or svc.settings.max_tokens_limit, chat=True)


def _start_token(slot: Slot) -> int:
    """What an empty prompt continues from: BOS, else EOS, else padding."""
    model = slot.model
    bos: int | None = model.tokenizer.bos_token_id
    return next(i for i in (bos, model.eos_id, model.pad_id) if i is not None)


def _apply_template(slot: Slot, messages: list[dict[str, str]]) -> str:
    """The conversation through the model's chat template; one the template refuses (its
    ``raise_exception``, e.g. roles out of order) is a 422 with the template's reason."""
    from jinja2 import TemplateError, TemplateSyntaxError

    tok = slot.model.tokenizer
    try:
        text: str = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except TemplateSyntaxError:  # the model's template is broken: the server's fault
        raise
    except TemplateError as exc:
        raise limit_error(
            "messages", f"{slot.model.id}'s chat template refuses these messages: {exc}"
        ) from None
    return text


def _generation_slot(svc: Service, requested: str) -> Slot:
    slot = svc.pick(requested)
    if slot.generator is None:
        raise ApiError(
            400, f"{slot.model.id} is a {slot.model.kind} model: use /predict", "wrong_model_kind"
        )
    return slot


def _sampling(svc: Service, slot: Slot, ids: list[int], body: Any, max_tokens: int) -> Sampling:
    seq_len = slot.model.seq_len
    if len(ids) >= seq_len:
        raise limit_error(
            "messages" if hasattr(body, "messages") else "prompt",
            f"the prompt is {len(ids)} tokens; {slot.model.id} was exported for {seq_len} tokens"
            f" in all, so at most {seq_len - 1} can be prompt",
        )
    if max_tokens > svc.settings.max_tokens_limit:
        raise limit_error(
            "max_tokens", f"at most {svc.settings.max_tokens_limit} tokens per request", max_tokens
        )
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise limit_error("stop", "at most 4 stop strings, none empty", body.stop)
    return Sampling(max_tokens, body.temperature, body.top_p, stop, body.seed)


async def _respond(
    svc: Service, slot: Slot, ids: list[int], body: Any, max_tokens: int, chat: bool
) -> Any:
    sampling = _sampling(svc, slot, ids, body, max_tokens)
    assert slot.generator is not None
    try:
        slot.generator.admit()
    except Busy as exc:
        raise ApiError(
            429, f"server busy: {exc}", "busy", kind="server_error", headers=RETRY
        ) from None
    model = slot.model
    svc.metrics.tokens.labels(model.version, "prompt").inc(len(ids))
    head = {
        "id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12),
        "created": int(time.time()),
        "model": model.id,
        "system_fingerprint": model.version,
    }
    headers = {"X-Model-Version": model.version}
    deltas = slot.generator.stream(ids, sampling)
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _events(head, deltas, chat, len(ids), usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    return await _collect(head, deltas, chat, len(ids), headers)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def _collect(
    head: dict[str, Any],
    deltas: AsyncIterator[Delta],
    chat: bool,
    prompt: int,
    headers: dict[str, str],
) -> JSONResponse:
    parts, last = [], Delta("")
    try:
        async for delta in deltas:
            parts.append(delta.text)
            last = delta
    except Exception:
        log.exception("generation failed")
        raise ApiError(500, FAILED["message"], FAILED["code"], kind="server_error") from None
    text = "".join(parts)
    choice: dict[str, Any] = {"index": 0, "finish_reason": last.finish_reason, "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return JSONResponse(
        {
            **head,
            "object": "chat.completion" if chat else "text_completion",
            "choices": [choice],
            "usage": _usage(prompt, last.completion_tokens),
        },
        headers=headers,
    )


async def _events(
    head: dict[str, Any], deltas: AsyncIterator[Delta], chat: bool, prompt: int, usage: bool
) -> AsyncIterator[str]:
    obj = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return f"data: {json.dumps({**head, 'object': obj, 'choices': choices, **extra})}\n\n"

    if chat:
        yield event(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        )
    completion = 0
    try:
        async for delta in deltas:
            completion = delta.completion_tokens
            if delta.text or delta.finish_reason:
                body: dict[str, Any] = {"content": delta.text} if delta.text else {}
                choice: dict[str, Any] = {"index": 0, "finish_reason": delta.finish_reason}
                choice.update({"delta": body} if chat else {"text": delta.text, "logprobs": None})
                yield event([choice])
    except Exception:  # the 200 has gone out: the stream itself says that it failed
        log.exception("generation failed mid-stream")
        yield f"data: {json.dumps({'error': FAILED})}\n\n"
    else:
        if usage:
            yield event([], usage=_usage(prompt, completion))
    yield "data: [DONE]\n\n"
