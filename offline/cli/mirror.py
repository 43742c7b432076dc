"""``offline mirror``: serve the bundle's package index to the isolated LAN."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from offline.bundle.mirror import Mirror

app = typer.Typer(
    help="Serve the bundle's package index to hosts on the LAN.", no_args_is_help=True
)


@app.command("serve")
def serve_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (holding simple/).")],
    bind: Annotated[
        str, typer.Option(help="HOST:PORT to listen on; 0.0.0.0:PORT opens it to the LAN.")
    ] = "127.0.0.1:8000",
) -> None:
    """Serve simple/, wheels/ and locks/ read-only over HTTP until Ctrl-C (or SIGTERM)."""
    from offline.bundle.mirror import serve

    serve(bundle, bind, announce=_announce)


def _announce(mirror: Mirror) -> None:
    if not mirror.loopback:
        where = "every address of this host" if mirror.wildcard else mirror.host
        typer.secho(
            f"warning: listening on {where}: any host that can reach it can read the bundle's "
            "packages (plain HTTP, no authentication); use --bind 127.0.0.1:PORT to keep it local",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.echo(f"serving {mirror.bundle} at {mirror.index_url}")
    typer.echo("install with:")
    for command in mirror.pip_commands():
        typer.echo(f"  {command}")
    typer.echo("press Ctrl-C to stop")
