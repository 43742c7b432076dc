"""``offline evaluate``: an exported model's task figures on a held-out split, per backend."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from offline.cli.render import print_json


def evaluate_cmd(
    model: Annotated[Path, typer.Option("--model", help="An `offline export` output directory.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="Held-out rows: a classifier's labelled table, or an LM's conversations/text.",
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the figures as JSON (DVC metrics).")
    ] = None,
    confusion: Annotated[
        Path | None,
        typer.Option(
            "--confusion",
            help="Classifier: write one {actual, predicted} row per example (a DVC plot).",
        ),
    ] = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            help="eager, torchscript, pt2 or tvm; repeat for several (default: every format"
            " the directory has for this host, and eager as the reference).",
        ),
    ] = None,
    rows: Annotated[
        int | None, typer.Option("--rows", min=1, help="Evaluate the first N rows only.")
    ] = None,
    min_accuracy: Annotated[
        float | None,
        typer.Option(
            "--min-accuracy",
            help="Fail (exit 12) when the deployed backend's accuracy (an LM: next-token"
            " accuracy) is below this fraction.",
        ),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(
            "--max-accuracy-drop",
            help="Fail (exit 12) when the deployed backend loses more points than this vs eager.",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Run a held-out split through each backend of an export; accuracy, F1, perplexity."""
    from offline.deploy.evaluate import check, evaluate, markdown
    from offline.errors import ConfigError
    from offline.fsutil import atomic_write_text

    with contextlib.redirect_stdout(sys.stderr):  # TVM and torch may print while loading
        result = evaluate(model, data, backends=backend, rows=rows)
    table = result.pop("confusion", None)
    if confusion is not None and table is None:
        raise ConfigError(
            f"--confusion: {model} is a {result['kind']} model, which has no confusion matrix",
            fix="drop --confusion (it is for classifiers)",
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    if confusion is not None:
        confusion.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(confusion, json.dumps(table) + "\n")
    if json_out:
        print_json(result)
    else:
        sys.stdout.write(markdown(result))
    check(result, min_accuracy, max_accuracy_drop)
