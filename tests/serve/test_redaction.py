"""The audit log and the server's log lines never hold a credential: not the caller's API key,
not one a client put in a prompt, not one a model wrote back."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from offline.serve.metrics import Metrics
from offline.serve.middleware import CONTENT_LIMIT, AuditLog, Guard, Message, Receive, Scope, Send
from tests.serve.conftest import Exports

ROUTE = "/v1/chat/completions"
API_KEY = "sk-offline-Q9xT2bLmZ7vR4kWc8nJd3hPs6yFa1uEo5iGq0tBz"
PROMPT = (
    "clone https://ana:cl0ne-s3cret@git.lan/team/repo.git, then call the API with "
    "Authorization: Bearer h3ader-s3cret or https://hub.lan/v1?api_key=qu3ry-s3cret "
    f"(my key is {API_KEY})"
)
SECRETS = ("cl0ne-s3cret", "h3ader-s3cret", "qu3ry-s3cret", API_KEY, API_KEY[11:])


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """A model that writes the request back: the response is audited too."""
    body = b""
    more = True
    while more:
        message: Message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"x-model-version", b"lm@1")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _audited(path: Path, body: bytes) -> list[dict[str, object]]:
    audit = AuditLog(path, content=True)
    app = Guard(_echo, metrics=Metrics(), routes={ROUTE}, max_body_bytes=1 << 20, audit=audit)
    headers = {"Authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    assert TestClient(app).post(ROUTE, content=body, headers=headers).status_code == 200
    audit.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in lines if "checkpoint" not in r]  # the chain's own closing line


def test_no_credential_reaches_the_audit_log(tmp_path: Path) -> None:
    body = json.dumps({"model": "lm", "messages": [{"role": "user", "content": PROMPT}]})
    (record,) = _audited(tmp_path / "audit.jsonl", body.encode())
    log = (tmp_path / "audit.jsonl").read_text()
    assert not [s for s in SECRETS if s in log]
    assert "git.lan/team/repo.git" in record["request"] and "hub.lan" in record["response"]
    assert record["route"] == ROUTE and record["model"] == "lm@1"


def test_a_credential_across_the_content_cut_is_not_half_shown(tmp_path: Path) -> None:
    pad = "x" * (CONTENT_LIMIT - 30)
    body = f'{{"prompt": "{pad} https://ana:cl0ne-s3cret@git.lan/r"}}'.encode()
    (record,) = _audited(tmp_path / "audit.jsonl", body)
    assert len(str(record["request"])) == CONTENT_LIMIT
    assert "cl0ne" not in str(record["request"]) and "ana:" not in str(record["request"])


def test_no_credential_reaches_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        _audited(tmp_path / "audit.jsonl", json.dumps({"prompt": PROMPT}).encode())
    assert not [s for s in SECRETS if s in caplog.text]


@pytest.mark.integration
def test_the_real_server_logs_neither_the_callers_key_nor_a_prompts_credentials(
    exports: Exports, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from offline.serve.app import create_app
    from offline.serve.auth import add_key
    from offline.serve.settings import ServeSettings

    keys, audit = tmp_path / "keys", tmp_path / "audit.jsonl"
    token = add_key(keys, "ops")
    settings = ServeSettings(
        model=exports.lm, backend="torchscript", api_keys=keys, audit_log=audit,
        audit_content=True,
    )  # fmt: skip
    short = "https://a:cl0ne-s3cret@git.lan"  # the export holds 40 tokens, template too
    chat = {"model": "lm", "messages": [{"role": "user", "content": short}], "max_tokens": 3}
    with caplog.at_level(logging.DEBUG), TestClient(create_app(settings)) as client:
        ok = client.post(ROUTE, json=chat, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, ok.text
        denied = client.post(ROUTE, json=chat, headers={"Authorization": f"Bearer {API_KEY}"})
        assert denied.status_code == 401
    log = audit.read_text()
    records = [json.loads(line) for line in log.splitlines()]
    assert [r["key_id"] for r in records if r.get("route") == ROUTE] == ["ops", None]
    assert "git.lan" in log
    for text in (log, caplog.text):
        assert not [s for s in (*SECRETS, token, token[11:]) if s in text]


def test_uvicorn_and_server_log_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """The logging configuration serve() gives uvicorn masks a credential in a log line and in
    a traceback alike."""
    import logging.config

    from offline.serve.app import uvicorn_log_config

    config = uvicorn_log_config()
    config["handlers"] = {
        "default": {**config["handlers"]["default"], "stream": "ext://sys.stderr"}
    }
    config["loggers"] = {"offline.test.uvicorn": {"handlers": ["default"], "level": "INFO"}}
    config["disable_existing_loggers"] = False
    logging.config.dictConfig(config)
    logger = logging.getLogger("offline.test.uvicorn")
    try:
        try:
            raise ConnectionError(f"upstream https://ana:cl0ne-s3cret@git.lan refused {API_KEY}")
        except ConnectionError:
            logger.exception("request failed: %s", PROMPT)
    finally:
        for handler in logger.handlers:
            logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "request failed" in err and "ConnectionError" in err
    assert not [s for s in SECRETS if s in err]
