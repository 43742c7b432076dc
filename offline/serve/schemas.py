"""Request and response bodies. The OpenAI ones follow the wire format that OpenAI's clients
send and expect; fields this server does not implement are ignored, as other local servers do.

Every string must be Unicode text: JSON can carry a lone surrogate (``"\\ud800"``), which no
tokenizer can encode, so it is a 422 here rather than a failure further in."""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SEED_RANGE = (-(2**63), 2**64 - 1)  # OpenAI's int64, and numpy's uint64 seeds
T = TypeVar("T")


def _check_unicode(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{where}character {exc.start} is a lone surrogate (U+{ord(text[exc.start]):04X}),"
            " which is not text: send both halves of a surrogate pair, or the character as UTF-8"
        ) from None


def _unicode(value: T) -> T:
    """``value`` (a string, or a list of strings or text parts) when every string in it is
    Unicode text; a lone surrogate raises ValueError, which pydantic makes a 422."""
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        text = getattr(item, "text", item)
        if isinstance(text, str):
            _check_unicode(text, f"item {i}: " if isinstance(value, list) else "")
    return value


Unicode = AfterValidator(_unicode)


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: Annotated[list[str], Unicode] = Field(min_length=1, description="texts to classify")
    model: Annotated[str | None, Unicode] = Field(
        None, description="pin a served model (default: canary split)"
    )


class Prediction(BaseModel):
    label: str
    scores: dict[str, float]


class PredictResponse(BaseModel):
    model: str
    model_version: str
    predictions: list[Prediction]


class _Generation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Annotated[str, Unicode] = ""
    max_tokens: int | None = Field(None, ge=1)
    # None: the model's generation_config.json default, else 1.0
    temperature: float | None = Field(None, ge=0, le=2, description="below 1e-5: greedy")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="0: every token (an extension)")
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="an extension")
    stop: Annotated[str | list[str] | None, Unicode] = None
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    n: int = Field(1, ge=1, le=16, description="choices, each its own sequence")
    stream_options: StreamOptions | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(_Generation):
    prompt: Annotated[str | list[str], Unicode] = Field(
        description="a string (or a list holding one)"
    )
    logprobs: int | None = Field(None, ge=0, le=5, description="top log-probabilities per token")
    echo: bool = Field(False, description="not supported: must be false")


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: Annotated[str | list[TextPart], Unicode]


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


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
    max_model_len: int = Field(description="tokens per request, prompt and reply")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


_Generation.model_rebuild()
CompletionRequest.model_rebuild()
ChatRequest.model_rebuild()
