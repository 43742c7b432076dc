"""``offline label``: a local Label Studio server, push rows, pull annotations."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from offline.cli.render import print_json
from offline.data.layout import LAYOUT

app = typer.Typer(
    help="Label with a local Label Studio server (telemetry off).", no_args_is_help=True
)
server_app = typer.Typer(
    help="Start, stop or check the workspace's Label Studio.", no_args_is_help=True
)
app.add_typer(server_app, name="server")

Workspace = Annotated[
    Path, typer.Option("--workspace", "-w", help="The workspace (default: current directory).")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


@server_app.command("start")
def start_cmd(
    workspace: Workspace = Path("."),
    host: Annotated[
        str, typer.Option(help="Address to bind; a LAN one needs --password-file.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    db_url: Annotated[
        str | None,
        typer.Option("--db-url", help="postgresql://... (default: SQLite in the workspace)."),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="Admin password (required for a LAN bind)."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the health endpoint.")] = 300,
    json_out: Json = False,
) -> None:
    """Start Label Studio and wait until it answers; prints the URL and how to log in."""
    from offline.labeling.server import start

    done = start(
        workspace, host=host, port=port, db_url=db_url, password_file=password_file, timeout=timeout
    )
    if json_out:
        print_json(
            {"url": done.url, "pid": done.pid, "already": done.already, "seconds": done.seconds}
        )
        return
    if done.warning:
        typer.secho(f"warning: {done.warning}", fg=typer.colors.YELLOW, err=True)
    state = "already running" if done.already else f"up in {done.seconds:.0f} s"
    _out(f"Label Studio {state}: {done.url}")
    _out(
        f"  log in as {done.username}; the password and API token are in {done.secret_file} (0600)"
    )


@server_app.command("stop")
def stop_cmd(workspace: Workspace = Path(".")) -> None:
    """Stop the workspace's Label Studio."""
    from offline.labeling.server import stop

    _out("stopped" if stop(workspace) else "not running")


@server_app.command("status")
def status_cmd(workspace: Workspace = Path("."), json_out: Json = False) -> None:
    """Say whether the workspace's Label Studio is up (exit 1 when it is not)."""
    from offline.labeling.server import status

    now = status(workspace)
    if json_out:
        print_json({"running": now.running, "url": now.url, "pid": now.pid, "detail": now.detail})
    else:
        _out(f"{'up' if now.running else 'down'}: {now.url or '-'} ({now.detail})")
    if not now.running:
        raise typer.Exit(1)


@app.command("push")
def push_cmd(
    template: Annotated[
        str, typer.Option(help="ner, classification, sft_review, conversation_review.")
    ],
    input_path: Annotated[Path, typer.Option("--input", help="Cleaned shards.")] = Path(
        LAYOUT.clean
    ),
    dataset: Annotated[str | None, typer.Option(help="Only this dataset's shards.")] = None,
    project: Annotated[
        str | None, typer.Option(help="Project title (default: the template name).")
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="JSONL of pre-annotations by record_id.")
    ] = None,
    rules: Annotated[
        bool, typer.Option("--rules", help="Pre-annotate with keyword rules.")
    ] = False,
    workspace: Workspace = Path("."),
    json_out: Json = False,
) -> None:
    """Create or update the project and import the rows it does not hold yet."""
    from offline.labeling.project import push

    done = push(
        workspace,
        template,
        workspace / input_path if not input_path.is_absolute() else input_path,
        dataset=dataset,
        project=project,
        predictions_file=predictions,
        keyword_rules=rules,
    )
    if json_out:
        print_json(done.__dict__)
        return
    _out(
        f"{done.project}: {done.imported} task(s) imported, {done.already} already there,"
        f" {done.predictions} with predictions; {done.url}"
    )


@app.command("sample")
def sample_cmd(
    per_step: Annotated[
        int, typer.Option("--per-step", min=1, help="Rows per step (and kept).")
    ] = 20,
    seed: Annotated[int, typer.Option(help="Same seed, same sample.")] = 0,
    workspace: Workspace = Path("."),
    json_out: Json = False,
) -> None:
    """Push a stratified sample of kept and rejected rows per cleaning step for review;
    `pull` then reports each step's precision in metrics/label.json."""
    from offline.labeling.project import sample

    done = sample(workspace, per_step, seed)
    if json_out:
        print_json(done.__dict__)
        return
    already = f"{done.already} already there"
    _out(f"{done.project}: {done.imported} review task(s) imported, {already}; {done.url}")


@app.command("pull")
def pull_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory for the Parquet files.")] = Path(
        LAYOUT.labeled
    ),
    keep_last: Annotated[
        bool,
        typer.Option(
            "--keep-last",
            help="When Label Studio cannot be asked (not running, or no project pushed from"
            " this checkout), keep the snapshot already in --out, with a warning, instead of"
            " failing or emptying it. The dvc.yaml label stage uses it.",
        ),
    ] = False,
    workspace: Workspace = Path("."),
    json_out: Json = False,
) -> None:
    """Export every pushed project's annotations to Parquet; agreement to metrics/label.json."""
    from offline.labeling.project import pull

    done = pull(workspace, workspace / out if not out.is_absolute() else out, keep_last)
    if done.kept:
        since = done.metrics["kept_last"]["since"]
        sys.stderr.write(
            f"warning: {done.kept}: {out} is the snapshot pulled at {since}, not fresh from"
            f" Label Studio (start it: offline label server start --workspace {workspace})\n"
        )
    if json_out:
        print_json(done.metrics)
        return
    if not done.projects:
        _out(f"no project pushed yet (`offline label push --template NAME`): {out} is empty")
    for title, n in done.projects.items():
        _out(f"{title}: {n} annotation(s) -> {out / (title + '.parquet')}")


@app.command("accept-predictions")
def accept_predictions_cmd(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    workspace: Workspace = Path("."),
    json_out: Json = False,
) -> None:
    """DEMOS AND BOOTSTRAPPING ONLY: turn predictions into annotations (no person looked)."""
    from offline.labeling.project import accept_predictions

    done = accept_predictions(workspace, project)
    if json_out:
        print_json(done)
        return
    for title, n in done.items():
        _out(f"{title}: {n} prediction(s) accepted as annotations (not reviewed by a person)")
