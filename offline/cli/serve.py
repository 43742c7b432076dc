"""``offline serve`` (run the server) and ``offline serve-key add`` (issue an API key)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="API keys for offline serve.", no_args_is_help=True)


def settings_from(options: dict[str, Any]) -> Any:
    """ServeSettings from the options given; the rest from OFFLINE_SERVE_* or defaults."""
    from pydantic import ValidationError

    from offline.config import config_error, problems
    from offline.serve.settings import ServeSettings

    given = {k: v for k, v in options.items() if v is not None}
    try:
        return ServeSettings(**given)
    except ValidationError as exc:
        raise config_error(
            "offline serve's settings (options and OFFLINE_SERVE_*)",
            problems(exc),
            fix="see `offline serve --help` (README: Serving)",
        ) from None


def serve_cmd(
    model: Annotated[
        Path | None, typer.Option(help="An `offline export` output directory.")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="auto (default: a causal LM eager with its KV cache when its source model is"
            " there, else tvm, torchscript, pt2), eager, torchscript, pt2 or tvm."
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    api_keys: Annotated[
        Path | None, typer.Option("--api-keys", help="Hashed keys file (offline serve-key add).")
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option("--max-batch", help="Rows per batch (32).")
    ] = None,
    max_wait_ms: Annotated[
        float | None, typer.Option("--max-wait-ms", help="Longest wait to fill a batch (5).")
    ] = None,
    max_sequences: Annotated[
        int | None,
        typer.Option(
            "--max-sequences", help="Generations decoded together, each with its KV cache (16)."
        ),
    ] = None,
    max_context: Annotated[
        int | None,
        typer.Option(
            "--max-context", help="Tokens per generation (default: the export's max_context)."
        ),
    ] = None,
    kv_cache_mb: Annotated[
        int | None, typer.Option("--kv-cache-mb", help="Memory for the KV cache in MiB (4096).")
    ] = None,
    prefill_chunk: Annotated[
        int | None, typer.Option("--prefill-chunk", help="Prompt tokens read per step (256).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Eager backend: auto (cuda in bf16 when there), cpu, cuda.")
    ] = None,
    canary: Annotated[Path | None, typer.Option(help="A second export to send a share to.")] = None,
    canary_percent: Annotated[
        float | None, typer.Option("--canary-percent", help="Share of requests (10).")
    ] = None,
    audit_log: Annotated[
        Path | None, typer.Option("--audit-log", help="JSONL file, one line per request.")
    ] = None,
    audit_content: Annotated[
        bool | None, typer.Option("--audit-content", help="Also log prompts and outputs.")
    ] = None,
    audit_key: Annotated[
        Path | None,
        typer.Option("--audit-key", help="ed25519 key (PEM) signing the audit log's checkpoints."),
    ] = None,
    audit_rotate_mb: Annotated[
        int | None,
        typer.Option("--audit-rotate-mb", help="Rotate the audit log past this size (MiB)."),
    ] = None,
    allow_unauthenticated: Annotated[
        bool | None,
        typer.Option("--allow-unauthenticated", help="Bind beyond loopback without API keys."),
    ] = None,
) -> None:
    """Serve an exported model: /predict, OpenAI /v1/completions and /v1/chat/completions."""
    from offline.serve.app import serve

    settings = settings_from(
        {
            "model": model,
            "backend": backend,
            "host": host,
            "port": port,
            "api_keys": api_keys,
            "max_batch": max_batch,
            "max_wait_ms": max_wait_ms,
            "max_sequences": max_sequences,
            "max_context": max_context,
            "kv_cache_mb": kv_cache_mb,
            "prefill_chunk": prefill_chunk,
            "device": device,
            "canary": canary,
            "canary_percent": canary_percent,
            "audit_log": audit_log,
            "audit_content": audit_content,
            "audit_key": audit_key,
            "audit_rotate_mb": audit_rotate_mb,
            "allow_unauthenticated": allow_unauthenticated,
        }
    )
    serve(settings)


@app.command("add")
def add_cmd(
    keys: Annotated[Path, typer.Option("--keys", help="The keys file (created 0600).")],
    key_id: Annotated[str, typer.Option("--id", help="A name for the key, e.g. the team.")],
) -> None:
    """Issue a key: its sha256 goes into the file, the key itself is printed once."""
    from offline.serve.auth import add_key

    token = add_key(keys, key_id)
    typer.echo(token)
    typer.echo(f"stored as {key_id} in {keys}; this key is not shown again", err=True)
