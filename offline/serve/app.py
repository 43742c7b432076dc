"""Assembles the server: models, service state, routers, error handlers, middleware."""

from __future__ import annotations

import contextlib
import copy
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from offline import __version__
from offline.audit.site import site_key
from offline.bundle.sign import load_private_key
from offline.redact import RedactingFormatter
from offline.serve.auth import KeyStore
from offline.serve.batching import ContinuousBatcher
from offline.serve.engine import Generator, MicroBatcher, Runner
from offline.serve.metrics import Metrics
from offline.serve.middleware import AuditLog, Guard
from offline.serve.models import ServedModel, load_model
from offline.serve.routes import health, openai, predict
from offline.serve.service import ApiError, Service, Slot
from offline.serve.settings import ServeSettings

log = logging.getLogger("offline.serve")
ROUTES = {
    "/healthz", "/readyz", "/v1/models", "/metrics", "/predict", "/v1/completions",
    "/v1/chat/completions", "/docs", "/openapi.json",
}  # fmt: skip


def load_models(settings: ServeSettings) -> tuple[ServedModel, ServedModel | None]:
    """The model and the canary, each verified against its manifest (raises if not)."""
    device = settings.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    primary = load_model(settings.model, settings.backend, device=device)
    if settings.canary is None:
        return primary, None
    canary = load_model(settings.canary, settings.backend, device=device)
    if canary.id == primary.id:
        canary.id = f"{canary.id}-canary"
        canary.version = f"{canary.id}@{canary.version.rsplit('@', 1)[1]}"
    if canary.kind != primary.kind:
        from offline.errors import ConfigError

        raise ConfigError(
            f"--canary {settings.canary} is a {canary.kind} model, --model a {primary.kind}",
            fix="a canary must be another version of the same kind of model",
        )
    return primary, canary


def _slot(model: ServedModel, settings: ServeSettings, runner: Runner, metrics: Metrics) -> Slot:
    if model.kind == "sequence-classification":
        batcher = MicroBatcher(
            model,
            runner,
            metrics,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            max_queue=settings.max_queue,
        )
        return Slot(model, batcher=batcher)
    if model.lm is not None or model.decoder is not None:
        context = settings.max_context or model.max_context
        if context > model.max_context:
            from offline.errors import ConfigError

            raise ConfigError(
                f"--max-context {context} is more than {model.id} was exported for"
                f" ({model.max_context})",
                fix=f"use --max-context {model.max_context} or less, or export again with a"
                " larger --max-context",
            )
        engine = ContinuousBatcher(
            model,
            runner,
            metrics,
            max_sequences=settings.max_sequences,
            max_context=context,
            kv_cache_bytes=settings.kv_cache_mb << 20,
            prefill_chunk=settings.prefill_chunk,
            max_queue=settings.max_queue,
        )
        return Slot(model, generator=engine)
    generator = Generator(
        model,
        runner,
        metrics,
        max_concurrent=settings.max_concurrent_generations,
        max_queue=settings.max_queue,
    )
    return Slot(model, generator=generator)


async def _warm_up(svc: Service) -> None:
    for slot in svc.slots:
        model = slot.model
        for rows in (1, min(2, svc.settings.max_batch)) if model.decoder is None else ():
            await svc.runner.call(model.forward, model.pad([[model.pad_id]] * rows))
        log.info("ready: %s (%s backend, %s)", model.version, model.backend, model.kind)


def create_app(
    settings: ServeSettings, models: tuple[ServedModel, ServedModel | None] | None = None
) -> FastAPI:
    """The ASGI app for ``settings``; ``models`` when they are already loaded."""
    from fastapi_offline import FastAPIOffline

    primary, canary = models or load_models(settings)
    keys = KeyStore.load(settings.api_keys) if settings.api_keys else None
    metrics, runner = Metrics(), Runner()
    audit = None
    if settings.audit_log:
        # the site key ($DEEPSEEK_OFFLINE_SITE_KEY) unless another is named
        key = load_private_key(settings.audit_key) if settings.audit_key else site_key()
        rotate = settings.audit_rotate_mb << 20 if settings.audit_rotate_mb else None
        audit = AuditLog(settings.audit_log, settings.audit_content, key, rotate)
    svc = Service(
        settings,
        _slot(primary, settings, runner, metrics),
        _slot(canary, settings, runner, metrics) if canary else None,
        runner,
        metrics,
        keys,
        audit,
        rng=random.Random(settings.seed),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for slot in svc.slots:
            if isinstance(slot.generator, ContinuousBatcher):
                await runner.call(slot.generator.allocate)
            for part in (slot.batcher, slot.generator):
                if isinstance(part, MicroBatcher | ContinuousBatcher):
                    part.start()
        await _warm_up(svc)
        svc.ready = True
        try:
            yield
        finally:
            svc.ready = False
            for slot in svc.slots:
                for part in (slot.batcher, slot.generator):
                    if isinstance(part, MicroBatcher | ContinuousBatcher):
                        await part.stop()
            runner.close()
            if audit:
                audit.close()

    app: FastAPI = FastAPIOffline(
        title="deepseek-offline",
        version=__version__,
        description="Local inference: /predict for classifiers, OpenAI-compatible generation.",
        redoc_url=None,
        static_url="/docs-assets",
        lifespan=lifespan,
    )
    app.state.svc = svc
    for module in (health, predict, openai):
        app.include_router(module.router)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(
        Guard,
        metrics=metrics,
        routes=ROUTES,
        max_body_bytes=settings.max_body_bytes,
        audit=audit,
    )
    return app


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = exc.code if isinstance(exc, ApiError) else None
    kind = exc.kind if isinstance(exc, ApiError) else "invalid_request_error"
    body = {"error": {"message": exc.detail, "type": kind, "code": code}, "detail": exc.detail}
    return JSONResponse(body, exc.status_code, headers=exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors: list[dict[str, Any]] = [
        {k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()
    ]
    message = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in errors
    )
    body = {
        "error": {"message": message, "type": "invalid_request_error", "code": "invalid_input"},
        "detail": errors,
    }
    return JSONResponse(body, 422)


def serve(settings: ServeSettings) -> None:
    """Load and verify the models, then run uvicorn until interrupted."""
    import uvicorn

    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(fmt="%(levelname)s:     %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    models = load_models(settings)
    if settings.api_keys is None:
        log.warning("no --api-keys: every local process can call this server")
    app = create_app(settings, models)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        server_header=False,
        timeout_graceful_shutdown=10,
        log_level="info",
        log_config=uvicorn_log_config(),
        access_log=False,  # the audit log records every request (--audit-log)
    )


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with every line (tracebacks too) redacted."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["inner"] = formatter.pop("()")
        formatter["()"] = f"{__name__}._redacting_formatter"
    return config


def _redacting_formatter(inner: str, **options: Any) -> logging.Formatter:
    """A dictConfig factory: uvicorn's formatter class ``inner``, wrapped to redact."""
    import importlib

    module, _, name = inner.rpartition(".")
    formatter = getattr(importlib.import_module(module), name)(**options)
    return RedactingFormatter(formatter)
