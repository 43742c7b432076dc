"""Every setting of ``offline serve`` in one place: command-line options override environment
variables (``OFFLINE_SERVE_<NAME>``, e.g. ``OFFLINE_SERVE_MAX_BATCH=16``), which override the
defaults below. ``deploy/serve/deepseek-serve.env`` lists them for the systemd unit."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from offline.airgap import is_loopback

Backend = Literal["auto", "eager", "torchscript", "pt2", "tvm"]


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OFFLINE_SERVE_", extra="forbid")

    model: Path = Field(description="an `offline export` output directory")
    backend: Backend = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: Path | None = Field(None, description="file of hashed keys (offline serve-key add)")
    allow_unauthenticated: bool = Field(
        False, description="serve without API keys on an address other than loopback"
    )
    # micro-batching of /predict
    max_batch: int = Field(32, ge=1, le=64)
    max_wait_ms: float = Field(5.0, ge=0, le=1000)
    max_queue: int = Field(256, ge=1, description="waiting requests before 503")
    # generation
    max_concurrent_generations: int = Field(
        4, ge=1, description="generations at once on an artifact (no KV cache)"
    )
    max_tokens_limit: int | None = Field(
        None, ge=1, description="largest max_tokens a request may ask (default: the context)"
    )
    # continuous batching of an eager causal LM over its KV cache
    max_sequences: int = Field(16, ge=1, le=256, description="sequences decoded together")
    max_context: int | None = Field(
        None, ge=2, description="tokens per sequence (default: the export's max_context)"
    )
    kv_cache_mb: int = Field(4096, ge=1, description="memory for the KV cache, in MiB")
    prefill_chunk: int = Field(256, ge=16, description="prompt tokens read per step")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="eager backend: cuda (bf16) when a GPU is there, else cpu"
    )
    # input limits
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_texts: int = Field(64, ge=1, description="texts per /predict request")
    max_text_chars: int = Field(8192, ge=1)
    # canary
    canary: Path | None = None
    canary_percent: float = Field(10.0, ge=0, le=100)
    # audit
    audit_log: Path | None = None
    audit_content: bool = Field(False, description="also log prompts and outputs")
    audit_key: Path | None = Field(
        None,
        description="ed25519 key (PEM) that signs the audit log's checkpoints (default: the"
        " site key, $DEEPSEEK_OFFLINE_SITE_KEY)",
    )
    audit_rotate_mb: int | None = Field(
        None, ge=1, description="rotate the audit log past this size; the chain goes on"
    )
    seed: int | None = Field(None, description="seed the canary split (tests, replays)")

    @model_validator(mode="after")
    def _open_needs_keys(self) -> ServeSettings:
        if self.api_keys is None and not self.allow_unauthenticated and not is_loopback(self.host):
            raise ValueError(
                f"--host {self.host} without --api-keys would let anyone on the network call the"
                " model: pass --api-keys FILE (offline serve-key add), or --allow-unauthenticated"
            )
        return self
