"""``offline train``: the embedded default model (training itself arrives with its loop)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from offline.cli.render import print_json

app = typer.Typer(
    help="Local training (DeepSpeed) and the embedded default model.", no_args_is_help=True
)


@app.command("init-model")
def init_model_cmd(
    out: Annotated[Path, typer.Option("--out", help="New directory for the model.")],
    tokenizer_from: Annotated[
        Path, typer.Option("--tokenizer-from", help="Cleaned shards to train the tokenizer on.")
    ] = Path("data/clean"),
    arch: Annotated[str, typer.Option(help="Architecture.")] = "deepseek-v3",
    size: Annotated[str, typer.Option(help="tiny (a few million parameters) or small.")] = "tiny",
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", min=300, help="BPE vocabulary.")
    ] = 8000,
    seed: Annotated[int, typer.Option(help="Same text and seed, same files.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Build a random-weight DeepSeek-V3 model (MLA + MoE) and a BPE tokenizer from local text."""
    from offline.train.model_init import init_model

    done = init_model(
        out, tokenizer_from=tokenizer_from, arch=arch, size=size, vocab_size=vocab_size, seed=seed
    )
    if json_out:
        print_json({**done.__dict__, "out": str(done.out)})
        return
    sys.stdout.write(
        f"{arch} {size}: {done.parameters:,} parameters, vocabulary {done.vocab_size}"
        f" (BPE trained on {done.texts} texts) -> {done.out}\n"
    )


ConfigPath = Annotated[Path, typer.Option("--config", help="Training config (YAML).")]
Overrides = Annotated[list[str] | None, typer.Argument(help="key=value overrides.")]


@app.command("validate")
def validate_cmd(config: ConfigPath, overrides: Overrides = None) -> None:
    """List every problem of a training config at once, without running anything."""
    from offline.train.config import load_config

    cfg = load_config(config, overrides or [])
    sys.stdout.write(f"{config}: ok ({cfg.task}, zero {cfg.zero_stage}, {cfg.precision})\n")


@app.command("plan")
def plan_cmd(
    config: ConfigPath,
    overrides: Overrides = None,
    world_size: Annotated[int, typer.Option("--world-size", min=1)] = 1,
) -> None:
    """Print the DeepSpeed JSON the run would use."""
    from offline.train.config import deepspeed_config, load_config

    print_json(deepspeed_config(load_config(config, overrides or []), world_size))
