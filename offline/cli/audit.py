"""``offline audit``: check hash-chained audit logs (the server's ``--audit-log``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from offline.cli.render import print_json

app = typer.Typer(help="Check tamper-evident (hash-chained) logs.", no_args_is_help=True)


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command("verify")
def verify_cmd(
    files: Annotated[list[Path], typer.Argument(help="The log and its rotated files (any order).")],
    pubkey: Annotated[
        Path | None,
        typer.Option("--pubkey", help="Public key (PEM) of the key that signs the checkpoints."),
    ] = None,
    partial: Annotated[
        bool,
        typer.Option("--partial", help="The oldest files are gone (retention): check the rest."),
    ] = False,
    closed: Annotated[
        bool,
        typer.Option("--closed", help="The log must end with its writer's closing checkpoint."),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Name the first edited, deleted, inserted or reordered line, a forged checkpoint, and a
    tail that no checkpoint covers. Exit 1 on any of them (the tail: with --closed)."""
    from offline.audit.chain import verify
    from offline.bundle.sign import load_public_key
    from offline.errors import NotFoundError

    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise NotFoundError(f"no such log: {', '.join(missing)}")
    key = load_public_key(pubkey) if pubkey else None
    verdict = verify(files, key, partial=partial)
    failed = not verdict.ok or (closed and not verdict.closed)
    if json_out:
        print_json(verdict.as_dict())
    else:
        for problem in verdict.problems:
            _out(f"TAMPERED  {problem.where}: {problem.what}")
        if verdict.ok:
            signed = (
                f"{verdict.signed} signed, checked with {pubkey}"
                if key
                else f"{verdict.signed} signed, not checked (no --pubkey)"
            )
            _out(
                f"chain intact: {verdict.lines} lines, {verdict.checkpoints} checkpoints ({signed})"
            )
            if verdict.tail:
                _out(f"{'TAIL' if closed else 'note'}  {verdict.tail}")
    if failed:
        raise typer.Exit(1)
