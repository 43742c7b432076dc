"""``offline cluster``: the site's Ray cluster for ``clean.executor: ray``, started offline."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from offline.cli.render import print_json

app = typer.Typer(
    help="Start, inspect and stop the Ray nodes that `clean.executor: ray` runs on: no "
    "dashboard, no usage statistics, token authentication, fixed ports.",
    no_args_is_help=True,
)

Token = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="The cluster's shared token (default: RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token); "
        "the same file on every node and runner.",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command("start")
def start_cmd(
    head: Annotated[bool, typer.Option("--head", help="Start the head node.")] = False,
    address: Annotated[
        str | None, typer.Option("--address", help="Join the head at HOST:6379.")
    ] = None,
    node_ip: Annotated[
        str | None, typer.Option("--node-ip", help="This node's address on the cluster LAN.")
    ] = None,
    num_cpus: Annotated[
        int | None, typer.Option("--num-cpus", min=1, help="CPUs to offer (default: all).")
    ] = None,
    temp_dir: Annotated[
        Path | None, typer.Option("--temp-dir", help="Ray's sessions, logs and spilled objects.")
    ] = None,
    token_file: Token = None,
) -> None:
    """Start this host's Ray node (the head, or one that joins it) in the background."""
    from offline.data.cluster import ensure_token, node_home, run_ray, start_command, token_path

    argv = start_command(
        head=head, address=address, node_ip=node_ip, num_cpus=num_cpus, temp_dir=temp_dir
    )
    token = (token_file or token_path()).absolute()
    if head and ensure_token(token):
        _out(f"cluster token written to {token}: copy it to every node and runner (mode 0600)")
    elif not token.is_file():
        from offline.errors import NotFoundError

        raise NotFoundError(
            f"cluster token {token} not found",
            fix="copy the head's token file here (same path, mode 0600), or pass --token-file",
        )
    state = temp_dir or Path(tempfile.gettempdir()) / "ray"
    run_ray(argv, token, node_home(state))
    where = "head" if head else f"node joined {address}"
    _out(f"ray {where} started{f' on {node_ip}' if node_ip else ''}")


@app.command("stop")
def stop_cmd(token_file: Token = None) -> None:
    """Stop the Ray processes of this host."""
    from offline.data.cluster import ray_command, run_ray

    run_ray([str(ray_command()), "stop", "--force"], token_file)
    _out("ray stopped")


@app.command("status")
def status_cmd(
    address: Annotated[str, typer.Option("--address", help="The head, HOST:6379.")] = "auto",
    token_file: Token = None,
    json_out: Json = False,
) -> None:
    """The cluster's nodes: address, alive, CPUs, memory."""
    import os

    from offline.data.cluster import Cluster, nodes

    if token_file is not None:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    cluster = Cluster.connect(address, memory_mb=1)
    try:
        found = nodes()
    finally:
        cluster.close()
    if json_out:
        print_json({"address": cluster.address, "nodes": found})
        return
    for n in found:
        state = "alive" if n["alive"] else "DEAD"
        _out(f"{n['address']:<16} {state:<6} {n['cpus']:>3} CPU  {n['memory_mb']:>8} MiB")
    _out(f"{sum(n['alive'] for n in found)} node(s) alive at {cluster.address}")


@app.command("ports")
def ports_cmd(json_out: Json = False) -> None:
    """The TCP ports the nodes listen on: open them between the nodes, and only there."""
    from offline.data.cluster import PORTS, WORKER_PORTS

    rows = [(name, port) for name, (_, port) in PORTS.items()]
    if json_out:
        print_json({**dict(rows), "workers": list(WORKER_PORTS)})
        return
    for name, port in rows:
        _out(f"{port:<12} {name}{' (head only)' if name == 'gcs' else ''}")
    _out(f"{WORKER_PORTS[0]}-{WORKER_PORTS[1]}  workers (one per worker process)")
