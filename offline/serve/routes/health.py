"""Liveness, readiness, the model list and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from offline.serve.schemas import ModelCard, ModelList
from offline.serve.service import KeyId, Svc

router = APIRouter()


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process is alive (no key needed)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
async def readyz(svc: Svc) -> JSONResponse:
    """Every model is loaded and has answered a warm-up request (no key needed)."""
    versions = [s.model.version for s in svc.slots]
    if not svc.ready:
        return JSONResponse({"status": "loading", "models": versions}, 503, {"Retry-After": "1"})
    return JSONResponse({"status": "ready", "models": versions})


@router.get("/v1/models", tags=["openai"])
async def models(svc: Svc, _key: KeyId) -> ModelList:
    """The served models, as OpenAI's ``GET /v1/models``."""
    return ModelList(
        data=[
            ModelCard(
                id=s.model.id,
                created=s.model.created,
                version=s.model.version,
                kind=s.model.kind,
                backend=s.model.backend,
                max_model_len=s.generator.max_context if s.generator else s.model.seq_len,
            )
            for s in svc.slots
        ]
    )


@router.get("/metrics", tags=["health"], response_class=Response)
async def metrics(svc: Svc, _key: KeyId) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
