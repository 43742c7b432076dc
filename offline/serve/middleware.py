"""ASGI middleware around every request: the body size limit (413), request metrics, and
the audit log (one JSON line per request, credentials masked: see ``offline.redact``)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.exceptions import HTTPException

from offline.audit.chain import ChainWriter
from offline.redact import redact, redact_tree
from offline.serve.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTENT_LIMIT = 64 * 1024  # characters of request/response kept per audit record
# redacted beyond the cut too, so a credential that straddles it is masked, not half shown
_REDACT_SPAN = CONTENT_LIMIT + 4096


def _content(raw: bytes) -> str:
    """A request or response body as the audit log keeps it: cut, credentials masked."""
    text = raw[: _REDACT_SPAN * 4].decode("utf-8", "replace")[:_REDACT_SPAN]
    return redact(text)[:CONTENT_LIMIT]


class AuditLog:
    """One JSON line per request, hash-chained (:mod:`offline.audit.chain`): each line carries
    the hash of the one before it, and every 1000 lines or 5 minutes, and on close, a
    checkpoint signed with ``key`` (the site's ed25519 key) when one is given."""

    def __init__(
        self,
        path: Path,
        content: bool,
        key: Ed25519PrivateKey | None = None,
        rotate_bytes: int | None = None,
    ) -> None:
        self.path, self.content = path, content
        self._chain = ChainWriter(path, key, rotate_bytes=rotate_bytes)

    def write(self, record: dict[str, Any]) -> None:
        self._chain.write(record)

    def close(self) -> None:
        self._chain.close()


class _TooLarge(HTTPException):
    """Raised while the body is read: FastAPI passes HTTP exceptions on as they are (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class Guard:
    """Body limit, metrics and audit for every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        routes: set[str],
        max_body_bytes: int,
        audit: AuditLog | None,
    ) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes
        self.max_body_bytes, self.audit = max_body_bytes, audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        route = scope["path"] if scope["path"] in self.routes else "other"
        seen: dict[str, Any] = {"in": 0, "out": 0, "status": 500, "model": "", "body": []}
        keep = self.audit is not None and self.audit.content

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["in"] += len(message.get("body", b""))
                if seen["in"] > self.max_body_bytes:
                    raise _TooLarge(self.max_body_bytes)
                if keep:
                    seen["body"].append(message.get("body", b""))
            return message

        out_chunks: list[bytes] = []

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = dict(message.get("headers", []))
                seen["model"] = headers.get(b"x-model-version", b"").decode()
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
                if keep and sum(map(len, out_chunks)) < CONTENT_LIMIT:
                    out_chunks.append(message.get("body", b""))
            await send(message)

        length = dict(scope.get("headers", [])).get(b"content-length")
        try:
            if length is not None and int(length) > self.max_body_bytes:
                raise _TooLarge(self.max_body_bytes)
            await self.app(scope, counted_receive, counted_send)
        except _TooLarge:
            await self._too_large(counted_send)
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(route, str(seen["status"]), seen["model"]).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            if self.audit is not None:
                self.audit.write(self._record(scope, route, seen, elapsed, out_chunks))

    async def _too_large(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "message": f"request body larger than {self.max_body_bytes} bytes",
                    "type": "invalid_request_error",
                    "code": "request_too_large",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(
        self,
        scope: Scope,
        route: str,
        seen: dict[str, Any],
        elapsed: float,
        out_chunks: list[bytes],
    ) -> dict[str, Any]:
        state = scope.get("state") or {}
        client = scope.get("client")
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "key_id": state.get("key_id"),
            "client": client[0] if client else None,
            "method": scope["method"],
            "route": route,
            "status": seen["status"],
            "model": seen["model"] or None,
            "request_bytes": seen["in"],
            "response_bytes": seen["out"],
            "latency_ms": round(elapsed * 1000, 2),
        }
        record = redact_tree(record)  # every field, not only the bodies
        if self.audit is not None and self.audit.content:
            record["request"] = _content(b"".join(seen["body"]))
            record["response"] = _content(b"".join(out_chunks))
        return record
