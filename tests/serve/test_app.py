"""The server's routes through FastAPI's TestClient: every backend, auth, limits, canary,
audit, manifest checks, offline docs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from offline.audit.chain import verify
from offline.errors import IntegrityError, NotFoundError
from offline.serve.app import create_app
from offline.serve.auth import add_key
from offline.serve.models import load_model
from offline.serve.settings import ServeSettings
from tests.serve.conftest import Exports

pytestmark = pytest.mark.integration
TEXTS = ["my parcel never arrived, where is it?", "I was charged twice for one order"]


def client(**settings: Any) -> TestClient:
    return TestClient(create_app(ServeSettings(**settings)))


@pytest.fixture(scope="module")
def cls_client(exports: Exports) -> Iterator[TestClient]:
    with client(model=exports.cls, backend="torchscript") as c:
        yield c


@pytest.fixture(scope="module")
def lm_client(exports: Exports) -> Iterator[TestClient]:
    with client(model=exports.lm, backend="torchscript") as c:
        yield c


def test_health_ready_and_models(cls_client: TestClient, exports: Exports) -> None:
    assert cls_client.get("/healthz").json() == {"status": "ok"}
    ready = cls_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    (card,) = cls_client.get("/v1/models").json()["data"]
    assert card["id"] == "classifier" and card["object"] == "model"
    assert card["kind"] == "sequence-classification" and card["backend"] == "torchscript"
    assert card["version"].startswith("classifier@") and card["version"] in ready.json()["models"]


def test_predict_answers_what_the_artifact_computes(
    cls_client: TestClient, exports: Exports
) -> None:
    r = cls_client.post("/predict", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-model-version"] == body["model_version"]
    model = load_model(exports.cls, "torchscript")
    ids = model.tokenizer(TEXTS, truncation=True, max_length=model.seq_len)["input_ids"]
    logits = model.forward(model.pad(ids))
    assert model.labels is not None
    for pred, row in zip(body["predictions"], logits, strict=True):
        assert pred["label"] == model.labels[int(row.argmax())]
        assert set(pred["scores"]) == set(model.labels)
        assert abs(sum(pred["scores"].values()) - 1) < 1e-4


@pytest.mark.parametrize("backend", ["eager", "torchscript", "pt2", "tvm"])
def test_every_backend_serves_both_models(exports: Exports, backend: str) -> None:
    answers = {}
    with client(model=exports.cls, backend=backend) as c:
        r = c.post("/predict", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        answers["labels"] = [p["label"] for p in r.json()["predictions"]]
        answers["scores"] = [p["scores"] for p in r.json()["predictions"]]
        assert c.get("/v1/models").json()["data"][0]["backend"] == backend
    with client(model=exports.lm, backend=backend) as c:
        r = c.post(
            "/v1/completions",
            json={"model": "lm", "prompt": "hello", "max_tokens": 6, "temperature": 0},
        )
        assert r.status_code == 200, r.text
        answers["usage"] = r.json()["usage"]
        answers["completion"] = r.json()["choices"][0]["text"]
    reference = _reference(exports)
    assert answers["labels"] == reference["labels"]
    for got, want in zip(answers["scores"], reference["scores"], strict=True):
        assert all(abs(got[k] - want[k]) < 1e-3 for k in want)
    # fp32 everywhere: greedy decoding takes the same tokens whatever the backend
    assert answers["completion"] == reference["completion"]
    assert answers["usage"]["completion_tokens"] == reference["usage"]["completion_tokens"]


_REFERENCE: dict[str, Any] = {}


def _reference(exports: Exports) -> dict[str, Any]:
    """The eager model's answers, computed here directly (no server)."""
    if _REFERENCE:
        return _REFERENCE
    from offline.deploy.export import load

    cls = load(exports.root / "models/classifier")
    enc = cls.tokenizer(TEXTS, truncation=True, max_length=40, padding="max_length")
    import torch

    with torch.no_grad():
        logits = cls.model(torch.tensor(enc["input_ids"])).numpy()
    labels = cls.model.inner.config.id2label
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    _REFERENCE["labels"] = [labels[int(i)] for i in logits.argmax(1)]
    _REFERENCE["scores"] = [{labels[i]: float(p[i]) for i in range(len(p))} for p in probs]
    lm = load(exports.root / "models/lm")
    ids = lm.tokenizer("hello")["input_ids"]
    out: list[int] = []
    for _ in range(6):
        row = ids + out
        padded = row + [lm.tokenizer.pad_token_id] * (40 - len(row))
        with torch.no_grad():
            token = int(lm.model(torch.tensor([padded]))[0, len(row) - 1].argmax())
        if token == lm.tokenizer.eos_token_id:
            break
        out.append(token)
    _REFERENCE["completion"] = lm.tokenizer.decode(out, skip_special_tokens=True)
    _REFERENCE["usage"] = {"completion_tokens": len(out)}
    return _REFERENCE


def test_generation_routes_follow_the_openai_format(lm_client: TestClient) -> None:
    chat = {"model": "lm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    r = lm_client.post("/v1/chat/completions", json={**chat, "seed": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in (
        "stop",
        "length",
    )
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    # the same seed gives the same answer; streamed, the deltas add up to it
    again = lm_client.post("/v1/chat/completions", json={**chat, "seed": 7}).json()
    assert again["choices"][0]["message"] == choice["message"]
    with lm_client.stream(
        "POST",
        "/v1/chat/completions",
        json={**chat, "seed": 7, "stream": True, "stream_options": {"include_usage": True}},
    ) as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in s.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == choice["message"]["content"]
    assert chunks[-1]["usage"] == usage
    # a classifier route on an LM is a clear 400, an unknown model a 404
    r = lm_client.post("/predict", json={"texts": ["x"]})
    assert r.status_code == 400 and "/v1/completions" in r.json()["error"]["message"]
    r = lm_client.post("/v1/completions", json={"model": "gpt-4", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_stop_strings_and_length_limits(lm_client: TestClient) -> None:
    base = {"model": "lm", "prompt": "order", "temperature": 0, "max_tokens": 8}
    full = lm_client.post("/v1/completions", json=base).json()["choices"][0]
    assert full["finish_reason"] in ("length", "stop")
    text = full["text"]
    if len(text.strip()) > 2:  # stop at a piece of what greedy decoding produces
        stop = text.strip()[1:3]
        cut = lm_client.post("/v1/completions", json={**base, "stop": [stop]}).json()["choices"][0]
        assert cut["finish_reason"] == "stop" and stop not in cut["text"]
        assert text.startswith(cut["text"])
    # an artifact's fixed length bounds prompt + completion
    long_prompt = "word " * 200
    r = lm_client.post("/v1/completions", json={**base, "prompt": long_prompt})
    assert r.status_code == 422 and "holds 40 tokens in all" in r.json()["error"]["message"]
    r = lm_client.post("/v1/completions", json={**base, "max_tokens": 10_000})
    assert r.status_code == 422 and "max_tokens" in r.json()["error"]["message"]
    two = lm_client.post("/v1/completions", json={**base, "n": 2}).json()
    assert [c["index"] for c in two["choices"]] == [0, 1]
    assert two["choices"][0]["text"] == two["choices"][1]["text"] == full["text"]  # greedy
    assert lm_client.post("/v1/completions", json={**base, "n": 17}).status_code == 422


def test_api_keys_are_hashed_and_required(exports: Exports, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    token = add_key(keys, "ops")
    stored = keys.read_text()
    assert token not in stored and stored.startswith("ops sha256:")
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    audit = tmp_path / "audit.jsonl"
    with client(model=exports.cls, backend="torchscript", api_keys=keys, audit_log=audit) as c:
        assert c.get("/healthz").status_code == 200  # health stays open
        for headers in ({}, {"Authorization": "Bearer sk-offline-wrong"}, {"Authorization": token}):
            r = c.post("/predict", json={"texts": TEXTS}, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        ok = {"Authorization": f"Bearer {token}"}
        assert c.post("/predict", json={"texts": TEXTS}, headers=ok).status_code == 200
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=ok).status_code == 200
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    log = audit.read_text()
    assert token not in log and "sk-offline" not in log
    verdict = verify([audit])  # hash-chained, and closed when the server stopped
    assert verdict.ok and verdict.closed, verdict.as_dict()
    records = [r for r in records if "checkpoint" not in r]
    predicts = [r for r in records if r["route"] == "/predict"]
    assert [r["status"] for r in predicts] == [401, 401, 401, 200]
    assert predicts[-1]["key_id"] == "ops" and predicts[-1]["model"].startswith("classifier@")
    assert predicts[-1]["request_bytes"] > 0 and predicts[-1]["latency_ms"] > 0
    assert "request" not in predicts[-1]  # content only with --audit-content
    assert TEXTS[0] not in log


def test_audit_content_when_enabled(exports: Exports, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    settings = {"model": exports.cls, "backend": "torchscript", "audit_log": audit}
    with client(**settings, audit_content=True) as c:
        c.post("/predict", json={"texts": TEXTS})
    (record,) = [json.loads(x) for x in audit.read_text().splitlines() if '"/predict"' in x]
    assert TEXTS[0] in record["request"] and '"label"' in record["response"]


def test_body_and_input_limits(exports: Exports) -> None:
    with client(model=exports.cls, backend="torchscript", max_body_bytes=4096, max_texts=4) as c:
        r = c.post("/predict", json={"texts": ["x" * 5000]})
        assert r.status_code == 413 and "4096" in r.json()["error"]["message"]

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"texts": ["'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"]}'

        r = c.post("/predict", content=chunked(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = c.post("/predict", json={"texts": ["a"] * 5})
        assert r.status_code == 422 and "at most 4 texts" in r.json()["error"]["message"]
        r = c.post("/predict", json={"texts": []})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "texts"]
        r = c.post("/predict", json={"texts": "not a list"})
        assert r.status_code == 422


def test_canary_takes_its_share_and_says_so(exports: Exports) -> None:
    settings = {"model": exports.cls, "backend": "torchscript", "canary": exports.cls_int8}
    with client(**settings, canary_percent=30, seed=1) as c:
        versions = [
            c.post("/predict", json={"texts": TEXTS[:1]}).json()["model_version"] for _ in range(60)
        ]
        metrics = c.get("/metrics").text
        models = c.get("/v1/models").json()["data"]
        pinned = c.post("/predict", json={"texts": TEXTS[:1], "model": "classifier-int8"})
    assert [m["id"] for m in models] == ["classifier", "classifier-int8"]
    canary = sum(v.startswith("classifier-int8@") for v in versions)
    assert 6 <= canary <= 33  # 30 % of 60, give or take
    assert all(pinned.json()["model_version"].startswith("classifier-int8@") for _ in [0])
    for m in models:
        assert f'model="{m["version"]}",route="/predict",status="200"' in metrics


def test_a_tampered_artifact_refuses_to_start(exports: Exports, tmp_path: Path) -> None:
    import subprocess
    import sys

    copy = tmp_path / "classifier"
    shutil.copytree(exports.cls, copy)
    art = copy / "model-none.torchscript.pt"
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model-none\.torchscript\.pt does not match"):
        load_model(copy, "torchscript")
    proc = subprocess.run(
        [sys.executable, "-m", "offline", "serve", "--model", str(copy), "--backend",
         "torchscript", "--port", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 7, proc.stderr
    assert "does not match its sha256" in proc.stderr and "Traceback" not in proc.stderr
    # a file the manifest does not know is not loaded either
    (copy / "manifest.json").write_text(json.dumps({"files": {}}))
    with pytest.raises(IntegrityError, match=r"not in manifest\.json"):
        load_model(copy, "torchscript")
    with pytest.raises(NotFoundError, match=r"no export_card\.json"):
        load_model(tmp_path, "torchscript")


def test_docs_work_without_a_network(cls_client: TestClient) -> None:
    page = cls_client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text
    assert cls_client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert cls_client.get("/docs-assets/swagger-ui.css").status_code == 200
    schema = cls_client.get("/openapi.json").json()
    assert {"/predict", "/v1/chat/completions", "/v1/completions"} <= set(schema["paths"])


def test_binding_beyond_loopback_needs_keys(exports: Exports) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="--api-keys"):
        ServeSettings(model=exports.cls, host="0.0.0.0")
    ServeSettings(model=exports.cls, host="0.0.0.0", allow_unauthenticated=True)
