"""Request and response bodies. The OpenAI ones follow the wire format that OpenAI's clients
send and expect; fields this server does not implement are ignored, as other local servers do."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, description="texts to classify")
    model: str | None = Field(None, description="pin a served model (default: canary split)")


class Prediction(BaseModel):
    label: str
    scores: dict[str, float]


class PredictResponse(BaseModel):
    model: str
    model_version: str
    predictions: list[Prediction]


class _Generation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = ""
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    stream_options: StreamOptions | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(_Generation):
    prompt: str | list[str] = Field(description="a string (or a list holding one)")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "deepseek-offline"
    version: str
    kind: str
    backend: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


_Generation.model_rebuild()
CompletionRequest.model_rebuild()
ChatRequest.model_rebuild()
