"""The ``offline`` command. Every capability's command group is registered in GROUPS."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Annotated

import typer

from offline import __version__
from offline.errors import INTERNAL_EXIT, OfflineError

# name -> module holding a Typer ``app``. One line per capability; issues add theirs here.
GROUPS: dict[str, str] = {
    "audit": "offline.cli.audit",
    "bundle": "offline.cli.bundle",
    "cluster": "offline.cli.cluster",
    "data": "offline.cli.data",
    "doctor": "offline.cli.doctor",
    "evidence": "offline.cli.evidence",
    "firewall": "offline.cli.firewall",
    "images": "offline.cli.images",
    "label": "offline.cli.label",
    "mirror": "offline.cli.mirror",
    "serve-key": "offline.cli.serve",
    "train": "offline.cli.train",
}

# Top-level commands that are not groups: name -> (module, function).
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("offline.cli.data", "init_cmd"),
    "export": ("offline.cli.export", "export_cmd"),
    "evaluate": ("offline.cli.evaluate", "evaluate_cmd"),
    "serve": ("offline.cli.serve", "serve_cmd"),
}

app = typer.Typer(
    name="offline",
    help="deepseek-offline: fine-tune and deploy LLMs on hosts that never touch the internet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"deepseek-offline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """deepseek-offline: fine-tune and deploy LLMs on hosts that never touch the internet."""


for _name, _module in GROUPS.items():
    app.add_typer(importlib.import_module(_module).app, name=_name)
for _name, (_module, _func) in COMMANDS.items():
    app.command(_name)(getattr(importlib.import_module(_module), _func))


def report_error(exc: OfflineError) -> int:
    typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
    if exc.fix:
        typer.echo(f"  fix: {exc.fix}", err=True)
    return exc.exit_code


def main() -> None:
    """Console entry point: maps OfflineError subclasses to their documented exit codes."""
    # torchao, once installed, is imported by transformers and registers enums that torch's
    # pytree warns about on every start; the warning is for torchao's developers, not users.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    # ...and torchao says at import that its CUDA kernels do not load on a CPU-only host
    logging.getLogger("torchao").setLevel(logging.ERROR)
    try:
        app()
    except OfflineError as exc:
        sys.exit(report_error(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so plainly, with the traceback for the report
        import traceback

        traceback.print_exc()
        typer.echo(f"internal error: {exc!r}; please report it with the output above", err=True)
        sys.exit(INTERNAL_EXIT)
