"""``offline images``: load the bundle's container images on the isolated side."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from offline.cli.render import print_json

app = typer.Typer(
    help="Push the bundle's container images into a LAN registry or a local engine.",
    no_args_is_help=True,
)


@app.command("load")
def load_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (holding manifest.json).")],
    registry: Annotated[
        str | None,
        typer.Option(help="LAN registry to push to: HOST:PORT, optionally with a /PREFIX path."),
    ] = None,
    docker: Annotated[bool, typer.Option("--docker", help="Load into the Docker engine.")] = False,
    podman: Annotated[bool, typer.Option("--podman", help="Load into podman's store.")] = False,
    tls_verify: Annotated[
        bool, typer.Option(help="Verify the registry's TLS certificate (off: plain HTTP too).")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """Copy every image in the bundle with its recorded digest, then check what is served."""
    from rich.console import Console

    from offline.bundle.load_images import load_images
    from offline.cli.render import RichReporter

    if docker and podman:
        raise typer.BadParameter("give --docker or --podman, not both")
    engine = "docker" if docker else "podman" if podman else None
    console = Console(stderr=True)
    reporter = RichReporter(console) if console.is_terminal and not json_out else None
    with reporter if reporter else nullcontext():
        loaded = load_images(
            bundle, registry, engine=engine, tls_verify=tls_verify, reporter=reporter
        )
    rows = [image.to_json() for image in loaded]
    if json_out:
        print_json(rows)
        return
    for row in rows:
        checked = "  verified" if row["served_digest"] else ""
        sys.stdout.write(
            f"{row['ref']} ({row['platform']}) -> {row['destination']}  {row['digest']}{checked}\n"
        )
    sys.stdout.write(f"{len(rows)} image(s) loaded\n")
