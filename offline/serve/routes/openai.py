"""``POST /v1/completions`` and ``POST /v1/chat/completions`` in OpenAI's wire format, with
``stream: true`` as server-sent events ending in ``data: [DONE]`` (after an ``error`` event
when the model fails half way, since the status line has already gone out)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from offline.serve.engine import Busy
from offline.serve.generation import MAX_TOP_LOGPROBS, Delta, Sampling, TokenLogprob
from offline.serve.schemas import ChatRequest, CompletionRequest
from offline.serve.service import RETRY, ApiError, KeyId, Service, Slot, Svc, limit_error

router = APIRouter(tags=["openai"])
log = logging.getLogger("offline.serve")
FAILED = {  # what a client is told when the model fails; the server log has the traceback
    "message": "the model failed while generating: see the server log",
    "type": "server_error",
    "code": "generation_failed",
}
DISCONNECT_POLL_S = 0.25
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no valid API key"},
    404: {"description": "unknown model"},
    413: {"description": "body too large"},
    429: {"description": "too many generations waiting; retry after Retry-After seconds"},
}


@router.post("/v1/completions", responses=ERRORS)
async def completions(request: Request, body: CompletionRequest, svc: Svc, _key: KeyId) -> Any:
    """Continue a prompt."""
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise limit_error("prompt", "one prompt per request", len(body.prompt))
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    slot = _generation_slot(svc, body.model)
    if body.echo:
        raise limit_error("echo", "echo is not supported: send echo false", True)
    ids = slot.model.tokenizer(prompt)["input_ids"] or [_start_token(slot)]
    return await _respond(request, svc, slot, ids, body, body.max_tokens or 16, chat=False)


@router.post("/v1/chat/completions", responses=ERRORS)
async def chat_completions(request: Request, body: ChatRequest, svc: Svc, _key: KeyId) -> Any:
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
    return await _respond(request, svc, slot, ids, body, wanted, chat=True, prompt_text=text)


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


def _sampling(
    svc: Service, slot: Slot, ids: list[int], body: Any, max_tokens: int | None
) -> Sampling:
    assert slot.generator is not None
    context = slot.generator.max_context
    field_name = "messages" if hasattr(body, "messages") else "prompt"
    if len(ids) >= context:
        raise limit_error(
            field_name,
            f"the prompt is {len(ids)} tokens; {slot.model.id} holds {context} tokens in all"
            f" (prompt and reply), so at most {context - 1} can be prompt",
        )
    room = context - len(ids)
    limit = svc.settings.max_tokens_limit
    if max_tokens is None:
        max_tokens = min(room, limit or room)
    elif limit is not None and max_tokens > limit:
        raise limit_error("max_tokens", f"at most {limit} tokens per request", max_tokens)
    elif max_tokens > room:
        raise limit_error(
            "max_tokens",
            f"the prompt is {len(ids)} tokens and {slot.model.id} holds {context}: at most"
            f" {room} tokens of reply, not {max_tokens}",
            max_tokens,
        )
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise limit_error("stop", "at most 4 stop strings, none empty", body.stop)
    if body.n > svc.settings.max_sequences:
        raise limit_error("n", f"at most {svc.settings.max_sequences} choices", body.n)
    defaults = slot.model.defaults

    def given(name: str, fallback: Any) -> Any:
        value = getattr(body, name)
        return value if value is not None else defaults.get(name, fallback)

    logprobs: int | None
    if hasattr(body, "messages"):
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        if body.top_logprobs and not body.logprobs:
            raise limit_error(
                "top_logprobs", "top_logprobs needs logprobs: true", body.top_logprobs
            )
    else:
        logprobs = body.logprobs
    return Sampling(
        max_tokens,
        given("temperature", 1.0),
        given("top_p", 1.0),
        stop,
        body.seed,
        top_k=given("top_k", 0),
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=given("repetition_penalty", 1.0),
        logprobs=min(logprobs, MAX_TOP_LOGPROBS) if logprobs is not None else None,
        stop_ids=slot.model.stop_ids,
    )


def _thinks(slot: Slot, prompt_text: str | None) -> str | None:
    """How replies carry reasoning to return as ``reasoning_content``: "opened" when the prompt
    ends inside a ``<think>`` block (DeepSeek-R1's template opens one), "maybe" when the model
    knows the tag (a reply may open with it), None otherwise."""
    if prompt_text is None:
        return None
    if prompt_text.rstrip().endswith(Reasoning.OPEN):
        return "opened"
    return "maybe" if Reasoning.CLOSE in slot.model.tokenizer.get_vocab() else None


class Reasoning:
    """Splits a reply into its reasoning (before ``</think>``) and its answer, as DeepSeek's
    API returns them; the tags and the blank lines around them are neither. Fed piece by piece,
    it holds back what could still be the start of a tag."""

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self, how: str | None) -> None:
        self.state = "thinking" if how == "opened" else "start"
        self.buffer = ""
        self.fresh = True  # no reasoning given out yet: its leading newlines are dropped

    def feed(self, text: str, final: bool = False) -> tuple[str, str]:
        self.buffer += text
        reasoning: list[str] = []
        content: list[str] = []
        while True:
            if self.state == "start":
                stripped = self.buffer.lstrip()
                if stripped.startswith(self.OPEN):
                    self.buffer, self.state = stripped[len(self.OPEN) :], "thinking"
                    continue
                if not final and self.OPEN.startswith(stripped):
                    break  # could still be the tag
                self.state = "answer"
                continue
            if self.state == "thinking":
                if self.fresh:
                    self.buffer = self.buffer.lstrip("\n")
                    self.fresh = not self.buffer
                end = self.buffer.find(self.CLOSE)
                if end >= 0:
                    reasoning.append(self.buffer[:end].rstrip("\n"))
                    self.buffer, self.state = self.buffer[end + len(self.CLOSE) :], "after"
                    continue
                # held back: what could begin the tag, and the newlines that would go before it
                keep = 0 if final else _partial(self.buffer, self.CLOSE)
                cut = (
                    len(self.buffer[: len(self.buffer) - keep].rstrip("\n"))
                    if not final
                    else len(self.buffer)
                )
                reasoning.append(self.buffer[:cut])
                self.buffer = self.buffer[cut:]
                break
            if self.state == "after":
                self.buffer = self.buffer.lstrip("\n")
                if not self.buffer:
                    break
                self.state = "answer"
                continue
            content.append(self.buffer)
            self.buffer = ""
            break
        return "".join(reasoning), "".join(content)


def _partial(text: str, tag: str) -> int:
    """How many trailing characters of ``text`` could begin ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


async def _respond(
    request: Request,
    svc: Service,
    slot: Slot,
    ids: list[int],
    body: Any,
    max_tokens: int | None,
    chat: bool,
    prompt_text: str | None = None,
) -> Any:
    sampling = _sampling(svc, slot, ids, body, max_tokens)
    generator = slot.generator
    assert generator is not None
    try:
        generator.admit(body.n)
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
    thinks = _thinks(slot, prompt_text) if chat else None
    streams = [generator.stream(ids, _nth(sampling, i)) for i in range(body.n)]
    if body.stream:
        usage = bool(body.stream_options and body.stream_options.include_usage)
        events = _events(head, streams, chat, len(ids), usage, thinks)
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    wanted = sampling.logprobs is not None
    return await _collect(head, streams, chat, len(ids), headers, thinks, wanted, request)


def _nth(sampling: Sampling, i: int) -> Sampling:
    """The sampling of choice ``i``: its own seed, so n choices of a seeded request differ."""
    if i == 0 or sampling.seed is None:
        return sampling
    from dataclasses import replace

    return replace(sampling, seed=sampling.seed + i)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chat_logprobs(items: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": t.token,
            "logprob": t.logprob,
            "bytes": t.bytes,
            "top_logprobs": [{"token": a, "logprob": b, "bytes": c} for a, b, c in t.top],
        }
        for t in items
    ]


def _text_logprobs(items: list[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets = []
    for t in items:
        offsets.append(offset)
        offset += len(t.token)
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [{a: b for a, b, _ in t.top} for t in items],
        "text_offset": offsets,
    }


async def _collect(
    head: dict[str, Any],
    streams: list[AsyncGenerator[Delta, None]],
    chat: bool,
    prompt: int,
    headers: dict[str, str],
    thinks: str | None,
    wanted: bool,
    request: Request,
) -> JSONResponse:
    async def one(deltas: AsyncIterator[Delta]) -> tuple[str, Delta, list[TokenLogprob]]:
        parts, last, probs = [], Delta(""), []
        async for delta in deltas:
            parts.append(delta.text)
            probs.extend(delta.logprobs)
            last = delta
        return "".join(parts), last, probs

    work = asyncio.ensure_future(asyncio.gather(*(one(d) for d in streams)))
    try:
        while not work.done():  # a client that hangs up frees its slots at once
            await asyncio.wait([work], timeout=DISCONNECT_POLL_S)
            if not work.done() and await request.is_disconnected():
                work.cancel()
                raise ApiError(499, "the client closed the connection", "client_closed")
        results = work.result()
    except ApiError:
        raise
    except Exception:
        log.exception("generation failed")
        raise ApiError(500, FAILED["message"], FAILED["code"], kind="server_error") from None
    finally:
        if not work.done():
            work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        for deltas in streams:
            await deltas.aclose()
    choices, completion = [], 0
    for i, (text, last, probs) in enumerate(results):
        completion += last.completion_tokens
        choice: dict[str, Any] = {"index": i, "finish_reason": last.finish_reason}
        if chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinks:
                reasoning, content = Reasoning(thinks).feed(text, final=True)
                message["content"], message["reasoning_content"] = content, reasoning
            choice["message"] = message
            choice["logprobs"] = {"content": _chat_logprobs(probs)} if wanted else None
        else:
            choice["text"] = text
            choice["logprobs"] = _text_logprobs(probs, 0) if wanted else None
        choices.append(choice)
    return JSONResponse(
        {
            **head,
            "object": "chat.completion" if chat else "text_completion",
            "choices": choices,
            "usage": _usage(prompt, completion),
        },
        headers=headers,
    )


async def _events(
    head: dict[str, Any],
    streams: list[AsyncGenerator[Delta, None]],
    chat: bool,
    prompt: int,
    usage: bool,
    thinks: str | None,
) -> AsyncIterator[str]:
    obj = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return f"data: {json.dumps({**head, 'object': obj, 'choices': choices, **extra})}\n\n"

    merged: asyncio.Queue[tuple[int, Delta | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, deltas: AsyncIterator[Delta]) -> None:
        try:
            async for delta in deltas:
                await merged.put((i, delta))
        except Exception as exc:
            await merged.put((i, exc))
        else:
            await merged.put((i, None))

    if chat:
        yield event(
            [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                for i in range(len(streams))
            ]
        )
    tasks = [asyncio.create_task(pump(i, d)) for i, d in enumerate(streams)]
    splitters = [Reasoning(thinks) for _ in streams]
    completion, offsets = [0] * len(streams), [0] * len(streams)
    running = len(streams)
    try:
        while running:
            i, item = await merged.get()
            if item is None:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            delta = item
            completion[i] = delta.completion_tokens
            if not (delta.text or delta.finish_reason or delta.logprobs):
                continue
            choice: dict[str, Any] = {"index": i, "finish_reason": delta.finish_reason}
            if chat:
                body: dict[str, Any] = {}
                if thinks:
                    reasoning, content = splitters[i].feed(delta.text, bool(delta.finish_reason))
                    if reasoning:
                        body["reasoning_content"] = reasoning
                    if content:
                        body["content"] = content
                elif delta.text:
                    body["content"] = delta.text
                choice["delta"] = body
                choice["logprobs"] = (
                    {"content": _chat_logprobs(delta.logprobs)} if delta.logprobs else None
                )
            else:
                choice["text"] = delta.text
                choice["logprobs"] = (
                    _text_logprobs(delta.logprobs, offsets[i]) if delta.logprobs else None
                )
                offsets[i] += len(delta.text)
            yield event([choice])
    except Exception:  # the 200 has gone out: the stream itself says that it failed
        log.exception("generation failed mid-stream")
        yield f"data: {json.dumps({'error': FAILED})}\n\n"
    else:
        if usage:
            yield event([], usage=_usage(prompt, sum(completion)))
    finally:  # a client gone: every choice's sequence gives its slot back at once
        for task in tasks:
            task.cancel()
        for deltas in streams:
            await deltas.aclose()
    yield "data: [DONE]\n\n"
