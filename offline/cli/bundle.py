"""``offline bundle``: build and keygen (connected side); verify, unpack, apply-diff (isolated)."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from offline.cli.render import print_json

app = typer.Typer(
    help="Pack wheels, images, models and files into a signed bundle.", no_args_is_help=True
)


@app.command("build")
def build_cmd(
    spec: Annotated[Path, typer.Option(help="Bundle spec (TOML).")] = Path("bundle/bundle.toml"),
    out: Annotated[Path, typer.Option(help="Bundle directory to write.")] = Path("dist/bundle"),
    key: Annotated[
        Path | None, typer.Option(help="ed25519 private key (PEM) to sign with.")
    ] = None,
    max_part_size: Annotated[
        str | None,
        typer.Option(help="Also write split volumes of this size, e.g. 3.9GiB (fits FAT32)."),
    ] = None,
    since: Annotated[
        Path | None, typer.Option(help="Old manifest.json: build a diff with only what it lacks.")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Download cache directory.")] = None,
    refresh: Annotated[bool, typer.Option(help="Re-resolve requirements and image tags.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Build a bundle for the isolated host described by the spec."""
    from rich.console import Console

    from offline.bundle.build import build
    from offline.bundle.split import parse_size
    from offline.cli.render import RichReporter

    part_size = parse_size(max_part_size) if max_part_size else None
    console = Console(stderr=True)
    interactive = console.is_terminal and not json_out
    reporter = RichReporter(console) if interactive else None
    with reporter if reporter else nullcontext():
        result = build(
            spec,
            out,
            key=key,
            max_part_size=part_size,
            since=since,
            cache_dir=cache_dir,
            refresh=refresh,
            reporter=reporter,
        )
    for warning in result.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if json_out:
        print_json(result.to_json())
        return
    _print_summary(result.to_json())


def _print_summary(data: dict[str, Any]) -> None:
    stats = data["stats"]
    lines = [
        f"bundle ({data['kind']}) written to {data['out']}",
        f"  files     {data['files']} ({data['bytes'] / 1e6:.1f} MB)",
        "  envs      " + ", ".join(f"{k}: {v} packages" for k, v in data["envs"].items()),
        f"  images    {data['images']}   models {data['models']}   signed {data['signed']}",
        f"  fetched   {stats['downloaded_files']} files "
        f"({stats['downloaded_bytes'] / 1e6:.1f} MB), {stats['cache_hits']} from cache, "
        f"{stats['built_sdists']} sdists built",
        f"  time      {data['seconds']} s",
    ]
    if data["parts_index"]:
        lines.append(f"  volumes   {data['parts_index']}")
    sys.stdout.write("\n".join(lines) + "\n")


@app.command("keygen")
def keygen_cmd(
    out: Annotated[Path, typer.Option(help="Private key path; the public key goes next to it.")],
    force: Annotated[bool, typer.Option(help="Replace an existing key.")] = False,
) -> None:
    """Create an ed25519 signing key pair (private key 0600, NAME.pub.pem beside it)."""
    from offline.bundle.sign import keygen

    private, public = keygen(out, overwrite=force)
    typer.echo(f"private key: {private} (keep it on the connected side)")
    typer.echo(f"public key:  {public} (give it to the isolated host out of band)")


@app.command("verify")
def verify_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    pubkey: Annotated[Path, typer.Option(help="Trusted public key (PEM), received out of band.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the signature and every file of a bundle; list every bad, missing or extra file."""
    from offline.bundle.verify import verify_bundle

    report = verify_bundle(bundle, pubkey)
    if json_out:
        print_json(report.to_json())
    else:
        typer.echo(report.summary(), err=not report.ok)
    if not report.ok:
        from offline.errors import IntegrityError

        raise typer.Exit(IntegrityError.exit_code)


@app.command("unpack")
def unpack_cmd(
    src: Annotated[
        Path, typer.Argument(help="NAME.tar, NAME.parts.json, or a directory of volumes.")
    ],
    dest: Annotated[Path, typer.Option(help="Directory to unpack the bundle into.")],
    max_unpacked_size: Annotated[
        str | None,
        typer.Option(
            metavar="SIZE", help="Refuse an archive whose files add up to more (e.g. 40G)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Check the volumes and unpack safely; a re-run skips files already unpacked."""
    from offline.bundle.archive import parse_size, unpack

    try:
        limit = parse_size(max_unpacked_size) if max_unpacked_size is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-unpacked-size") from exc
    result = unpack(src, dest, max_size=limit)
    summary = {
        "dest": str(result.dest),
        "written": result.written,
        "skipped": result.skipped,
        "bytes_written": result.bytes_written,
    }
    if json_out:
        print_json(summary)
        return
    typer.echo(
        f"unpacked into {result.dest}: {result.written} files written, "
        f"{result.skipped} already there"
    )
    typer.echo(f"next: offline bundle verify {result.dest} --pubkey TRUSTED.pub.pem")


@app.command("apply-diff")
def apply_diff_cmd(
    diff: Annotated[Path, typer.Argument(help="Diff bundle directory.")],
    base: Annotated[
        Path, typer.Option(help="Installed bundle: an install prefix or a bundle directory.")
    ],
    pubkey: Annotated[
        Path | None,
        typer.Option(help="Trusted public key; default: the one the install recorded."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the new bundle here instead of replacing --base.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Apply a differential bundle onto the installed one it was built against."""
    from offline.bundle.apply import apply_diff

    result = apply_diff(diff, base, pubkey=pubkey, out=out)
    if json_out:
        print_json(result.to_json())
        return
    typer.echo(
        f"{result.name} {result.base_version} -> {result.version} in {result.out}: "
        f"{result.added} new files, {result.reused} reused, {result.dropped} dropped"
    )
    typer.echo(f"next: scripts/install-offline.sh {result.out} --pubkey TRUSTED.pub.pem")
