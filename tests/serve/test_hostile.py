"""Hostile and degenerate requests: no 5xx for anything the schema accepts, on every route and
backend (schemathesis with lone surrogates, control characters and long runs); a sampler that
never hands numpy NaN; one request's bad input fails only that request, never its batch
neighbours; a stream that fails half way still ends, with an error event and ``[DONE]``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from offline.serve.app import create_app
from offline.serve.engine import BadInput
from offline.serve.generation import GenerationError, Sampling, choose
from offline.serve.models import load_model
from offline.serve.settings import ServeSettings
from tests.serve.conftest import Exports
from tests.serve.fuzz import fuzz

pytestmark = pytest.mark.integration
BACKENDS = ["eager", "torchscript", "pt2", "tvm"]
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def lm(exports: Exports) -> Iterator[TestClient]:
    with TestClient(create_app(ServeSettings(model=exports.lm, backend="torchscript"))) as c:
        yield c


def _post(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    """``body`` as JSON with ``\\uXXXX`` escapes, so lone surrogates travel as JSON allows."""
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def _events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines() if line]


HI = [{"role": "user", "content": "hi"}]
ACCEPTED = [  # inputs the schema accepts, at the edges of each field
    ("/v1/completions", {"prompt": "hi", "temperature": 1e-320}),
    ("/v1/completions", {"prompt": "hi", "temperature": 5e-324, "top_p": 5e-324}),
    ("/v1/completions", {"prompt": "hi", "temperature": 2, "top_p": 1 - 1e-16}),
    ("/v1/completions", {"prompt": "hi", "seed": -1}),
    ("/v1/completions", {"prompt": "hi", "seed": -(2**63)}),
    ("/v1/completions", {"prompt": "hi", "seed": 2**64 - 1}),
    ("/v1/completions", {"prompt": "", "temperature": 0}),
    ("/v1/completions", {"prompt": ["\x00\x01\x1b\x7f\u200b\u2028\ufeff"], "stop": ["\x00"]}),
    (CHAT, {"messages": HI, "seed": -5}),
    (CHAT, {"messages": HI, "temperature": 1e-310, "top_p": 1e-300}),
    (CHAT, {"messages": [{"role": "assistant", "content": []}]}),
    (CHAT, {"messages": [{"role": "developer", "content": "\r\n\t\x0b" * 5}]}),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "body"), ACCEPTED)
def test_degenerate_values_are_answered(
    lm: TestClient, path: str, body: dict[str, Any], stream: bool
) -> None:
    r = _post(lm, path, {**body, "max_tokens": 4, "stream": stream})
    assert r.status_code == 200, r.text
    if not stream:
        assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
        return
    events = _events(r.text)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")


SURROGATE = [  # where a lone surrogate can sit in a request; no tokenizer can encode one
    ("/v1/completions", {"prompt": "my order \ud800"}, "prompt"),
    ("/v1/completions", {"prompt": ["\udfff"]}, "prompt"),
    ("/v1/completions", {"prompt": "hi", "stop": ["x", "\udc00"]}, "stop"),
    ("/v1/completions", {"prompt": "hi", "model": "\ud83d"}, "model"),
    (CHAT, {"messages": [{"role": "user", "content": "hi \ud83d"}]}, "messages.0.content"),
    (
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800x"}]}]},
        "messages.0.content",
    ),
]


@pytest.mark.parametrize(("path", "body", "where"), SURROGATE)
def test_a_lone_surrogate_is_a_422_that_names_the_field(
    lm: TestClient, path: str, body: dict[str, Any], where: str
) -> None:
    for stream in (False, True):
        r = _post(lm, path, {**body, "stream": stream})
        assert r.status_code == 422, r.text
        message = r.json()["error"]["message"]
        assert message.startswith(f"{where}: ") and "lone surrogate" in message


def test_a_chat_template_that_refuses_the_messages_is_a_422(exports: Exports) -> None:
    with TestClient(create_app(ServeSettings(model=exports.lm, backend="torchscript"))) as c:
        tok = c.app.state.svc.primary.model.tokenizer  # type: ignore[attr-defined]
        tok.chat_template = (
            "{% if messages[0]['role'] != 'user' %}"
            "{{ raise_exception('Conversations must start with a user message') }}"
            "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}"
        )
        r = _post(c, CHAT, {"messages": [{"role": "assistant", "content": "hi"}]})
        assert r.status_code == 422, r.text
        assert "must start with a user message" in r.json()["error"]["message"]
        assert _post(c, CHAT, {"messages": HI, "max_tokens": 2}).status_code == 200


# -- the sampler --------------------------------------------------------------------------------

LOGITS = st.lists(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.sampled_from([0.0, -np.inf, np.inf, np.nan, 3.4e38, -3.4e38]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    logits=LOGITS,
    temperature=st.one_of(st.floats(0, 2), st.sampled_from([0.0, 5e-324, 1e-320, 1e-6, 2.0])),
    top_p=st.one_of(st.floats(5e-324, 1), st.sampled_from([5e-324, 1e-300, 1 - 1e-16, 1.0])),
    seed=st.integers(0, 2**64 - 1),
)
def test_the_sampler_takes_any_logits_and_any_schema_value(
    logits: list[float], temperature: float, top_p: float, seed: int
) -> None:
    row = np.array(logits, dtype=np.float32)
    sampling = Sampling(4, temperature, top_p, seed=seed)
    rng = np.random.default_rng(seed)
    if np.isnan(row).all() or (np.isnan(row) | np.isneginf(row)).all():
        with pytest.raises(GenerationError, match="no finite logit"):
            choose(row, sampling, rng)
        return
    token = choose(row, sampling, rng)
    assert 0 <= token < len(row) and not np.isnan(row[token]) and not np.isneginf(row[token])
    if np.isposinf(row).any():
        assert np.isposinf(row[token])


def test_the_sampler_is_greedy_at_tiny_temperatures_and_tiny_top_p() -> None:
    row = np.array([1.0, 3.0, 2.0, -np.inf], dtype=np.float32)
    rng = np.random.default_rng(0)
    for temperature, top_p in ((0.0, 1.0), (1e-320, 1.0), (9e-6, 0.5), (1.0, 1e-300)):
        picks = {choose(row, Sampling(1, temperature, top_p), rng) for _ in range(50)}
        assert picks == {1}
    picks = {choose(row, Sampling(1, 2.0, 1.0), rng) for _ in range(200)}
    assert picks == {0, 1, 2}  # a masked (-inf) token is never sampled


# -- batching -------------------------------------------------------------------------------------


def _batches(app: Any) -> tuple[float, float]:
    """How many /predict forward batches ran so far, and how many rows they held."""
    svc = app.state.svc
    registry, labels = svc.metrics.registry, {"model": svc.primary.model.version}
    count = registry.get_sample_value("offline_batch_size_count", labels) or 0.0
    return count, registry.get_sample_value("offline_batch_size_sum", labels) or 0.0


@pytest.fixture(scope="module")
def cls(exports: Exports) -> Iterator[TestClient]:
    config = ServeSettings(model=exports.cls, backend="torchscript", max_wait_ms=500)
    with TestClient(create_app(config)) as c:
        yield c


def test_a_bad_text_fails_only_its_own_request(cls: TestClient) -> None:
    good = ["where is my parcel?", "I was charged twice"]
    alone = [cls.post("/predict", json={"texts": [t]}).json()["predictions"] for t in good]
    bodies = [{"texts": [good[0]]}, {"texts": ["refund \ud800 now"]}, {"texts": [good[1]]}]

    async def together() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=cls.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            headers = {"content-type": "application/json"}
            posts = [c.post("/predict", content=json.dumps(b), headers=headers) for b in bodies]
            return await asyncio.gather(*posts)

    assert cls.portal is not None
    first, bad, second = cls.portal.call(together)
    assert bad.status_code == 422 and "lone surrogate" in bad.json()["error"]["message"]
    for r, want in ((first, alone[0]), (second, alone[1])):
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["label"] == want[0]["label"]


def test_the_batcher_keeps_each_failure_with_its_request(cls: TestClient) -> None:
    svc = cls.app.state.svc  # type: ignore[attr-defined]
    model, batcher = svc.primary.model, svc.primary.batcher
    poison = model.tokenizer("zq")["input_ids"][-1]
    good = ["where is my parcel?", "I was charged twice for one order"]
    assert not any(poison in ids for ids in model.tokenizer(good)["input_ids"])
    forward = model.forward

    def fragile(ids: Any) -> Any:  # a forward pass that one request's tokens break
        if (ids == poison).any():
            raise RuntimeError("the backend cannot take this row")
        return forward(ids)

    async def together() -> list[Any]:
        rows = [[good[0]], ["\ud800"], ["zq"], [good[1]]]  # past the schema: straight in
        return await asyncio.gather(*(batcher.submit(r) for r in rows), return_exceptions=True)

    before = _batches(cls.app)
    model.forward = fragile
    try:
        assert cls.portal is not None
        first, unencodable, poisoned, second = cls.portal.call(together)
    finally:
        model.forward = forward
    count, rows = (a - b for a, b in zip(_batches(cls.app), before, strict=True))
    assert (count, rows) == (1, 4)  # the four requests were one batch
    assert isinstance(unencodable, BadInput) and "cannot encode" in str(unencodable)
    assert isinstance(poisoned, RuntimeError) and "cannot take this row" in str(poisoned)
    ids = model.tokenizer(good, truncation=True, max_length=model.seq_len)["input_ids"]
    logits = forward(model.pad(ids))
    for probs, want in ((first, logits[0]), (second, logits[1])):
        assert isinstance(probs, np.ndarray) and probs.shape == (1, len(want))
        assert int(probs[0].argmax()) == int(want.argmax())


# -- streams --------------------------------------------------------------------------------------


@pytest.fixture
def flaky_lm(exports: Exports) -> Iterator[tuple[TestClient, dict[str, int]]]:
    """The LM whose backend breaks on its second forward pass once ``armed`` is set."""
    model = load_model(exports.lm, "torchscript")
    state = {"armed": 0, "calls": 0}
    forward = model.forward

    def flaky(ids: Any) -> Any:
        if state["armed"]:
            state["calls"] += 1
            if state["calls"] > 1:
                raise RuntimeError("the backend broke")
        return forward(ids)

    config = ServeSettings(model=exports.lm, max_concurrent_generations=1)
    with TestClient(create_app(config, (replace(model, forward=flaky), None))) as c:
        yield c, state


@pytest.mark.parametrize("path", ["/v1/completions", CHAT])
def test_a_stream_that_fails_half_way_ends_with_an_error_event(
    flaky_lm: tuple[TestClient, dict[str, int]], path: str
) -> None:
    client, state = flaky_lm
    body: dict[str, Any] = {"prompt": "hello"} if path != CHAT else {"messages": HI}
    body |= {"max_tokens": 8, "temperature": 0, "stream": True}
    state.update(armed=1, calls=0)
    r = _post(client, path, body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    *chunks, error, done = _events(r.text)
    assert done == "[DONE]" and chunks and all("choices" in json.loads(c) for c in chunks)
    failure = json.loads(error)["error"]
    assert failure["code"] == "generation_failed" and failure["type"] == "server_error"
    assert "broke" not in failure["message"]  # internals stay in the server log
    state.update(calls=0)
    r = _post(client, path, {**body, "stream": False})
    assert r.status_code == 500 and r.json()["error"]["code"] == "generation_failed"
    state.update(armed=0)  # the failed generations gave their slot back
    assert _post(client, path, {**body, "stream": False}).status_code == 200


# -- schemathesis on every backend ------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["lm", "classifier"])
def test_schemathesis_finds_no_server_errors_on_any_backend(
    exports: Exports, kind: str, backend: str
) -> None:
    import schemathesis

    model = exports.lm if kind == "lm" else exports.cls
    with TestClient(create_app(ServeSettings(model=model, backend=backend))) as c:
        schema = schemathesis.openapi.from_dict(c.get("/openapi.json").json())
        # short replies keep 40 examples quick: an eager LM's context is 512 tokens, n up to 16.
        # Validation is the same code on every backend: the compiled ones get 20, which still
        # reach each route past validation and refused by it (asserted below).
        focus = {
            "model": st.just(kind),
            "max_tokens": st.integers(1, 8),
            "max_completion_tokens": st.integers(1, 8),
            "n": st.integers(1, 3),
        }
        found = fuzz(schema, c, max_examples=40 if backend == "eager" else 20, focus=focus)
    assert not found.failures, found.failures
    routes = (
        ["POST /v1/completions", "POST /v1/chat/completions"] if kind == "lm" else ["POST /predict"]
    )
    for route in routes:  # past validation, and refused by it
        assert {200, 422} <= found.statuses[route], found.statuses[route]
