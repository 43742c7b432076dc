"""``POST /predict``: texts -> label and scores, micro-batched."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from offline.serve.engine import BadInput, Busy
from offline.serve.schemas import PredictRequest, PredictResponse
from offline.serve.service import RETRY, ApiError, KeyId, Svc, limit_error

router = APIRouter()


@router.post(
    "/predict",
    tags=["classification"],
    response_model=PredictResponse,
    responses={
        401: {"description": "no valid API key"},
        404: {"description": "unknown model"},
        413: {"description": "body too large"},
        503: {"description": "queue full; retry after Retry-After seconds"},
    },
)
async def predict(body: PredictRequest, svc: Svc, _key: KeyId) -> JSONResponse:
    """Classify each text with a sequence-classification model."""
    import numpy as np

    limits = svc.settings
    if len(body.texts) > limits.max_texts:
        raise limit_error("texts", f"at most {limits.max_texts} texts per request", len(body.texts))
    for i, text in enumerate(body.texts):
        if len(text) > limits.max_text_chars:
            raise limit_error(
                "texts", f"texts[{i}] has {len(text)} characters; at most {limits.max_text_chars}"
            )
    slot = svc.pick(body.model)
    model = slot.model
    if slot.batcher is None or model.labels is None:
        raise ApiError(
            400, f"{model.id} is a {model.kind} model: use /v1/completions", "wrong_model_kind"
        )
    try:
        probs = await slot.batcher.submit(body.texts)
    except Busy as exc:
        raise ApiError(
            503, f"server busy: {exc}", "busy", kind="server_error", headers=RETRY
        ) from None
    except BadInput as exc:
        raise limit_error("texts", str(exc)) from None
    labels = model.labels
    # built here, not validated again: /predict is the hot path (the schema documents it)
    content = {
        "model": model.id,
        "model_version": model.version,
        "predictions": [
            {
                "label": labels[int(row.argmax())],
                "scores": dict(zip(labels, np.round(row, 6).tolist(), strict=True)),
            }
            for row in probs
        ],
    }
    return JSONResponse(content, headers={"X-Model-Version": model.version})
