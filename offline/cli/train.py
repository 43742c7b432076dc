"""``offline train``: DeepSpeed training, its config checks and plan, and the default model.

``offline train --config train.yaml [key=value ...]`` runs training: a first argument that is
not a subcommand name goes to ``run``. ``python -m offline.train`` is the same command for
DeepSpeed's launcher, which adds ``--local_rank``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from offline.cli.render import print_json
from offline.data.layout import LAYOUT
from offline.errors import ConfigError


class _RunByDefault(TyperGroup):
    """``offline train --config x.yaml`` means ``offline train run --config x.yaml``."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return list(super().parse_args(ctx, args))


app = typer.Typer(
    cls=_RunByDefault,
    help="Local training (DeepSpeed) and the embedded default model.",
    no_args_is_help=True,
)


@app.command("init-model")
def init_model_cmd(
    out: Annotated[Path, typer.Option("--out", help="New directory for the model.")],
    tokenizer_from: Annotated[
        Path, typer.Option("--tokenizer-from", help="Cleaned shards to train the tokenizer on.")
    ] = Path(LAYOUT.clean),
    arch: Annotated[
        str,
        typer.Option(
            help="deepseek-v3 (the toolkit's own), or a published architecture cut down:"
            " qwen2 (Qwen2.5-1.5B), llama3 (Llama-3.1-8B), deepseek-v2 (DeepSeek-V2-Lite)."
        ),
    ] = "deepseek-v3",
    size: Annotated[str, typer.Option(help="tiny (a few million parameters) or small.")] = "tiny",
    chat_format: Annotated[
        str | None,
        typer.Option(
            "--chat-format",
            help="Tokens and chat template of: qwen2.5, llama3.1, deepseek-r1, deepseek-v3,"
            " mistral, gemma (default: the architecture's family).",
        ),
    ] = None,
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", min=300, help="BPE vocabulary.")
    ] = 8000,
    seed: Annotated[int, typer.Option(help="Same text and seed, same files.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Build a random-weight model and a BPE tokenizer (trained on local text) with no hub."""
    from offline.train.model_init import init_model

    done = init_model(
        out,
        tokenizer_from=tokenizer_from,
        arch=arch,
        size=size,
        vocab_size=vocab_size,
        seed=seed,
        chat_format=chat_format,
    )
    if json_out:
        print_json({**done.__dict__, "out": str(done.out)})
        return
    like = f" (cut from {done.source})" if done.source else ""
    chat = f", chat format {done.chat_format}" if done.chat_format else ""
    sys.stdout.write(
        f"{arch} {size}{like}: {done.parameters:,} parameters, vocabulary {done.vocab_size}"
        f" (BPE trained on {done.texts} texts){chat} -> {done.out}\n"
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
    world_size: Annotated[int, typer.Option("--world-size", min=1, help="Ranks in all.")] = 1,
    accelerator: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: what this host has).")
    ] = None,
) -> None:
    """Print the DeepSpeed JSON the run would use."""
    from offline.train.config import deepspeed_config, load_config

    cfg = load_config(config, overrides or [])
    if accelerator is None:
        import torch

        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator not in ("cpu", "cuda"):
        raise ConfigError(f"unknown --accelerator {accelerator!r}", fix="use cpu or cuda")
    print_json(deepspeed_config(cfg, world_size, accelerator))


@app.command("run")
def run_cmd(
    config: ConfigPath,
    overrides: Overrides = None,
    resume: Annotated[
        str,
        typer.Option(
            help="none: a fresh run; auto: the newest checkpoint whose manifest verifies;"
            " or a checkpoint directory."
        ),
    ] = "none",
    local_rank: Annotated[int | None, typer.Option("--local_rank", hidden=True)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train (the default subcommand: `offline train --config train.yaml key=value ...`)."""
    from offline.train.config import load_config
    from offline.train.loop import train

    del local_rank  # DeepSpeed's launcher passes it; LOCAL_RANK in the environment says the same
    cfg = load_config(config, overrides or [])
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed prints; stdout is the result
        report = train(cfg, config.parent, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if json_out:
        print_json(
            {
                "output_dir": str(report.output_dir),
                "run_dir": str(report.run_dir),
                "steps": report.steps,
                "resumed_from": report.resumed_from,
                "rollbacks": report.rollbacks,
                "metrics": report.metrics,
            }
        )
        return
    m = report.metrics
    shown = "  ".join(
        f"{k} {m[k]:.4f}"
        for k in ("loss_first", "loss", "eval_loss", "perplexity", "accuracy")
        if isinstance(m.get(k), float)
    )
    sys.stdout.write(
        f"trained {report.steps} steps ({m['tokens']:,} tokens, {m['tokens_per_s']:,.0f} tok/s)"
        f"  {shown}\n-> {report.output_dir}\n"
    )
