"""The state one server holds (models, their batcher or generator, keys, metrics, audit) and
the dependencies routes take from it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from offline.serve.auth import KeyStore
from offline.serve.batching import ContinuousBatcher
from offline.serve.engine import Generator, MicroBatcher, Runner
from offline.serve.metrics import Metrics
from offline.serve.middleware import AuditLog
from offline.serve.models import ServedModel
from offline.serve.settings import ServeSettings


class ApiError(HTTPException):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers)
        self.code, self.kind = code, kind


@dataclass
class Slot:
    """One served model and what feeds it."""

    model: ServedModel
    batcher: MicroBatcher | None = None
    generator: Generator | ContinuousBatcher | None = None


@dataclass
class Service:
    settings: ServeSettings
    primary: Slot
    canary: Slot | None
    runner: Runner
    metrics: Metrics
    keys: KeyStore | None
    audit: AuditLog | None
    ready: bool = False
    rng: random.Random = field(default_factory=random.Random)

    @property
    def slots(self) -> list[Slot]:
        return [self.primary] + ([self.canary] if self.canary else [])

    def pick(self, requested: str | None) -> Slot:
        """The model for a request: the one it names, else the canary split."""
        if not self.ready:
            raise ApiError(503, "the model is still loading", "not_ready", headers=RETRY)
        if requested in (None, "", self.primary.model.id):
            if self.canary and self.rng.random() * 100 < self.settings.canary_percent:
                return self.canary
            return self.primary
        if self.canary and requested == self.canary.model.id:
            return self.canary
        served = ", ".join(s.model.id for s in self.slots)
        raise ApiError(
            404, f"model {requested!r} is not served here (served: {served})", "model_not_found"
        )


RETRY = {"Retry-After": "1"}
_bearer = HTTPBearer(auto_error=False, description="an API key from `offline serve-key add`")


def get_service(request: Request) -> Service:
    svc: Service = request.app.state.svc
    return svc


def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str | None:
    """The caller's key id; 401 without a valid key (no keys file: everyone, on loopback)."""
    svc = get_service(request)
    if svc.keys is None:
        return None
    key_id = svc.keys.identify(credentials.credentials) if credentials else None
    if key_id is None:
        raise ApiError(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            "invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.key_id = key_id
    return key_id


Svc = Annotated[Service, Depends(get_service)]
KeyId = Annotated[str | None, Depends(require_key)]


def limit_error(field_name: str, message: str, value: Any = None) -> Exception:
    """A 422 that names the field, in FastAPI's validation error shape."""
    from fastapi.exceptions import RequestValidationError

    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field_name), "msg": message, "input": value}]
    )
