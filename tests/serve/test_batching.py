"""Continuous batching over the KV cache, with the real SmolLM2-135M-Instruct: what it generates
is what transformers' own ``generate`` makes of each prompt alone, whatever runs beside it; a
real server takes a conversation of more than 1,000 tokens through the official ``openai``
client, runs 16 streams in batched steps, frees a slot when a client hangs up, and says 429 when
its cache and queue are full."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offline.serve.batching import ContinuousBatcher
from offline.serve.engine import Busy, Runner
from offline.serve.generation import Sampling
from offline.serve.metrics import Metrics
from offline.serve.models import ServedModel, load_model
from offline.serve.routes.openai import Reasoning
from tests.serve.conftest import Server, running

pytestmark = pytest.mark.integration
QUESTIONS = [
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "List three colours.",
    "Why do cats purr? " * 12,  # longer than a prefill chunk: read over several steps
    "Say hello.",
    "How many legs does a spider have?",
]


@pytest.fixture(scope="module")
def served(smollm2_export: Path) -> ServedModel:
    return load_model(smollm2_export, "eager")


def prompt_ids(model: ServedModel, question: str) -> list[int]:
    text = model.tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    ids: list[int] = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


async def run_engine(
    model: ServedModel, prompts: list[list[int]], samplings: list[Sampling], **options: Any
) -> tuple[list[tuple[str, Any]], Metrics]:
    """Every prompt through one engine at once: (text, last delta) each."""
    runner, metrics = Runner(), Metrics()
    settings = {"max_sequences": 3, "max_context": 512, "prefill_chunk": 32, "max_queue": 64}
    settings.update(options)
    engine = ContinuousBatcher(model, runner, metrics, kv_cache_bytes=1 << 30, **settings)
    await runner.call(engine.allocate)
    engine.start()

    async def one(ids: list[int], sampling: Sampling) -> tuple[str, Any]:
        parts, last = [], None
        async for delta in engine.stream(ids, sampling):
            parts.append(delta.text)
            last = delta
        return "".join(parts), last

    try:
        return list(await asyncio.gather(*map(one, prompts, samplings))), metrics
    finally:
        await engine.stop()
        runner.close()


def one_slot(model: ServedModel, context: int) -> tuple[Runner, ContinuousBatcher]:
    """An engine of one sequence and one place in its queue (started by the caller)."""
    runner = Runner()
    engine = ContinuousBatcher(
        model,
        runner,
        Metrics(),
        max_sequences=1,
        max_context=context,
        kv_cache_bytes=1 << 28,
        prefill_chunk=64,
        max_queue=1,
    )
    return runner, engine


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_each_sequence_gets_what_generate_gives_it_alone(served: ServedModel) -> None:
    import torch

    prompts = [prompt_ids(served, q) for q in QUESTIONS]
    greedy = Sampling(24, temperature=0.0, stop_ids=served.stop_ids)
    results, metrics = asyncio.run(run_engine(served, prompts, [greedy] * len(prompts)))
    for ids, (text, last) in zip(prompts, results, strict=True):
        with torch.inference_mode():
            out = served.lm.generate(
                torch.tensor([ids]),
                max_new_tokens=24,
                do_sample=False,
                eos_token_id=sorted(served.stop_ids),
                pad_token_id=served.pad_id,
            )[0, len(ids) :].tolist()
        stopped = out[-1] in served.stop_ids
        expected = out[:-1] if stopped else out
        assert text == served.tokenizer.decode(expected, skip_special_tokens=True)
        assert last.completion_tokens == len(expected)
        assert last.finish_reason == ("stop" if stopped else "length")
    version = served.version
    # six sequences through three slots: they waited, were batched, and the long prompt was
    # read in chunks
    assert metric(metrics, "offline_decode_batch_size_count", model=version) > 0
    assert metric(metrics, "offline_decode_batch_size_bucket", model=version, le="2.0") < metric(
        metrics, "offline_decode_batch_size_count", model=version
    )
    assert metric(metrics, "offline_prefill_tokens_total", model=version) == sum(map(len, prompts))


def test_log_probabilities_are_the_models_own(served: ServedModel) -> None:
    import torch

    ids = prompt_ids(served, QUESTIONS[0])
    sampling = Sampling(6, temperature=0.0, logprobs=3, stop_ids=served.stop_ids)
    runner, engine = one_slot(served, 256)

    async def collect() -> list[Any]:
        await runner.call(engine.allocate)
        engine.start()
        try:
            return [d async for d in engine.stream(ids, sampling)]
        finally:
            await engine.stop()
            runner.close()

    deltas = asyncio.run(collect())
    text = "".join(d.text for d in deltas)
    entries = [e for d in deltas for e in d.logprobs]
    tokens = [served.tokenizer.convert_tokens_to_ids(e.token) for e in entries]
    generated = served.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = served.lm(torch.tensor([ids + generated])).logits[0].float()
    reference = torch.log_softmax(logits[len(ids) - 1 : -1], -1)
    assert len(entries) == len(generated)
    for i, entry in enumerate(entries):
        best = reference[i].topk(3)
        assert entry.logprob == pytest.approx(float(reference[i, generated[i]]), abs=1e-3)
        assert [t for t, _, _ in entry.top] == [
            served.tokenizer.decode([int(t)]) for t in best.indices
        ]
        assert entry.top[0][1] >= entry.top[1][1] >= entry.top[2][1]
    assert tokens  # the token strings name real vocabulary entries


def test_a_seeded_sample_repeats_and_penalties_change_it(served: ServedModel) -> None:
    ids = prompt_ids(served, "Tell me a story about a lighthouse.")
    hot = Sampling(40, temperature=0.9, top_p=0.95, seed=7, stop_ids=served.stop_ids)
    penal = Sampling(
        40, temperature=0.0, frequency_penalty=2.0, presence_penalty=1.0, stop_ids=served.stop_ids
    )
    plain = Sampling(40, temperature=0.0, stop_ids=served.stop_ids)
    results, _ = asyncio.run(run_engine(served, [ids] * 4, [hot, hot, penal, plain]))
    (a, _), (b, _), (penalized, _), (greedy, _) = results
    assert a == b  # the same seed, decoded beside each other, the same text
    assert penalized != greedy


def test_a_prompt_that_fills_the_context_ends_at_its_length(served: ServedModel) -> None:
    ids = prompt_ids(served, "Count from one to a hundred, in words.")
    context = len(ids) + 5
    greedy = Sampling(100, temperature=0.0, stop_ids=frozenset())
    [(_text, last)], _ = asyncio.run(
        run_engine(served, [ids], [greedy], max_context=context, max_sequences=1)
    )
    assert last.finish_reason == "length" and last.completion_tokens == context - len(ids)


@settings(max_examples=200, deadline=None)
@given(
    reasoning=st.text(st.characters(exclude_characters="<>"), max_size=30),
    answer=st.text(st.characters(exclude_characters="<>"), max_size=30),
    cuts=st.lists(st.integers(0, 80), max_size=6),
    opened=st.booleans(),
)
def test_reasoning_is_split_from_the_answer_however_it_arrives(
    reasoning: str, answer: str, cuts: list[int], opened: bool
) -> None:
    reply = ("" if opened else "<think>\n") + f"{reasoning}\n</think>\n\n{answer}"
    bounds = sorted({min(c, len(reply)) for c in cuts} | {0, len(reply)})
    splitter = Reasoning("opened" if opened else "maybe")
    got_reasoning, got_answer = "", ""
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        r, c = splitter.feed(reply[a:b], final=i == len(bounds) - 2)
        got_reasoning, got_answer = got_reasoning + r, got_answer + c
    if len(bounds) == 1:
        got_reasoning, got_answer = splitter.feed("", final=True)
    assert got_reasoning == reasoning.lstrip("\n").rstrip("\n")
    assert got_answer == answer.lstrip("\n")


def test_a_reply_without_reasoning_is_all_answer() -> None:
    splitter = Reasoning("maybe")
    assert splitter.feed("<th") == ("", "")
    assert splitter.feed("e capital is Paris.", final=True) == ("", "<the capital is Paris.")


# -- the real server -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(smollm2_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "smollm2.log"
    args = ["--model", str(smollm2_export), "--max-context", "2048", "--kv-cache-mb", "2048"]
    with running(*args, cwd=smollm2_export.parent, log=log) as s:
        yield s


def scrape(url: str, name: str) -> dict[str, float]:
    """The samples of metric ``name`` by their label string."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        m = re.match(rf"{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def test_the_model_list_shows_the_context(server: Server) -> None:
    models = httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"]
    assert models[0]["max_model_len"] == 2048 and models[0]["backend"] == "eager"


def test_a_long_conversation_through_the_openai_client(server: Server) -> None:
    import openai

    api = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    facts = " ".join(f"Parcel {i} left the depot at {i % 12 + 1} o'clock." for i in range(90))
    messages: list[Any] = [
        {"role": "system", "content": "You are a helpful assistant for a parcel company."},
        {"role": "user", "content": f"Here is today's log: {facts}"},
        {"role": "assistant", "content": "Thank you, I have read the log."},
        {"role": "user", "content": "When did parcel 7 leave? Answer in one sentence."},
    ]
    chat = api.chat.completions.create(
        model="smollm2", messages=messages, max_tokens=40, temperature=0
    )
    assert chat.usage is not None and chat.usage.prompt_tokens > 1000
    first = chat.choices[0].message.content or ""
    assert first.strip() and chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage.completion_tokens <= 40
    messages += [
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And parcel 8?"},
    ]
    stream = api.chat.completions.create(
        model="smollm2",
        messages=messages,
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(parts).strip() and finish in ("stop", "length")
    assert usage is not None and usage.prompt_tokens > chat.usage.prompt_tokens
    # the same conversation again, not streamed: greedy gives the same reply
    again = api.chat.completions.create(
        model="smollm2", messages=messages, max_tokens=40, temperature=0
    )
    assert again.choices[0].message.content == "".join(parts)


def test_a_prompt_beyond_the_context_is_refused_with_the_numbers(server: Server) -> None:
    words = "parcel " * 2100
    r = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "smollm2", "prompt": words, "max_tokens": 4},
        timeout=60,
    )
    assert r.status_code == 422 and "2048" in r.text
    r = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "smollm2", "prompt": "hello", "max_tokens": 5000},
        timeout=60,
    )
    assert r.status_code == 422 and "max_tokens" in r.text


def test_sixteen_streams_run_in_batched_steps(server: Server) -> None:
    import openai

    before = scrape(server.url, "offline_decode_batch_size_bucket")

    async def main() -> list[str]:
        api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)

        async def one(i: int) -> str:
            stream = await api.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": f"Write a short poem about the number {i}."}],
                max_tokens=32,
                temperature=0.7,
                seed=i,
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        try:
            return await asyncio.gather(*(one(i) for i in range(16)))
        finally:
            await api.close()

    texts = asyncio.run(main())
    assert all(t.strip() for t in texts)
    after = scrape(server.url, "offline_decode_batch_size_bucket")
    key8 = next(k for k in after if 'le="8.0"' in k)
    key_inf = next(k for k in after if 'le="+Inf"' in k)
    steps = after[key_inf] - before.get(key_inf, 0)
    up_to_8 = after[key8] - before.get(key8, 0)
    assert steps > 0 and up_to_8 < steps  # some steps decoded more than 8 sequences together


def running_sequences(url: str) -> float:
    return sum(v for k, v in scrape(url, "offline_sequences").items() if 'state="running"' in k)


def test_a_client_that_hangs_up_frees_its_slot(server: Server) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 1500,
        "temperature": 0.8,
        "stream": True,
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
        assert running_sequences(server.url) == 1
    deadline = time.monotonic() + 10
    while running_sequences(server.url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running_sequences(server.url) == 0
    # not streamed: the same, the server notices the closed connection
    body["stream"] = False
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=2)
    deadline = time.monotonic() + 10
    while running_sequences(server.url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running_sequences(server.url) == 0


def test_a_full_cache_and_queue_refuse_more(served: ServedModel) -> None:
    """One slot, one place in the queue: a third generation is refused (the route makes that
    429 with Retry-After, as for every engine)."""
    runner, engine = one_slot(served, 1024)
    ids = served.tokenizer("1, 2, 3, 4, 5, 6, 7, 8, 9, 10,")["input_ids"]
    counting = Sampling(900, temperature=0.0, stop_ids=frozenset())

    async def main() -> None:
        await runner.call(engine.allocate)
        engine.start()
        first, second = engine.stream(ids, counting), engine.stream(ids, counting)
        tasks: list[Any] = []
        try:
            await first.__anext__()  # it holds the one slot
            waiting = asyncio.ensure_future(second.__anext__())
            tasks.append(waiting)
            await asyncio.sleep(0.5)
            assert len(engine.active) == 1 and len(engine.waiting) == 1
            assert not waiting.done()
            with pytest.raises(Busy, match="in use"):
                engine.admit()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await first.aclose()
            await second.aclose()
            await engine.stop()
            runner.close()

    asyncio.run(main())


def test_the_pipelines_model_is_batched_as_generate_runs_it(exports: Any) -> None:
    """The embedded default (DeepSeek-V2's shape: multi-head latent attention, whose keys and
    values differ in width, and mixture-of-experts layers), exported by the pipeline."""
    import torch

    model = load_model(exports.lm, "eager")
    assert model.lm is not None and model.max_context == 512
    prompts = [
        model.tokenizer(t)["input_ids"] for t in ("where is my parcel", "refund " * 40, "hi")
    ]
    greedy = Sampling(12, temperature=0.0, stop_ids=model.stop_ids)
    results, _ = asyncio.run(
        run_engine(model, prompts, [greedy] * 3, max_sequences=2, prefill_chunk=16)
    )
    for ids, (text, _last) in zip(prompts, results, strict=True):
        with torch.inference_mode():
            out = model.lm.generate(
                torch.tensor([ids]),
                max_new_tokens=12,
                do_sample=False,
                eos_token_id=sorted(model.stop_ids),
                pad_token_id=model.pad_id,
            )[0, len(ids) :].tolist()
        expected = out[:-1] if out[-1] in model.stop_ids else out
        assert text == model.tokenizer.decode(expected, skip_special_tokens=True)
