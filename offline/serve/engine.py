"""The inference side of the server: one thread runs the model; ``/predict`` requests are
micro-batched onto it; generation runs token by token with bounded concurrency.

Every model call goes through :class:`Runner`, a single worker thread, so backends that are not
thread-safe (TVM's VM, TorchScript modules) are never entered twice, and torch's own intra-op
threads get the cores. A batch is many requests, but a failure belongs to one: a request that
cannot be tokenized, or whose forward pass fails on its own, fails alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from offline.serve.generation import Delta, Sampling, Step, pick, texts
from offline.serve.metrics import Metrics
from offline.serve.models import ServedModel

T = TypeVar("T")


class Busy(Exception):
    """The queue is full: the client should retry after ``retry_after`` seconds."""

    def __init__(self, what: str, retry_after: int = 1) -> None:
        super().__init__(what)
        self.retry_after = retry_after


class BadInput(Exception):
    """One request's input that the model cannot take: a 422 for that request alone."""


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
            self.metrics.batch_size.labels(self.model.version).observe(
                sum(len(p.rows) for p in batch)
            )
            try:
                results = await self.runner.call(self._classify, [p.rows for p in batch])
            except Exception as exc:  # the model thread itself failed: every caller is told
                results = [exc] * len(batch)
            for p, result in zip(batch, results, strict=True):
                if p.future.done():  # a client that went away
                    continue
                if isinstance(result, Exception):
                    p.future.set_exception(result)
                else:
                    p.future.set_result(result)

    def _classify(self, requests: list[list[str]]) -> list[Any]:
        """Class probabilities for each request's texts, or the exception that request alone
        caused: a request the tokenizer refuses, or one whose forward pass fails when run on its
        own, fails by itself while its batch neighbours get their answers."""
        results: list[Any] = [self._tokenize(rows) for rows in requests]
        good = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
        try:
            answers = self._probabilities([results[i] for i in good])
        except Exception:  # one at a time, so the failure stays with the request that caused it
            answers = [self._alone(results[i]) for i in good]
        for i, answer in zip(good, answers, strict=True):
            results[i] = answer
        return results

    def _tokenize(self, rows: list[str]) -> list[list[int]] | BadInput:
        model = self.model
        try:
            encoded = model.tokenizer(rows, truncation=True, max_length=model.seq_len)
        except Exception as exc:
            return BadInput(f"the tokenizer cannot encode these texts ({exc}): send plain text")
        ids: list[list[int]] = encoded["input_ids"]
        return ids

    def _alone(self, ids: list[list[int]]) -> Any:
        try:
            return self._probabilities([ids])[0]
        except Exception as exc:
            return exc

    def _probabilities(self, requests: list[list[list[int]]]) -> list[Any]:
        """One softmax row per text, in runs of at most ``max_batch`` rows, split back into
        requests."""
        import numpy as np

        if not requests:
            return []
        model = self.model
        padded = model.pad([ids for rows in requests for ids in rows])
        logits = np.concatenate(
            [
                model.forward(padded[i : i + self.max_batch])
                for i in range(0, len(padded), self.max_batch)
            ]
        )
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        return np.split(probs, np.cumsum([len(rows) for rows in requests])[:-1])


# -- generation at the export's fixed length ---------------------------------------------------


class Generator:
    """Token-by-token generation for an artifact (TorchScript, pt2, TVM): each step is one
    forward pass of the padded sequence at the export's fixed length, as those artifacts carry
    no KV cache; at most ``max_concurrent`` generations run, ``max_queue`` more may wait. An
    eager causal LM is served by :class:`offline.serve.batching.ContinuousBatcher` instead."""

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
        self.max_context = model.seq_len
        self.waiting = 0

    def admit(self, count: int = 1) -> None:
        """Raise :class:`Busy` when ``count`` more generations would overflow the queue."""
        if self.waiting + count > self.max_queue:
            raise Busy(f"{self.waiting} generations are already waiting")

    def _last_logits(self, ids: list[int]) -> Any:
        import torch

        return torch.from_numpy(self.model.forward(self.model.pad([ids]))[0, len(ids) - 1])

    async def stream(self, prompt: list[int], sampling: Sampling) -> AsyncGenerator[Delta, None]:
        """Text deltas as they are decoded; the last one carries the finish reason."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        out = 0
        try:
            async for delta in texts(self._steps(prompt, sampling), self.model.tokenizer, sampling):
                out = delta.completion_tokens
                yield delta
        finally:
            self._slots.release()
            self.metrics.tokens.labels(self.model.version, "completion").inc(out)

    async def _steps(self, prompt: list[int], sampling: Sampling) -> AsyncIterator[Step]:
        import numpy as np

        rng = np.random.default_rng(None if sampling.seed is None else sampling.seed % 2**64)
        ids, counts = list(prompt), dict[int, int]()
        seen = None
        if sampling.repetition_penalty != 1.0:
            import torch

            seen = torch.tensor(prompt, dtype=torch.long)
        produced = 0
        while True:
            logits = await self.runner.call(self._last_logits, ids)
            step = pick(logits, sampling, rng, counts, seen)
            if step.token in sampling.stop_ids:
                step.finish = "stop"
                yield step
                return
            ids.append(step.token)
            produced += 1
            counts[step.token] = counts.get(step.token, 0) + 1
            if seen is not None:
                import torch

                seen = torch.cat([seen, torch.tensor([step.token])])
            if produced >= sampling.max_tokens or len(ids) >= self.model.seq_len:
                step.finish = "length"
            yield step
            if step.finish:
                return
