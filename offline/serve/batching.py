"""Continuous batching over a KV cache: how ``offline serve`` generates with an eager causal LM.

One scheduler owns the model. Between two steps it admits waiting sequences; each step reads a
chunk of the prompts not yet in the cache (chunked prefill: at most ``prefill_chunk`` prompt
tokens a step, so a long prompt never holds the others up for long), then runs the next token
of every decoding sequence in one batched call of the model.

The cache is static: ``slots`` sequences of up to ``max_context`` tokens each, allocated in the
model's dtype when the server starts, so its memory is known before the first request and a
full server answers 429 with Retry-After instead of running out of memory. Occupied slots are
kept at the front (a sequence that ends hands its slot to the last one), so a decode step reads
every slot's keys and values as views of the cache, without copying them. Each sequence writes
at its own position; a 4-D attention mask keeps it to its own tokens.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from offline.errors import ConfigError
from offline.serve.engine import Busy, Runner
from offline.serve.generation import Delta, Sampling, Step, pick, texts
from offline.serve.metrics import Metrics
from offline.serve.models import ServedModel

log = logging.getLogger("offline.serve")


class SlotCache:
    """Keys and values of ``slots`` sequences, ``context`` positions each (plus one scratch
    column that rows with nothing to decode write to), one pair of tensors per layer.

    It stands in for a transformers ``Cache``: the model calls :meth:`update` in every layer
    with the new keys and values; the :attr:`plan` of the current call says where they go."""

    def __init__(self, shapes: list[tuple[Any, Any]], slots: int, context: int, device: Any):
        import torch

        self.slots, self.context = slots, context
        self.keys, self.values = [], []
        for key_shape, value_shape in shapes:  # (heads, dim, dtype) of one token, per layer
            (kh, kd, dtype), (vh, vd, _) = key_shape, value_shape
            self.keys.append(torch.zeros(slots, kh, context + 1, kd, dtype=dtype, device=device))
            self.values.append(torch.zeros(slots, vh, context + 1, vd, dtype=dtype, device=device))
        self.plan: Plan | None = None

    @staticmethod
    def bytes_per_token(shapes: list[tuple[Any, Any]]) -> int:
        import torch

        total = 0
        for (kh, kd, dtype), (vh, vd, _) in shapes:
            total += (kh * kd + vh * vd) * torch.empty((), dtype=dtype).element_size()
        return total

    def update(
        self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[Any, Any]:
        plan = self.plan
        assert plan is not None
        k, v = self.keys[layer_idx], self.values[layer_idx]
        if plan.decode:  # one new token per row, rows = slots 0..n-1
            rows = plan.rows
            k[rows, :, plan.writes] = key_states[:, :, 0]
            v[rows, :, plan.writes] = value_states[:, :, 0]
            n = key_states.shape[0]
            return k[:n, :, : plan.keys], v[:n, :, : plan.keys]
        width = key_states.shape[2]
        for i, (slot, start, count) in enumerate(plan.prefill):
            k[slot, :, start : start + count] = key_states[i, :, width - count :]
            v[slot, :, start : start + count] = value_states[i, :, width - count :]
        if len(plan.prefill) == 1:
            slot = plan.prefill[0][0]
            return k[slot : slot + 1, :, : plan.keys], v[slot : slot + 1, :, : plan.keys]
        return k[plan.rows, :, : plan.keys], v[plan.rows, :, : plan.keys]

    def move(self, source: int, dest: int, length: int) -> None:
        for k, v in zip(self.keys, self.values, strict=True):
            k[dest, :, :length] = k[source, :, :length]
            v[dest, :, :length] = v[source, :, :length]

    # what transformers may ask of a cache; positions and masks are always given here
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class Plan:
    decode: bool
    rows: Any  # a long tensor of slots
    keys: int  # key positions the attention sees
    writes: Any = None  # decode: the position each row writes
    prefill: list[tuple[int, int, int]] = field(default_factory=list)  # (slot, start, count)


class Sequence:
    """One generation: its prompt, what it has produced, where it is in the cache."""

    def __init__(self, prompt: list[int], sampling: Sampling, loop: asyncio.AbstractEventLoop):
        import numpy as np

        self.prompt, self.sampling = prompt, sampling
        self.queue: asyncio.Queue[Step | BaseException] = asyncio.Queue()
        self.loop = loop
        self.rng = np.random.default_rng(None if sampling.seed is None else sampling.seed % 2**64)
        self.slot = -1
        self.cached = 0  # tokens of this sequence in the cache
        self.generated: list[int] = []
        self.counts: dict[int, int] = {}
        self.next: int | None = None  # sampled, not yet in the cache
        self.done = False
        self.cancelled = False
        self.arrived = time.perf_counter()
        self.seen: Any = None  # prompt + generated ids, for the repetition penalty

    @property
    def prefilling(self) -> bool:
        return self.cached < len(self.prompt)


class ContinuousBatcher:
    """The scheduler of one eager causal LM (see the module's docstring)."""

    def __init__(
        self,
        model: ServedModel,
        runner: Runner,
        metrics: Metrics,
        *,
        max_sequences: int,
        max_context: int,
        kv_cache_bytes: int,
        prefill_chunk: int,
        max_queue: int,
    ) -> None:
        self.model, self.runner, self.metrics = model, runner, metrics
        self.lm = model.lm
        self.decoder = model.decoder  # a decoder artifact, in place of the eager model
        self.max_context = max_context
        self.prefill_chunk = prefill_chunk
        self.max_queue = max_queue
        self.wanted_sequences, self.kv_cache_bytes = max_sequences, kv_cache_bytes
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.active: list[Sequence] = []  # active[i].slot == i
        self.cache: SlotCache | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- set-up ----------------------------------------------------------------------------
    def allocate(self) -> None:
        """Measure one token's keys and values and allocate the cache (on the model thread).

        Raises:
            ConfigError: the memory allowed for the cache cannot hold one sequence.
        """
        import torch

        columns = self.max_context
        if self.decoder is not None:  # its card says what one token of its cache holds
            device = torch.device("cpu")
            shapes = [
                ((kh, kd, torch.float32), (vh, vd, torch.float32))
                for kh, kd, vh, vd in self.decoder.shapes
            ]
            if not self.decoder.batched:  # a TVM library takes exactly its own cache width
                columns = self.decoder.columns - 1
        else:
            device = next(self.lm.parameters()).device
            shapes = self._probe(device)
        per_token = SlotCache.bytes_per_token(shapes)
        per_sequence = per_token * (columns + 1)
        fits = self.kv_cache_bytes // per_sequence
        if fits < 1:
            raise ConfigError(
                f"a KV cache of {self.kv_cache_bytes / 2**20:.0f} MiB cannot hold one sequence"
                f" of {self.max_context} tokens ({per_sequence / 2**20:.0f} MiB)",
                fix="raise --kv-cache-mb or lower --max-context",
            )
        slots = min(self.wanted_sequences, fits)
        if slots < self.wanted_sequences:
            log.warning(
                "the KV cache holds %d sequences of %d tokens, not %d: raise --kv-cache-mb to"
                " run more at once",
                slots,
                self.max_context,
                self.wanted_sequences,
            )
        self.cache = SlotCache(shapes, slots, columns, device)
        self.metrics.kv_slots.labels(self.model.version).set(slots)
        log.info(
            "KV cache: %d sequences x %d tokens, %.0f MiB",
            slots,
            self.max_context,
            slots * per_sequence / 2**20,
        )

    def _probe(self, device: Any) -> list[tuple[Any, Any]]:
        """(heads, dim, dtype) of one token's keys and values, per layer, as the model
        caches them."""
        import torch
        from transformers import DynamicCache

        probe = DynamicCache(config=self.lm.config)
        with torch.inference_mode():
            self.lm(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), cache=probe)
        shapes = []
        layer: Any
        for layer in probe.layers:
            k, v = layer.keys, layer.values
            shapes.append(((k.shape[1], k.shape[3], k.dtype), (v.shape[1], v.shape[3], v.dtype)))
        return shapes

    @property
    def slots(self) -> int:
        return self.cache.slots if self.cache else self.wanted_sequences

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- the request side ------------------------------------------------------------------
    def admit(self, count: int = 1) -> None:
        """Raise :class:`Busy` when ``count`` more sequences would overflow the queue."""
        if len(self.waiting) + count > self.max_queue:
            raise Busy(
                f"all {self.slots} sequences of the KV cache are in use and"
                f" {len(self.waiting)} more are waiting"
            )

    async def stream(self, prompt: list[int], sampling: Sampling) -> AsyncGenerator[Delta, None]:
        """Text deltas as they are decoded; the last one carries the finish reason. A caller
        that stops reading (a client gone) frees the sequence's slot at the next step."""
        seq = Sequence(prompt, sampling, asyncio.get_running_loop())
        self.waiting.append(seq)
        self._set_gauges()
        self._wake.set()
        out = 0
        try:
            async for delta in texts(self._steps(seq), self.model.tokenizer, sampling):
                out = delta.completion_tokens
                yield delta
        finally:
            seq.cancelled = True
            self._wake.set()
            self.metrics.tokens.labels(self.model.version, "completion").inc(out)

    async def _steps(self, seq: Sequence) -> AsyncIterator[Step]:
        while True:
            item = await seq.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish:
                return

    async def _loop(self) -> None:
        while True:
            if not self.active and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            try:
                events = await self.runner.call(self._step)
            except Exception as exc:  # the model failed: every sequence it held is told
                log.exception("a generation step failed")
                for seq in [*self.active, *self.waiting]:
                    seq.queue.put_nowait(exc)
                self.active.clear()
                self.waiting.clear()
                events = []
            for seq, step in events:
                seq.queue.put_nowait(step)
            self._set_gauges()
            await asyncio.sleep(0)  # let the streams send what they got

    def _set_gauges(self) -> None:
        version = self.model.version
        self.metrics.sequences.labels(version, "running").set(len(self.active))
        self.metrics.sequences.labels(version, "waiting").set(len(self.waiting))

    # -- the model thread ------------------------------------------------------------------
    def _step(self) -> list[tuple[Sequence, Step]]:
        """Admit, prefill a chunk, decode one token for every decoding sequence."""
        assert self.cache is not None
        for seq in list(self.active):
            if seq.cancelled or seq.done:
                self._release(seq)
        while self.waiting and len(self.active) < self.cache.slots:
            seq = self.waiting.popleft()
            if not seq.cancelled:
                seq.slot = len(self.active)
                self.active.append(seq)
                self.metrics.queue_seconds.labels(self.model.version).observe(
                    time.perf_counter() - seq.arrived
                )
        events: list[tuple[Sequence, Step]] = []
        budget, rows = self.prefill_chunk, []
        for seq in self.active:
            if seq.prefilling and budget > 0:
                count = min(len(seq.prompt) - seq.cached, budget)
                rows.append((seq, seq.cached, count))
                budget -= count
        if rows:
            self._prefill(rows, events)
        deciding = [s for s in self.active if s.next is not None and not s.done]
        if deciding:
            self._decode(deciding, events)
        for seq in list(self.active):
            if seq.done:
                self._release(seq)
        return events

    def _release(self, seq: Sequence) -> None:
        assert self.cache is not None
        last = self.active.pop()
        if last is not seq:  # the last sequence takes the freed slot
            self.cache.move(last.slot, seq.slot, last.cached)
            last.slot = seq.slot
            self.active[seq.slot] = last
        seq.slot = -1

    def _prefill(self, rows: list[tuple[Sequence, int, int]], events: list[Any]) -> None:
        import torch

        assert self.cache is not None
        if self.decoder is not None:
            items = [(s.slot, start, s.prompt[start : start + count]) for s, start, count in rows]
            logits = self._run_decoder(items)
            self.metrics.prefill_tokens.labels(self.model.version).inc(sum(c for *_, c in rows))
            for i, (seq, _start, count) in enumerate(rows):
                seq.cached += count
                if not seq.prefilling:
                    events.append((seq, self._sample(seq, logits[i])))
            return
        device = self.cache.keys[0].device
        width = max(count for _, _, count in rows)
        keys = max(start + count for _, start, count in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        positions = torch.zeros(len(rows), width, dtype=torch.long)
        allowed = torch.zeros(len(rows), width, keys, dtype=torch.bool)
        allowed[:, :, 0] = True  # padding queries (on the left) look at one key, and are dropped
        for i, (seq, start, count) in enumerate(rows):
            ids[i, width - count :] = torch.tensor(seq.prompt[start : start + count])
            where = torch.arange(start, start + count)
            positions[i, width - count :] = where
            allowed[i, width - count :] = torch.arange(keys)[None, :] <= where[:, None]
        plan = Plan(
            decode=False,
            rows=torch.tensor([s.slot for s, _, _ in rows], device=device),
            keys=keys,
            prefill=[(s.slot, start, count) for s, start, count in rows],
        )
        logits = self._forward(ids, positions, allowed, plan)
        self.metrics.prefill_tokens.labels(self.model.version).inc(sum(c for _, _, c in rows))
        for i, (seq, _start, count) in enumerate(rows):
            seq.cached += count
            if not seq.prefilling:
                events.append((seq, self._sample(seq, logits[i])))

    def _decode(self, deciding: list[Sequence], events: list[Any]) -> None:
        import torch

        assert self.cache is not None
        if self.decoder is not None:
            items = [(s.slot, s.cached, [s.next]) for s in deciding]
            logits = self._run_decoder(items)
            self.metrics.decode_batch.labels(self.model.version).observe(len(deciding))
            for i, seq in enumerate(deciding):
                seq.cached += 1
                events.append((seq, self._sample(seq, logits[i])))
            return
        n = max(s.slot for s in deciding) + 1
        device = self.cache.keys[0].device
        ids = torch.zeros(n, 1, dtype=torch.long)
        positions = torch.zeros(n, 1, dtype=torch.long)
        writes = torch.full((n,), self.cache.context, dtype=torch.long)  # the scratch column
        for seq in deciding:
            assert seq.next is not None
            ids[seq.slot, 0], positions[seq.slot, 0], writes[seq.slot] = (
                seq.next,
                seq.cached,
                seq.cached,
            )
        keys = int(positions.max()) + 1
        # a row with nothing to decode (a prompt half read, a sequence that has ended) looks at
        # one key, writes to the scratch column, and its output is dropped
        allowed = torch.arange(keys)[None, :] <= positions
        plan = Plan(decode=True, rows=torch.arange(n, device=device), keys=keys)
        plan.writes = writes.to(device)
        logits = self._forward(ids, positions, allowed[:, None, :], plan)
        self.metrics.decode_batch.labels(self.model.version).observe(len(deciding))
        for seq in deciding:
            seq.cached += 1
            events.append((seq, self._sample(seq, logits[seq.slot])))

    def _run_decoder(self, items: list[tuple[int, int, list[Any]]]) -> list[Any]:
        """Read ``tokens`` into each ``(slot, start, tokens)`` with the decoder artifact and
        return each row's last logits; the new keys and values go into the cache here."""
        import torch

        assert self.cache is not None and self.decoder is not None
        dec = self.decoder
        flat = [t for pair in zip(self.cache.keys, self.cache.values, strict=True) for t in pair]

        def write(slot: int, start: int, new: list[Any], row: int, count: int) -> None:
            width = new[0].shape[2]
            for cache, fresh in zip(flat, new, strict=True):
                cache[slot, :, start : start + count] = fresh[row, :, width - count :]

        out = []
        with torch.inference_mode():
            if dec.batched:  # one call; rows at the front of the cache are read as views
                width = max(len(tokens) for *_, tokens in items)
                ids = torch.zeros(len(items), width, dtype=torch.long)
                for i, (_, _, tokens) in enumerate(items):
                    ids[i, width - len(tokens) :] = torch.tensor(tokens)
                slots = [slot for slot, *_ in items]
                starts = torch.tensor([start for _, start, _ in items])
                pads = torch.tensor([width - len(tokens) for *_, tokens in items])
                keys = max(int(starts.max()), 1)
                if slots == list(range(len(slots))):
                    past = [t[: len(slots), :, :keys] for t in flat]
                else:
                    index = torch.tensor(slots)
                    past = [t[index, :, :keys] for t in flat]
                logits, new = dec(ids, starts, pads, past)
                for i, (slot, start, tokens) in enumerate(items):
                    write(slot, start, new, i, len(tokens))
                return [logits[i] for i in range(len(items))]
            for slot, start, tokens in items:  # TVM: one row, prefill chunk by chunk
                pos, rest = start, list(tokens)
                while rest:
                    count = min(dec.chunk, len(rest))
                    width = 1 if count == 1 else dec.chunk
                    ids = torch.zeros(1, width, dtype=torch.long)
                    ids[0, width - count :] = torch.tensor(rest[:count])
                    logits, new = dec(
                        ids,
                        torch.tensor([pos]),
                        torch.tensor([width - count]),
                        [t[slot : slot + 1] for t in flat],
                    )
                    write(slot, pos, new, 0, count)
                    pos, rest = pos + count, rest[count:]
                out.append(logits[0].clone())
        return out

    def _forward(self, ids: Any, positions: Any, allowed: Any, plan: Plan) -> Any:
        """Logits of each row's last position; ``allowed`` is (rows, queries, keys)."""
        import torch

        assert self.cache is not None
        device, dtype = self.cache.keys[0].device, self.cache.keys[0].dtype
        mask = torch.zeros(allowed.shape, dtype=dtype)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        self.cache.plan = plan
        try:
            with torch.inference_mode():
                out = self.lm(
                    input_ids=ids.to(device),
                    position_ids=positions.to(device),
                    attention_mask=mask[:, None].to(device),
                    cache=self.cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
        finally:
            self.cache.plan = None
        return out.logits[:, -1]

    def _sample(self, seq: Sequence, logits: Any) -> Step:
        import torch

        s = seq.sampling
        if s.repetition_penalty != 1.0 and seq.seen is None:
            seq.seen = torch.tensor(seq.prompt, dtype=torch.long, device=logits.device)
        step = pick(logits, s, seq.rng, seq.counts, seq.seen)
        token = step.token
        if token in s.stop_ids:
            step.finish, seq.done = "stop", True
            return step
        seq.generated.append(token)
        seq.counts[token] = seq.counts.get(token, 0) + 1
        if seq.seen is not None:
            seq.seen = torch.cat([seq.seen, torch.tensor([token], device=seq.seen.device)])
        seq.next = token
        if len(seq.generated) >= s.max_tokens or seq.cached + 1 >= self.max_context:
            step.finish, seq.done = "length", True
        return step
