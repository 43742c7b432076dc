"""What every generation engine shares: the sampling settings of a request, the choice of the
next token, and turning the tokens an engine produces into text deltas (stop strings, stop ids,
half-decoded characters, log-probabilities)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

GREEDY_BELOW = 1e-5  # a temperature this low makes the softmax one-hot: take the argmax
MAX_TOP_LOGPROBS = 20  # what OpenAI allows


class GenerationError(Exception):
    """The model's output cannot be decoded (no finite logit): a server fault, not the request's."""


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None  # any integer: taken modulo 2**64 for numpy
    top_k: int = 0  # 0: every token
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # transformers' (1.0: none), from generation_config.json
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: and the k most likely
    stop_ids: frozenset[int] = frozenset()


@dataclass
class Step:
    """One token an engine produced for one sequence."""

    token: int
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None
    finish: str | None = None  # on the last: "stop" (token is a stop id, not shown) or "length"


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]]


@dataclass
class Delta:
    text: str
    finish_reason: str | None = None  # "stop" or "length" on the last delta
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)


def penalized(logits: Any, sampling: Sampling, counts: dict[int, int], seen: Any) -> Any:
    """``logits`` (a float torch vector) with the request's penalties: OpenAI's presence and
    frequency penalties over the tokens generated so far (``counts``), and transformers'
    repetition penalty over the prompt and them (``seen``, a tensor of ids)."""
    import torch

    if sampling.repetition_penalty != 1.0 and len(seen):
        picked = logits[seen]
        rp = sampling.repetition_penalty
        logits[seen] = torch.where(picked > 0, picked / rp, picked * rp)
    if counts and (sampling.presence_penalty or sampling.frequency_penalty):
        ids = torch.tensor(list(counts), dtype=torch.long, device=logits.device)
        n = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
        logits[ids] -= sampling.frequency_penalty * n + sampling.presence_penalty
    if 0 < sampling.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sampling.top_k).values[-1]
        logits[logits < kth] = -math.inf
    return logits


def choose(logits: Any, sampling: Sampling, rng: Any) -> int:
    """The next token: greedy below :data:`GREEDY_BELOW`, else nucleus sampling at ``top_p``.

    The softmax is taken relative to the largest logit, so any temperature or logit scale gives
    probabilities in [0, 1] with the best token at 1 (never NaN or inf); a NaN logit is never
    chosen, and a ``-inf`` one (a masked token) has probability 0.
    """
    import numpy as np

    logits = np.where(np.isnan(logits), -np.inf, logits.astype(np.float64))
    best = int(np.argmax(logits))
    if np.isneginf(logits[best]):
        raise GenerationError(f"the model returned no finite logit among {len(logits)}")
    if sampling.temperature < GREEDY_BELOW or np.isposinf(logits[best]):
        return best
    with np.errstate(over="ignore", under="ignore"):  # both round to the right answer
        probs = np.exp((logits - logits[best]) / sampling.temperature)
    probs /= probs.sum()  # >= 1: the best token contributes exactly 1
    if sampling.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        keep = int(np.searchsorted(np.cumsum(probs[order]), sampling.top_p)) + 1
        kept = np.zeros_like(probs)
        kept[order[:keep]] = probs[order[:keep]]
        probs = kept / kept.sum()  # the best token is always kept
    return int(rng.choice(len(probs), p=probs))


def pick(logits: Any, sampling: Sampling, rng: Any, counts: dict[int, int], seen: Any) -> Step:
    """The next token from one row of raw logits (a torch vector), with its log-probability
    under the model's own distribution when the request asks for it."""
    import torch

    raw = logits.float()
    logprob, top = None, None
    token = choose(penalized(raw.clone(), sampling, counts, seen).cpu().numpy(), sampling, rng)
    if sampling.logprobs is not None:
        logp = torch.log_softmax(raw, -1)
        logprob = max(float(logp[token]), -9999.0)
        if sampling.logprobs:
            values, ids = torch.topk(logp, sampling.logprobs)
            top = [(int(i), max(float(v), -9999.0)) for v, i in zip(values, ids, strict=True)]
    return Step(token, logprob, top)


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could still become a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                longest = max(longest, n)
                break
    return longest


def _token_logprob(tok: Any, step: Step) -> TokenLogprob:
    def piece(token: int) -> tuple[str, list[int]]:
        text = tok.decode([token])
        return text, list(text.encode("utf-8", "replace"))

    text, raw = piece(step.token)
    top = [(*piece(t), lp) for t, lp in step.top or []]
    return TokenLogprob(text, step.logprob or 0.0, raw, [(t, lp, b) for t, b, lp in top])


async def texts(steps: AsyncIterator[Step], tok: Any, sampling: Sampling) -> AsyncIterator[Delta]:
    """Text deltas from an engine's tokens; the last carries the finish reason.

    Detokenizing is incremental (only the tokens since the last piece that ended on a whole
    character are decoded again), so a long reply costs linear time; text that could still turn
    into a stop string is held back until it cannot.
    """
    out: list[int] = []
    prefix, read = 0, 0  # out[prefix:read] has been shown; decoded again for context
    text, sent, finish, cut_off = "", 0, "length", False
    pending: list[TokenLogprob] = []
    longest = max((len(s) for s in sampling.stop), default=0)
    async for step in steps:
        if step.finish == "stop":  # a stop id: neither shown nor counted
            finish = "stop"
            break
        out.append(step.token)
        if step.logprob is not None:
            pending.append(_token_logprob(tok, step))
        before = tok.decode(out[prefix:read], skip_special_tokens=True)
        now = tok.decode(out[prefix:], skip_special_tokens=True)
        shown = len(text)
        if len(now) > len(before) and not now.endswith("\ufffd"):
            text += now[len(before) :]
            prefix, read = read, len(out)
        cut = -1
        if sampling.stop:
            window = max(0, shown - longest + 1)
            cut = min((i for s in sampling.stop if (i := text.find(s, window)) >= 0), default=-1)
        if cut >= 0:
            text, finish, cut_off = text[:cut], "stop", True
            break
        if step.finish:
            finish = step.finish
            break
        ready = len(text) - held_back(text, sampling.stop)
        if ready > sent:
            yield Delta(text[sent:ready], completion_tokens=len(out), logprobs=pending)
            sent, pending = ready, []
    if not cut_off and read < len(out):  # the reply ends inside a character: show what is there
        whole = tok.decode(out[prefix:], skip_special_tokens=True)
        text += whole[len(tok.decode(out[prefix:read], skip_special_tokens=True)) :]
    yield Delta(text[sent:], finish, len(out), pending)
