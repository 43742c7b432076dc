"""The inference side of the server: one thread runs the model; ``/predict`` requests are
micro-batched onto it; generation runs token by token with bounded concurrency.

Every model call goes through :class:`Runner`, a single worker thread, so backends that are not
thread-safe (TVM's VM, TorchScript modules) are never entered twice, and torch's own intra-op
threads get the cores.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from offline.serve.metrics import Metrics
from offline.serve.models import ServedModel

T = TypeVar("T")


class Busy(Exception):
    """The queue is full: the client should retry after ``retry_after`` seconds."""

    def __init__(self, what: str, retry_after: int = 1) -> None:
        super().__init__(what)
        self.retry_after = retry_after


class Runner:
    """One thread for every model call."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Pending:
    rows: list[str]  # texts
    future: asyncio.Future[Any]
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gathers concurrent ``/predict`` texts into one forward pass: a batch closes when it has
    ``max_batch`` texts or the first request has waited ``max_wait_s``; while a batch runs,
    the next one fills up. The batch is tokenized, run and turned into probabilities on the
    model thread, so the event loop only moves requests."""

    def __init__(
        self,
        model: ServedModel,
        runner: Runner,
        metrics: Metrics,
        *,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
    ) -> None:
        self.model, self.runner, self.metrics = model, runner, metrics
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, rows: list[str]) -> Any:
        """Class probabilities for the texts ``rows``, computed in whatever batch they land
        in."""
        pending = _Pending(rows, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise Busy(f"{self.queue.maxsize} requests are already waiting") from None
        self.metrics.queue_depth.labels(self.model.version).set(self.queue.qsize())
        return await pending.future

    async def _next_batch(self) -> list[_Pending]:
        batch = [await self.queue.get()]
        size = len(batch[0].rows)
        deadline = batch[0].queued + self.max_wait_s
        while size < self.max_batch:
            if self.queue.empty():
                wait = deadline - time.perf_counter()
                if wait <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), wait)
                except TimeoutError:
                    break
            else:
                item = self.queue.get_nowait()
            batch.append(item)
            size += len(item.rows)
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._next_batch()
            self.metrics.queue_depth.labels(self.model.version).set(self.queue.qsize())
            texts = [text for p in batch for text in p.rows]
            self.metrics.batch_size.labels(self.model.version).observe(len(texts))
            try:
                probs = await self.runner.call(self._classify, texts)
            except Exception as exc:  # every caller gets the failure, the loop goes on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            start = 0
            for p in batch:
                if not p.future.done():  # a client that went away
                    p.future.set_result(probs[start : start + len(p.rows)])
                start += len(p.rows)

    def _classify(self, texts: list[str]) -> Any:
        import numpy as np

        model = self.model
        ids = model.tokenizer(texts, truncation=True, max_length=model.seq_len)["input_ids"]
        padded = model.pad(ids)
        logits = np.concatenate(
            [
                model.forward(padded[i : i + self.max_batch])
                for i in range(0, len(padded), self.max_batch)
            ]
        )
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        return probs / probs.sum(axis=1, keepdims=True)


# -- generation --------------------------------------------------------------------------------


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Delta:
    text: str
    finish_reason: str | None = None  # "stop" or "length" on the last delta
    completion_tokens: int = 0


def choose(logits: Any, sampling: Sampling, rng: Any) -> int:
    """The next token: greedy at temperature 0, else nucleus sampling at ``top_p``."""
    import numpy as np

    if sampling.temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / sampling.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if sampling.top_p < 1.0:
        order = np.argsort(-probs)
        keep = np.searchsorted(np.cumsum(probs[order]), sampling.top_p) + 1
        mask = np.zeros_like(probs)
        mask[order[:keep]] = probs[order[:keep]]
        probs = mask / mask.sum()
    return int(rng.choice(len(probs), p=probs))


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could still become a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                longest = max(longest, n)
                break
    return longest


class Generator:
    """Token-by-token generation at the export's fixed length: each step is one forward pass
    of the padded sequence (the exported artifacts carry no KV cache); at most
    ``max_concurrent`` generations run, ``max_queue`` more may wait."""

    def __init__(
        self,
        model: ServedModel,
        runner: Runner,
        metrics: Metrics,
        *,
        max_concurrent: int,
        max_queue: int,
    ) -> None:
        self.model, self.runner, self.metrics = model, runner, metrics
        self._slots = asyncio.Semaphore(max_concurrent)
        self.max_queue = max_queue
        self.waiting = 0

    def admit(self) -> None:
        """Raise :class:`Busy` when too many generations are already waiting."""
        if self.waiting >= self.max_queue:
            raise Busy(f"{self.waiting} generations are already waiting")

    def _last_logits(self, ids: list[int]) -> Any:
        return self.model.forward(self.model.pad([ids]))[0, len(ids) - 1]

    async def stream(self, prompt: list[int], sampling: Sampling) -> AsyncIterator[Delta]:
        """Text deltas as they are decoded; the last one carries the finish reason."""
        import numpy as np

        rng = np.random.default_rng(sampling.seed)
        tok, eos = self.model.tokenizer, self.model.eos_id
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            ids, sent, finish, text = list(prompt), 0, "length", ""
            out: list[int] = []
            while len(out) < sampling.max_tokens and len(ids) < self.model.seq_len:
                logits = await self.runner.call(self._last_logits, ids)
                token = choose(logits, sampling, rng)
                if token == eos:
                    finish = "stop"
                    break
                ids.append(token)
                out.append(token)
                text = tok.decode(out, skip_special_tokens=True)
                cut = min((text.find(s) for s in sampling.stop if s in text), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
                    break
                ready = len(text) - _held_back(text, sampling.stop)
                if text.endswith("\ufffd"):  # half of a multi-byte character
                    ready = min(ready, len(text) - 1)
                if ready > sent:
                    yield Delta(text[sent:ready], completion_tokens=len(out))
                    sent = ready
            self.metrics.tokens.labels(self.model.version, "completion").inc(len(out))
            yield Delta(text[sent:], finish, len(out))
        finally:
            self._slots.release()
