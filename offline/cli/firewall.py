"""``offline firewall``: plan, apply, confirm, verify, persist, status, rollback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from offline.cli.render import print_json

app = typer.Typer(
    help="Lock egress down (IPv4 and IPv6), roll back safely, and prove it.",
    no_args_is_help=True,
)

Allow = Annotated[
    list[str], typer.Option("--allow", help="Network that may be reached (CIDR; repeat).")
]
AllowDns = Annotated[
    list[str], typer.Option("--allow-dns", help="DNS server that may be asked (IP; repeat).")
]
AllowNtp = Annotated[
    list[str], typer.Option("--allow-ntp", help="NTP server that may be asked (IP; repeat).")
]
AllowPort = Annotated[
    list[str],
    typer.Option("--allow-port", help="One port on a network: CIDR:PORT/tcp or [CIDR]:PORT/udp."),
]
AllowPublic = Annotated[
    bool,
    typer.Option(
        "--allow-public",
        help="Let the policy reach public addresses (outside private, loopback, link-local "
        "and ULA space); refused without it.",
    ),
]
Containers = Annotated[
    bool, typer.Option("--containers", help="Hold forwarded (container) traffic to the policy.")
]
BackendOpt = Annotated[
    str, typer.Option("--backend", help="nft, iptables, or auto (nft when installed).")
]
StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where the prior state is kept (default /var/lib/...)."),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command("plan")
def plan_cmd(
    allow: Allow = [],  # noqa: B006 - Typer reads list defaults; never mutated
    allow_dns: AllowDns = [],  # noqa: B006
    allow_ntp: AllowNtp = [],  # noqa: B006
    allow_port: AllowPort = [],  # noqa: B006
    containers: Containers = False,
    allow_public: AllowPublic = False,
    backend: BackendOpt = "auto",
) -> None:
    """Print the ruleset the policy gives; touches nothing."""
    from offline.firewall.backend import have
    from offline.firewall.policy import make_policy
    from offline.firewall.render import plan_text

    policy = make_policy(allow, allow_dns, allow_ntp, allow_port, containers, allow_public)
    chosen = backend if backend != "auto" else ("nft" if have("nft") else "iptables")
    for note in policy.notes:
        typer.echo(f"note: {note}", err=True)
    _warn_public(policy.public())
    _out(plan_text(policy, chosen))


def _warn_public(public: list[str]) -> None:
    if public:
        typer.echo("warning: egress allowed to PUBLIC addresses: " + ", ".join(public), err=True)


@app.command("apply")
def apply_cmd(
    allow: Allow = [],  # noqa: B006
    allow_dns: AllowDns = [],  # noqa: B006
    allow_ntp: AllowNtp = [],  # noqa: B006
    allow_port: AllowPort = [],  # noqa: B006
    containers: Containers = False,
    allow_public: AllowPublic = False,
    backend: BackendOpt = "auto",
    confirm_timeout: Annotated[
        int,
        typer.Option(help="Roll back after N seconds unless `offline firewall confirm` runs."),
    ] = 0,
    state_dir: StateDir = None,
    json_out: Json = False,
) -> None:
    """Load the policy (IPv4 and IPv6 in one step), saving what was there before."""
    from offline.firewall.apply import apply
    from offline.firewall.policy import make_policy

    policy = make_policy(allow, allow_dns, allow_ntp, allow_port, containers, allow_public)
    done = apply(policy, None if backend == "auto" else backend, confirm_timeout, state_dir)
    if json_out:
        print_json(done.to_json())
        return
    for note in done.notes:
        typer.echo(f"note: {note}", err=True)
    _warn_public(policy.public())
    allowed = ", ".join(str(n) for n in policy.allow) or "nothing but loopback"
    _out(f"applied ({done.backend}): egress allowed to {allowed}; everything else dropped")
    if done.prior_saved:
        _out("saved the prior state: `offline firewall rollback` restores it")
    if done.confirm_by:
        _out(f"run `offline firewall confirm` before {done.confirm_by}, or it rolls back")


@app.command("confirm")
def confirm_cmd(state_dir: StateDir = None) -> None:
    """Keep the rules an apply --confirm-timeout loaded (cancels the automatic rollback)."""
    from offline.firewall.apply import confirm

    confirm(state_dir)
    _out("confirmed: the rules stay")


@app.command("rollback")
def rollback_cmd(state_dir: StateDir = None, json_out: Json = False) -> None:
    """Restore the firewall exactly as it was before the first apply."""
    from offline.firewall.apply import rollback

    done = rollback(state_dir)
    if json_out:
        print_json(done.to_json())
        return
    if done.exact:
        _out(f"rolled back ({done.backend}): the ruleset is as saved ({done.after_sha256[:12]})")
        return
    _out(f"rolled back ({done.backend}), but other rules changed since apply:")
    _out("\n".join(f"  {line}" for line in done.differences))


@app.command("verify")
def verify_cmd(
    expect_reachable: Annotated[
        list[str],
        typer.Option("--expect-reachable", help="HOST:PORT that must accept TCP (repeat)."),
    ] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(help="Seconds each probe waits.")] = 1.0,
    state_dir: StateDir = None,
    json_out: Json = False,
) -> None:
    """Probe the internet (TCP v4/v6, UDP 53, DNS, QUIC, ICMP): every probe must fail."""
    from offline.firewall.verify import parse_reachable, verify

    found = verify(parse_reachable(expect_reachable), timeout, root=state_dir)
    _log_verify(state_dir, found.to_json())
    if json_out:
        print_json(found.to_json())
    else:
        _out(_verify_table(found.to_json()))
    raise typer.Exit(0 if found.ok else 1)


def _log_verify(root: Path | None, report: dict[str, Any]) -> None:
    """The verify's evidence on the state directory's chained event log (offline evidence
    takes the newest), where apply made that directory; a user who cannot write there (not
    root) is told, not stopped."""
    from offline.firewall.apply import EVENTS, record_event, state_dir

    where = state_dir(root)
    if not where.is_dir():
        return
    try:
        record_event(where, {"event": "verify", "ok": report.get("ok"), "verify": report})
    except OSError as exc:
        sys.stderr.write(f"note: the evidence was not logged to {where / EVENTS}: {exc}\n")


def _verify_table(report: dict[str, Any]) -> str:
    lines = [f"{'':3}{'probe':6} {'target':34} {'expect':10} outcome"]
    for probe in report["probes"]:
        mark = "ok" if probe["ok"] else "!!"
        kind, target, expect = probe["kind"], probe["target"], probe["expect"]
        lines.append(f"{mark:3}{kind:6} {target:34} {expect:10} {probe['outcome']}")
    drops = report["drops"]
    counted = ", ".join(
        f"{hook} {drops['before'].get(hook, {}).get('packets', 0)} -> {c['packets']} packets"
        for hook, c in drops["after"].items()
    )
    lines.append(f"backend {report['backend'] or 'none live'}; drops: {counted or 'no counters'}")
    lines.append(f"ruleset sha256 {report['ruleset_sha256']}")
    lines += _policy_lines(report["policy"])
    failed = sum(not p["ok"] for p in report["probes"])
    if not failed and report["ok"]:
        lines.append("egress blocked: verified")
    else:
        lines.append(f"{failed} probe(s) NOT as expected" if failed else "policy NOT as expected")
    return "\n".join(lines)


def _policy_lines(policy: dict[str, Any] | None) -> list[str]:
    """What the evidence says about the applied policy, for the table."""
    if policy is None:
        return ["applied policy: none recorded"]
    if policy["ok"] is not True:
        mark = "!!" if policy["ok"] is False else "??"
        return [f"{mark} applied policy ({policy['source']}): {policy['problem']}"]
    public = ", ".join(policy["public"]) or "none"
    lines = [f"applied policy: public addresses allowed: {public}"]
    if policy["matches_live"] is False:
        lines.append("note: the live rules are not the applied policy's: offline firewall status")
    return lines


@app.command("persist")
def persist_cmd(
    root: Annotated[Path, typer.Option(help="Filesystem root to write under.")] = Path("/"),
    json_out: Json = False,
) -> None:
    """Write the live rules where the boot services load them."""
    from offline.firewall.persist import persist

    done = persist(root)
    if json_out:
        print_json(done.to_json())
        return
    _out(f"persisted ({done.backend}): " + ", ".join(done.files))
    for note in done.notes:
        _out(f"note: {note}")


@app.command("status")
def status_cmd(
    root: Annotated[Path, typer.Option(help="Filesystem root to read under.")] = Path("/"),
    state_dir: StateDir = None,
    json_out: Json = False,
) -> None:
    """Live vs applied vs persisted rules, pending confirmation, other firewall managers."""
    from offline.firewall.persist import status

    found = status(root, state_dir)
    if json_out:
        print_json(found.to_json())
    else:
        _out(
            f"backend: {found.backend or 'none live'}; live: {found.live}; "
            f"as applied: {found.matches_applied}; persisted: {found.persisted} "
            f"(matches live: {found.matches_persisted})"
        )
        for manager in found.managers:
            _out(f"other manager: {manager}")
        for problem in found.problems:
            _out(f"problem: {problem}")
    raise typer.Exit(0 if found.ok else 1)
