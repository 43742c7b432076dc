"""``offline export``: TorchScript, torch.export and TVM artifacts of a trained model, gated."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from offline.cli.render import print_json


def export_cmd(
    model: Annotated[Path, typer.Option("--model", help="offline train's output directory.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the artifacts and card.")],
    format_: Annotated[
        list[str],
        typer.Option(
            "--format",
            help="torchscript, pt2 or tvm; repeat for several. `--format eager`: no artifact,"
            " the card, tokenizer and manifest for `offline serve --backend eager` (a causal"
            " LM with its KV cache).",
        ),
    ],
    quantize: Annotated[
        str,
        typer.Option(
            help="none, int8 (TorchScript/pt2: dynamic int8 Linear layers; TVM: int8 x int8"
            " where the CPU has an int8 dot product, else int8 weights decoded in the kernels)"
            " or int4 (TVM only: 4-bit weights per group of 32, x int8 activations; needs an"
            " int8 dot product: x86 with SSSE3 or later, aarch64 with --cpu cortex-a76 or"
            " another Armv8.2 core)."
        ),
    ] = "none",
    target: Annotated[str, typer.Option(help="x86_64, or aarch64 (TVM only).")] = "x86_64",
    cpu: Annotated[
        str | None,
        typer.Option(
            help="TVM: the LLVM CPU to compile for (default: this host's CPU on x86_64, generic"
            " ARMv8-A on aarch64), e.g. x86-64-v3, cortex-a72.",
        ),
    ] = None,
    seq_len: Annotated[
        int, typer.Option("--seq-len", min=2, help="Fixed sequence length of the artifacts.")
    ] = 64,
    max_context: Annotated[
        int | None,
        typer.Option(
            "--max-context",
            min=2,
            help="A causal LM: tokens (prompt and reply) `offline serve` holds per generation in"
            " its KV cache (default: the model's own limit, at most 32768).",
        ),
    ] = None,
    sample: Annotated[
        Path | None, typer.Option(help="Held-out rows for the gate (default: random ids).")
    ] = None,
    sample_rows: Annotated[
        int, typer.Option("--sample-rows", min=1, help="Held-out rows the gate uses (at most).")
    ] = 512,
    max_accuracy_drop: Annotated[
        float, typer.Option("--max-accuracy-drop", help="Gate: points of accuracy.")
    ] = 1.0,
    min_agreement: Annotated[
        float | None,
        typer.Option(
            "--min-agreement",
            help="Gate: top-1 agreement with eager fp32 (default: 0.9 when no accuracy can be"
            " measured).",
        ),
    ] = None,
    latency_runs: Annotated[int, typer.Option("--latency-runs", min=1)] = 20,
    json_out: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """Export a model, compare each artifact with the eager model, write a deployment card."""
    from offline.deploy.export import Gate, export

    with contextlib.redirect_stdout(sys.stderr):  # TVM and torch print while compiling
        artifacts = export(
            model,
            out,
            formats=[f for f in format_ if f != "eager"],
            quantize=quantize,
            target=target,
            cpu=cpu,
            seq_len=seq_len,
            max_context=max_context,
            sample=sample,
            sample_rows=sample_rows,
            gate=Gate(max_accuracy_drop, min_agreement),
            latency_runs=latency_runs,
        )
    if json_out:
        print_json([a.__dict__ for a in artifacts])
        return
    sys.stdout.write((out / "EXPORT_CARD.md").read_text())
