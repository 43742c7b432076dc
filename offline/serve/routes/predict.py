"""``POST /predict``: texts -> label and scores, micro-batched."""

from __future__ import annotations

from fastapi import APIRouter, Response

from offline.serve.engine import Busy
from offline.serve.schemas import Prediction, PredictRequest, PredictResponse
from offline.serve.service import RETRY, ApiError, KeyId, Svc, limit_error

router = APIRouter()


@router.post(
    "/predict",
    tags=["classification"],
    responses={
        401: {"description": "no valid API key"},
        404: {"description": "unknown model"},
        413: {"description": "body too large"},
        503: {"description": "queue full; retry after Retry-After seconds"},
    },
)
async def predict(
    body: PredictRequest, svc: Svc, _key: KeyId, response: Response
) -> PredictResponse:
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
    enc = model.tokenizer(body.texts, truncation=True, max_length=model.seq_len)["input_ids"]
    try:
        logits = await slot.batcher.submit(model.pad(enc))
    except Busy as exc:
        raise ApiError(
            503, f"server busy: {exc}", "busy", kind="server_error", headers=RETRY
        ) from None
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    response.headers["X-Model-Version"] = model.version
    return PredictResponse(
        model=model.id,
        model_version=model.version,
        predictions=[
            Prediction(
                label=model.labels[int(row.argmax())],
                scores={
                    label: round(float(p), 6) for label, p in zip(model.labels, row, strict=True)
                },
            )
            for row in probs
        ],
    )
