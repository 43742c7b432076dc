"""Doctor checks: the ray group (ids ``ray.*``), for the Ray cluster ``clean.executor: ray``
runs on (``--ray-address HEAD:6379``; ``auto``: the one this host belongs to).

Without an address every check skips. With one, the doctor joins the cluster once (token auth,
as ``offline data clean`` does) and runs one small task on every live node, which reports that
node's Ray and Python versions and probes the internet the way the network group does here
(the same targets: ``DEEPSEEK_DOCTOR_PROBE_*``). Versions are held to the bundle's lock (its
``ray`` and its target Python) or, without a bundle, to this host's.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Mapping
from typing import Any

from offline.doctor.checks.network import NAMES_VAR, V4_VAR, _endpoints, _listed, probe_timeout
from offline.doctor.context import Context
from offline.doctor.host import canonical
from offline.doctor.model import Check, Result, passed, problem, skipped
from offline.firewall.probes import connect, probe_all, resolve, shown

NO_ADDRESS = "no --ray-address given; the ray checks need one"
JOIN_FIX = (
    "start the cluster with `offline cluster start --head` (and `--address HEAD:6379` on the "
    "other nodes), open its ports between the nodes (`offline cluster ports`), and give this "
    "host the cluster's token file (RAY_AUTH_TOKEN_PATH)"
)


def node_report(environ: Mapping[str, str]) -> dict[str, Any]:
    """What a node says about itself: run on the node, as a Ray task."""
    import ray

    timeout = probe_timeout(environ)
    targets = _endpoints(environ, V4_VAR, 4)
    probes = [
        *probe_all(lambda t: connect(t, timeout), targets, timeout, lambda t: shown(*t)),
        *probe_all(resolve, _listed(environ, NAMES_VAR), timeout, str),
    ]
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "ray": ray.__version__,
        "python": platform.python_version(),
        "reached": [p.target for p in probes if p.reached],
        "probes": len(probes),
    }


def survey(context: Context) -> dict[str, Any]:
    """Join the cluster, ask every live node for its :func:`node_report`, leave."""
    from offline.data.cluster import Cluster, nodes, offline_env
    from offline.errors import OfflineError

    offline_env()  # before Ray is imported: it reads its settings (token auth) at import
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    try:
        cluster = Cluster.connect(context.ray_address, memory_mb=1)
    except OfflineError as exc:
        return {"error": exc.message}
    try:
        found = nodes()
        task = ray.remote(node_report)
        refs = {
            n["node_id"]: task.options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False),
            ).remote(dict(context.environ))
            for n in found
            if n["alive"]
        }
        reports = {node: ray.get(ref, timeout=60) for node, ref in refs.items()}
    finally:
        cluster.close()
    for n in found:
        n["report"] = reports.get(n["node_id"])
    return {"address": cluster.address, "nodes": found}


def _survey(context: Context) -> dict[str, Any] | Result:
    if context.ray_address is None:
        return skipped(NO_ADDRESS)
    found = context.facts.get(("ray", context.ray_address), lambda: survey(context))
    if "error" in found:
        return problem(f"cannot join the Ray cluster: {found['error']}", JOIN_FIX)
    return found


def _join(context: Context) -> Result:
    found = _survey(context)
    if isinstance(found, Result):
        return found
    return passed(f"joined {found['address']}: {len(found['nodes'])} node(s)", **found)


def _alive(context: Context) -> Result:
    found = _survey(context)
    if isinstance(found, Result):
        return found
    dead = [n["address"] for n in found["nodes"] if not n["alive"]]
    alive = [n for n in found["nodes"] if n["alive"]]
    cpus = sum(n["cpus"] for n in alive)
    if dead:
        return problem(
            f"{len(dead)} node(s) dead: {', '.join(dead)} ({len(alive)} alive, {cpus} CPUs)",
            "restart them (`offline cluster start --address HEAD:6379` on each), or leave them "
            "out: a dead node's tasks run elsewhere, with fewer CPUs",
            nodes=found["nodes"],
        )
    return passed(f"{len(alive)} node(s) alive, {cpus} CPUs", nodes=found["nodes"])


def expected_versions(context: Context) -> tuple[str | None, str, str]:
    """The Ray and Python (major.minor) every node must run, and where that comes from."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if context.manifest is None:
        try:
            import ray

            return ray.__version__, python, "this host"
        except ImportError:
            return None, python, "this host"
    locked = None
    for env in context.manifest.get("envs") or []:
        for pkg in env.get("packages", []) if isinstance(env, dict) else []:
            if isinstance(pkg, dict) and canonical(str(pkg.get("name"))) == "ray":
                locked = str(pkg.get("version"))
    return locked, context.target_python or python, "the bundle's lock"


def _versions(context: Context) -> Result:
    found = _survey(context)
    if isinstance(found, Result):
        return found
    ray_version, python, source = expected_versions(context)
    off = []
    for n in found["nodes"]:
        report = n.get("report")
        if report is None:
            continue
        py = ".".join(report["python"].split(".")[:2])
        if (ray_version is not None and report["ray"] != ray_version) or py != python:
            off.append(f"{n['address']} runs Ray {report['ray']} on Python {report['python']}")
    want = f"Ray {ray_version or '(not locked)'} on Python {python}"
    if off:
        return problem(
            f"nodes differ from {source} ({want}): {'; '.join(off)}",
            "install the bundle's toolkit env on every node (install-offline.sh), then restart "
            "its Ray node",
            nodes=found["nodes"],
        )
    return passed(f"every node runs {want}, as {source} says", nodes=found["nodes"])


def _egress(context: Context) -> Result:
    found = _survey(context)
    if isinstance(found, Result):
        return found
    leaks = [
        f"{n['address']} reached {', '.join(n['report']['reached'])}"
        for n in found["nodes"]
        if n.get("report") and n["report"]["reached"]
    ]
    probed = [n for n in found["nodes"] if n.get("report")]
    if leaks:
        return problem(
            "nodes reach the internet: " + "; ".join(leaks),
            "run `offline firewall apply --allow CLUSTER_LAN` on each node (with "
            "`offline firewall verify` after it)",
            nodes=found["nodes"],
        )
    probes = sum(n["report"]["probes"] for n in probed)
    return passed(
        f"no node reaches the internet ({probes} probes on {len(probed)} nodes)",
        nodes=found["nodes"],
    )


def checks(context: Context) -> list[Check]:
    def check(name: str, title: str, run: Callable[[Context], Result]) -> Check:
        return Check(f"ray.{name}", "ray", title, run, "critical", 90.0)

    return [
        check("join", "This host joins the Ray cluster", _join),
        check("alive", "Every Ray node is alive", _alive),
        check("versions", "Every Ray node runs the locked Ray and Python", _versions),
        check("egress", "No Ray node reaches the internet", _egress),
    ]
