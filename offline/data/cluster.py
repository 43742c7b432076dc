"""The Ray cluster ``clean.executor: ray`` runs on: joining it, and starting its nodes, on the
site's own machines, so that they never reach out. What runs there is
:mod:`offline.data.distributed`.

Offline by construction: the runner sets :data:`OFFLINE_ENV` before Ray is imported (no usage
report, no runtime environment built with uv), starts a local Ray without its dashboard, and
never asks for a runtime environment, so no node installs or downloads anything. Nodes joined
with ``offline cluster start`` run with the same settings.

Fault tolerance is Ray's: a task whose worker process or node died is run again elsewhere
(:data:`TASK_RETRIES` times), and the runner only takes finished results (:meth:`Cluster.get`),
so a lost worker neither loses nor duplicates a row.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from offline.errors import ConfigError, DataError, OfflineError

# What every Ray process of ours runs with; set before `import ray`.
OFFLINE_ENV = {
    # no usage statistics sent to the Ray project (ray start would ask, or assume yes)
    "RAY_USAGE_STATS_ENABLED": "0",
    # ...and no "usage statistics are disabled" notice either, which the head posts to the
    # same server regardless: it goes to the discard port on loopback instead
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    # a runner started by `uv run` would otherwise make every worker rebuild its env with uv
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}
# Runs of a task whose worker process or node died before Ray gives up on it.
TASK_RETRIES = 3
MIB = 1 << 20


def offline_env() -> None:
    """Apply :data:`OFFLINE_ENV` and token authentication (unless set) to this process.

    Call it before ``import ray``: Ray reads these settings when it is imported.
    """
    os.environ.update(OFFLINE_ENV)
    os.environ.setdefault("RAY_AUTH_MODE", "token")


def payload_bytes(value: Any) -> int:
    """About how many bytes ``value`` weighs on the wire: its Arrow buffers, arrays and text."""
    if isinstance(value, pa.RecordBatch | pa.Array | pa.Table):
        return int(value.nbytes)
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(payload_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(payload_bytes(v) for v in value.values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(payload_bytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 8


@dataclass
class Transfer:
    """What crossed between the runner and the cluster: batches, and bytes each way."""

    batches: int = 0
    sent: int = 0
    received: int = 0
    shuffled: int = 0  # between tasks, for the dedup indexes' partitions


@dataclass
class Cluster:
    """A connection to a Ray cluster (or a Ray started here for the run)."""

    address: str
    cpus: int
    memory_mb: int
    started: bool  # this process started Ray (no address given) and stops it on close
    transfer: Transfer = field(default_factory=Transfer)

    @classmethod
    def connect(cls, address: str | None, memory_mb: int) -> Cluster:
        """Join the cluster at ``address`` (``auto``: the one this host runs; ``None``: the
        environment's ``RAY_ADDRESS``, or else a Ray started here on this host's cores).

        Each task reserves ``memory_mb`` of a node's memory, so Ray never packs more tasks on
        a node than its memory holds.
        """
        offline_env()
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "clean.executor: ray needs the ray package, which is not installed",
                fix="install the toolkit with its cluster extra (pip install "
                "'deepseek-offline[cluster]', from the bundle's wheels), or set "
                "clean.executor: local",
            ) from None
        address = address or os.environ.get("RAY_ADDRESS") or None
        if ray.is_initialized():
            ray.shutdown()
        try:
            if address is None:
                from offline.data.executor import cores

                # The processes Ray starts here take the home of a node of ours.
                home = os.environ.get("HOME")
                os.environ["HOME"] = str(node_home(Path(tempfile.gettempdir()) / "ray"))
                try:
                    ray.init(
                        num_cpus=cores(),
                        include_dashboard=False,
                        logging_level=logging.WARNING,
                        log_to_driver=False,
                    )
                finally:
                    if home is None:
                        os.environ.pop("HOME", None)
                    else:
                        os.environ["HOME"] = home
            else:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DataError(
                f"cannot join the Ray cluster at {address or 'a new local Ray'}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                fix="start it first (`offline cluster start --head` on the head node, "
                "`offline cluster start --address HEAD:6379` on the others), check that this "
                "host runs the same Ray and Python as the cluster, or set clean.ray.address",
            ) from None
        resources: Callable[[], dict[str, float]] = ray.cluster_resources
        cpus = int(resources().get("CPU", 0))
        largest = max((n["memory_mb"] for n in nodes() if n["alive"]), default=0) * MIB
        if cpus < 1 or largest < memory_mb * MIB:
            ray.shutdown()
            raise ConfigError(
                f"the Ray cluster at {address or 'this host'} has {cpus} CPU(s) and at most "
                f"{largest / MIB:.0f} MiB of task memory on one node; a clean task needs one CPU "
                f"and clean.ray.memory_mb = {memory_mb}",
                fix="lower clean.ray.memory_mb, or join a node with more memory",
            )
        info = ray.get_runtime_context().gcs_address
        return cls(address or info, cpus, memory_mb, started=address is None)

    def close(self) -> None:
        """Leave the cluster (and stop the Ray this process started)."""
        import ray

        ray.shutdown()

    @staticmethod
    def get(ref: Any, what: str) -> Any:
        """``ray.get(ref)``; a task's own error as itself, a lost worker as a DataError."""
        import ray
        from ray import exceptions as rx

        try:
            return ray.get(ref)
        except rx.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, OfflineError):
                raise cause from None
            raise
        except (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError) as exc:
            raise DataError(
                f"{what}: a Ray task failed {TASK_RETRIES + 1} times (its worker or node died:"
                f" {type(exc).__name__}); nothing was written",
                fix="check the nodes (`deepseek-doctor --ray-address ADDRESS`) and their memory "
                "(lower clean.ray.memory_mb or the steps' memory_mb), then rerun",
            ) from None
        except rx.OutOfMemoryError:
            raise DataError(
                f"{what}: Ray's memory monitor killed a task {TASK_RETRIES + 1} times; "
                "nothing was written",
                fix="raise clean.ray.memory_mb (fewer tasks per node) or lower "
                "clean.batch_rows, then rerun",
            ) from None


# --- the nodes ----------------------------------------------------------------------------------

# Fixed ports, so that `offline firewall` can open exactly these on the LAN: (flag, port).
# Ray picks every other port at random; worker processes take one each from WORKER_PORTS.
PORTS: dict[str, tuple[str, int]] = {
    "gcs": ("--port", 6379),  # the head only: where nodes and runners join
    "node_manager": ("--node-manager-port", 6380),
    "object_manager": ("--object-manager-port", 6381),
    "runtime_env_agent": ("--runtime-env-agent-port", 6382),
    "dashboard_agent_grpc": ("--dashboard-agent-grpc-port", 6383),
    "dashboard_agent_http": ("--dashboard-agent-listen-port", 6384),
    "metrics_export": ("--metrics-export-port", 6385),
}
WORKER_PORTS = (10002, 10201)  # one per worker process: at most 200 workers on a node


def ray_command() -> Path:
    """The ``ray`` command of this environment (the one the toolkit's wheels installed)."""
    found = Path(sys.executable).parent / "ray"
    if not found.is_file():
        raise ConfigError(
            f"{found} not found: the ray package is not installed in this environment",
            fix="install the toolkit with its cluster extra (pip install "
            "'deepseek-offline[cluster]', from the bundle's wheels)",
        )
    return found


def token_path() -> Path:
    """Where Ray reads the cluster's shared token (``RAY_AUTH_TOKEN_PATH``, or Ray's default)."""
    configured = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(configured) if configured else Path.home() / ".ray" / "auth_token"


# The head's usage module, loaded even with the dashboard and usage statistics off, asks the
# cloud metadata addresses (169.254.169.254, metadata.google.internal) which cloud it runs on,
# unless ~/ray_bootstrap_config.yaml names the provider. A node's processes get a home of
# their own holding just that file.
BOOTSTRAP = "ray_bootstrap_config.yaml"
BOOTSTRAP_TEXT = """\
# Written by `offline cluster start`: tells Ray this cluster runs on the site's own machines,
# so that its head does not probe cloud metadata addresses to find out.
provider:
  type: local
"""


def node_home(state: Path) -> Path:
    """The home directory a node's Ray processes run with (see :data:`BOOTSTRAP`)."""
    home = state / f"home-{os.getuid()}"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic = home / f".{BOOTSTRAP}.tmp"
    atomic.write_text(BOOTSTRAP_TEXT)
    atomic.replace(home / BOOTSTRAP)
    return home


def node_env(token: Path | None = None, home: Path | None = None) -> dict[str, str]:
    """The environment a node or runner of ours starts with: :data:`OFFLINE_ENV`, token auth."""
    env = {**os.environ, **OFFLINE_ENV}
    env.setdefault("RAY_AUTH_MODE", "token")
    if token is not None:
        env["RAY_AUTH_TOKEN_PATH"] = str(token)
    if home is not None:
        env["HOME"] = str(home)
    return env


def start_command(
    *,
    head: bool,
    address: str | None,
    node_ip: str | None,
    num_cpus: int | None,
    temp_dir: Path | None,
) -> list[str]:
    """The ``ray start`` line of one node: no dashboard, no usage statistics, fixed ports."""
    if head == (address is not None):
        raise ConfigError(
            "start either the head (--head) or a node that joins one (--address HEAD:6379)",
            fix="offline cluster start --head on the first node, then offline cluster start "
            "--address HEAD_IP:6379 on each of the others",
        )
    argv = [str(ray_command()), "start", "--disable-usage-stats"]
    if head:
        argv += ["--head", "--include-dashboard=false"]
    else:
        argv += ["--address", str(address)]
    for name, (flag, port) in PORTS.items():
        if name != "gcs" or head:
            argv.append(f"{flag}={port}")
    argv += [f"--min-worker-port={WORKER_PORTS[0]}", f"--max-worker-port={WORKER_PORTS[1]}"]
    if node_ip:
        argv.append(f"--node-ip-address={node_ip}")
    if num_cpus is not None:
        argv.append(f"--num-cpus={num_cpus}")
    if temp_dir is not None:
        argv.append(f"--temp-dir={temp_dir}")
    return argv


def ensure_token(token: Path) -> bool:
    """Create the cluster's token at ``token`` (mode 0600) unless one is there; True if made."""
    if token.is_file() and token.read_text().strip():
        return False
    token.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
    return True


def run_ray(
    argv: list[str], token: Path | None = None, home: Path | None = None, timeout: float = 120
) -> str:
    """Run a ``ray`` command with the node environment; its output, or an error naming it."""
    proc = subprocess.run(
        argv,
        env=node_env(token, home),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise DataError(
            f"`{' '.join(argv[1:3])}` failed (exit {proc.returncode}):\n{tail}",
            fix="read the Ray logs under the node's temp dir (session_latest/logs), check that "
            "the ports are free and open between the nodes (`offline cluster ports`), and that "
            "every node holds the same token file",
        )
    return proc.stdout


def nodes() -> list[dict[str, Any]]:
    """The cluster's nodes as the runner sees them: address, alive, CPUs, memory."""
    import ray

    listed: Callable[[], list[dict[str, Any]]] = ray.nodes
    found = []
    for n in listed():
        found.append(
            {
                "node_id": n["NodeID"],
                "address": n["NodeManagerAddress"],
                "alive": bool(n["Alive"]),
                "cpus": int(n["Resources"].get("CPU", 0)),
                "memory_mb": int(n["Resources"].get("memory", 0) // MIB),
            }
        )
    return sorted(found, key=lambda n: (n["address"], n["node_id"]))
