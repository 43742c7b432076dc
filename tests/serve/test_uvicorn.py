"""``offline serve`` as a real uvicorn process on loopback: the official ``openai`` client,
64 concurrent clients, and schemathesis against the published OpenAPI schema (classifier and
LM, with lone surrogates, control characters and long runs in the bodies)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from offline.serve.auth import add_key
from tests.serve.conftest import Exports, Server, running
from tests.serve.fuzz import fuzz

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    return path, add_key(path, "tests")


@pytest.fixture(scope="module")
def lm_server(
    exports: Exports, keys: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "lm.log"
    args = ["--model", str(exports.lm), "--backend", "tvm", "--api-keys", str(keys[0])]
    with running(*args, cwd=exports.root, log=log) as server:
        yield server


def test_the_openai_client_talks_to_the_server(lm_server: Server, keys: tuple[Path, str]) -> None:
    import openai

    api = openai.OpenAI(base_url=f"{lm_server.url}/v1", api_key=keys[1], max_retries=0)
    assert [m.id for m in api.models.list()] == ["lm"]
    messages = [{"role": "user", "content": "where is my parcel?"}]
    chat = api.chat.completions.create(
        model="lm",
        messages=messages,
        max_tokens=6,
        temperature=0,  # type: ignore[arg-type]
    )
    answer = chat.choices[0].message
    assert answer.role == "assistant" and chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage is not None and chat.usage.completion_tokens <= 6
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    stream = api.chat.completions.create(
        model="lm",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == answer.content  # greedy: streamed or not, the same text
    done = api.completions.create(model="lm", prompt="my order", max_tokens=4, temperature=0)
    assert done.object == "text_completion" and done.usage is not None
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens <= 4
    streamed = api.completions.create(
        model="lm", prompt="my order", max_tokens=4, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == done.choices[0].text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{lm_server.url}/v1", api_key="sk-wrong").models.list()
    with pytest.raises(openai.UnprocessableEntityError):
        api.completions.create(model="lm", prompt="x " * 500, max_tokens=4)


def _histogram(metrics: str, name: str) -> dict[str, float]:
    """A histogram's cumulative buckets by upper bound, and its count and sum."""
    found = {}
    for line in metrics.splitlines():
        m = re.match(rf"{name}_(bucket|count|sum)\{{(.*)\}} (\S+)$", line)
        if m:
            le = re.search(r'le="([^"]+)"', m[2])
            found[le[1] if le else m[1]] = float(m[3])
    return found


def test_64_concurrent_clients_are_batched(exports: Exports, tmp_path: Path) -> None:
    args = ["--model", str(exports.cls), "--backend", "pt2", "--max-wait-ms", "20"]
    with running(*args, cwd=exports.root, log=tmp_path / "cls.log") as server:

        async def one(client: httpx.AsyncClient, i: int) -> int:
            r = await client.post("/predict", json={"texts": [f"ticket {i}: refund my order"]})
            return r.status_code

        async def many() -> list[int]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as c:
                return await asyncio.gather(*(one(c, i) for i in range(64)))

        statuses = asyncio.run(many())
        metrics = httpx.get(f"{server.url}/metrics").text
    assert statuses == [200] * 64
    batches = _histogram(metrics, "offline_batch_size")
    # fewer forward passes than requests: batches of more than one row happened
    assert batches["sum"] == 64 and batches["count"] < 64
    assert batches["1.0"] < batches["count"]
    assert 'route="/predict",status="200"} 64.0' in metrics


def test_schemathesis_finds_no_server_errors(
    exports: Exports, lm_server: Server, keys: tuple[Path, str], tmp_path: Path
) -> None:
    import schemathesis
    from hypothesis import strategies as st

    args = ["--model", str(exports.cls), "--backend", "torchscript"]
    with running(*args, cwd=exports.root, log=tmp_path / "fuzz.log") as cls_server:
        statuses: dict[str, set[int]] = {}
        for server, key, name in ((cls_server, None, "classifier"), (lm_server, keys[1], "lm")):
            schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
            auth = {"Authorization": f"Bearer {key}"} if key else None
            with httpx.Client(base_url=server.url, timeout=120) as client:
                focus = {"model": st.just(name), "max_tokens": st.integers(1, 8)}
                found = fuzz(schema, client, max_examples=50, headers=auth, focus=focus)
            assert not found.failures, found.failures
            for route, seen in found.statuses.items():
                statuses.setdefault(route, set()).update(seen)
    # every operation was exercised, and the fuzzer got past validation on the main routes
    assert {"POST /predict", "POST /v1/completions", "GET /metrics"} <= set(statuses)
    for route in ("POST /predict", "POST /v1/completions", "POST /v1/chat/completions"):
        assert {200, 422} <= statuses[route], (route, statuses[route])


def test_a_full_queue_answers_busy_with_retry_after(
    exports: Exports, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OFFLINE_SERVE_MAX_QUEUE", "1")
    monkeypatch.setenv("OFFLINE_SERVE_MAX_CONCURRENT_GENERATIONS", "1")

    async def burst(url: str, path: str, body: dict[str, object]) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            return await asyncio.gather(*(c.post(path, json=body) for _ in range(64)))

    for model, path, body, busy in (
        (exports.cls, "/predict", {"texts": ["where is my parcel"] * 8}, 503),
        (exports.lm, "/v1/completions", {"prompt": "hello", "max_tokens": 8}, 429),
    ):
        args = ["--model", str(model), "--backend", "torchscript", "--max-batch", "1"]
        with running(*args, cwd=exports.root, log=tmp_path / f"{busy}.log") as server:
            answers = asyncio.run(burst(server.url, path, body))
        statuses = [r.status_code for r in answers]
        assert set(statuses) == {200, busy}, statuses
        refused = next(r for r in answers if r.status_code == busy)
        assert (
            refused.headers["retry-after"] == "1" and "busy" in refused.json()["error"]["message"]
        )
