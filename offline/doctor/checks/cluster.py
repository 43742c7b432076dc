"""Doctor checks: the cluster group (ids ``cluster.*``), for a DeepSpeed ``--hostfile``.

Without a hostfile every check skips. Hosts are contacted over ssh only when all their addresses
lie inside the allowed networks, so the doctor itself never reaches past the LAN.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from offline.doctor.context import Context
from offline.doctor.host import run
from offline.doctor.model import Check, Result, passed, problem, skipped

ALLOWED_ENV = "DEEPSEEK_OFFLINE_ALLOWED_CIDRS"
# RFC 1918 and loopback; IPv6 unique-local and loopback.
PRIVATE_NETWORKS = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "fc00::/7", "::1/128",
)  # fmt: skip
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=3")
RESOLVE_TIMEOUT = 2.0
SSH_TIMEOUT = 8.0
MAX_SKEW_S = 1.0
PARALLEL = 32
NO_HOSTFILE = "no --hostfile given; the cluster checks need one"
_LINE = re.compile(r"(\S+)\s+slots=(\d+)")
_SSH_FIX = (
    "run sshd on every host and let the launching user in by key without a prompt: ssh-keygen, "
    "then for each host ssh-copy-id HOST and ssh-keyscan HOST >> ~/.ssh/known_hosts"
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Host:
    name: str
    slots: int


@dataclass(frozen=True)
class Hostfile:
    """The hosts of a DeepSpeed hostfile, and one message per line DeepSpeed would not take."""

    hosts: tuple[Host, ...]
    errors: tuple[str, ...]


def _parse_line(number: int, raw: str, seen: set[str]) -> Host | str | None:
    text = raw.split("#", 1)[0].strip()
    if not text:
        return None
    match = _LINE.fullmatch(text)
    if match is None:
        return f"line {number}: {raw.strip()!r} is not `HOSTNAME slots=N`"
    name, slots = match.group(1), int(match.group(2))
    if slots < 1:
        return f"line {number}: {raw.strip()!r} has no slots"
    if name in seen:
        return f"line {number}: {name} is listed twice"
    seen.add(name)
    return Host(name, slots)


def parse_hostfile(text: str) -> Hostfile:
    """Parse ``HOSTNAME slots=N`` lines; ``#`` starts a comment."""
    hosts: list[Host] = []
    errors: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        entry = _parse_line(number, raw, seen)
        if isinstance(entry, Host):
            hosts.append(entry)
        elif entry is not None:
            errors.append(entry)
    return Hostfile(tuple(hosts), tuple(errors))


def each(items: Iterable[T], work: Callable[[T], R], timeout: float) -> dict[T, R | None]:
    """``work(item)`` for every item, at most PARALLEL at once, in daemon threads.

    An item still running after its share of ``timeout`` maps to None and is left behind.
    """
    todo = list(dict.fromkeys(items))
    results: dict[T, R | None] = dict.fromkeys(todo)
    slots = threading.Semaphore(PARALLEL)

    def run(item: T) -> None:
        with slots:
            results[item] = work(item)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in todo]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout * math.ceil(len(todo) / PARALLEL)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return dict(results)


def resolve(name: str) -> tuple[str, ...] | str:
    """The host's addresses, or why it has none."""
    try:
        found = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return str(exc)
    return tuple(sorted({str(info[4][0]).split("%", 1)[0] for info in found}))


def resolve_all(names: Iterable[str]) -> dict[str, tuple[str, ...] | str]:
    done = each(names, resolve, RESOLVE_TIMEOUT)
    return {
        n: f"no answer within {RESOLVE_TIMEOUT:g} s" if r is None else r for n, r in done.items()
    }


def allowed_networks(environ: Mapping[str, str]) -> tuple[list[Network], list[str]]:
    """Networks from DEEPSEEK_OFFLINE_ALLOWED_CIDRS, else the private ranges; and bad entries."""
    given = environ.get(ALLOWED_ENV, "").strip()
    entries = given.split(",") if given else list(PRIVATE_NETWORKS)
    networks: list[Network] = []
    bad: list[str] = []
    for entry in (e.strip() for e in entries if e.strip()):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            bad.append(entry)
    return networks, bad


def inside(address: str, networks: list[Network]) -> bool:
    ip: Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def ssh(binary: str, host: str, command: str, env: Mapping[str, str]) -> tuple[bool, str]:
    """Run ``command`` on ``host`` without prompts: (succeeded, stdout or the error's last line)."""
    argv = [binary, *SSH_OPTIONS, host, command]
    done = run(argv, SSH_TIMEOUT, env)
    if done.code is None:
        return False, f"no answer within {SSH_TIMEOUT:g} s"
    if done.code == 0:
        return True, done.out.strip()
    return False, done.last_error_line or f"ssh exited with code {done.code}"


def read(context: Context) -> Hostfile | Result:
    """The parsed hostfile, or the result every check gives without a usable one."""
    if context.hostfile is None:
        return skipped(NO_HOSTFILE)
    try:
        return parse_hostfile(Path(context.hostfile).read_text())
    except (OSError, UnicodeError) as exc:
        return skipped(f"cannot read the hostfile {context.hostfile}: {exc}")


def _hostfile_check(context: Context) -> Result:
    path = context.hostfile
    if path is None:
        return skipped(NO_HOSTFILE)
    parsed = read(context)
    if isinstance(parsed, Result):
        fix = "pass a readable DeepSpeed hostfile: deepseek-doctor --hostfile PATH"
        return problem(parsed.message, fix)
    return judge_hostfile(path, parsed)


def judge_hostfile(path: Path, parsed: Hostfile) -> Result:
    fix = f"write each host in {path} as `HOSTNAME slots=N` (one per line; # starts a comment)"
    hosts = {h.name: h.slots for h in parsed.hosts}
    if parsed.errors:
        return problem(f"{path}: " + "; ".join(parsed.errors), fix, errors=list(parsed.errors))
    if not hosts:
        return problem(f"{path} lists no hosts", fix)
    slots = sum(hosts.values())
    return passed(f"{len(hosts)} host(s), {slots} slot(s) in {path}", hosts=hosts)


def _resolve_check(context: Context) -> Result:
    parsed = read(context)
    if isinstance(parsed, Result):
        return parsed
    found = resolve_all(h.name for h in parsed.hosts)
    failed = {n: r for n, r in found.items() if isinstance(r, str)}
    evidence = {"addresses": {n: list(r) for n, r in found.items() if not isinstance(r, str)}}
    if failed:
        return problem(
            "cannot resolve: " + "; ".join(f"{n} ({why})" for n, why in failed.items()),
            "add the hosts to /etc/hosts on this machine or to the LAN's DNS server",
            **evidence,
            failed=failed,
        )
    return passed(f"all {len(found)} host(s) resolve", **evidence)


def _outside(
    found: Mapping[str, tuple[str, ...] | str], networks: list[Network]
) -> dict[str, list[str]]:
    """Per resolved host, its addresses outside ``networks`` (hosts with none left out)."""
    result = {
        name: [a for a in addrs if not inside(a, networks)]
        for name, addrs in found.items()
        if not isinstance(addrs, str)
    }
    return {name: addrs for name, addrs in result.items() if addrs}


def _networks_check(context: Context) -> Result:
    parsed = read(context)
    if isinstance(parsed, Result):
        return parsed
    networks, bad = allowed_networks(context.environ)
    if bad:
        return problem(
            f"{ALLOWED_ENV} has entries that are not networks: {', '.join(bad)}",
            f"set {ALLOWED_ENV} to a comma list of CIDRs, e.g. 10.20.0.0/16,fd00::/8",
        )
    found = resolve_all(h.name for h in parsed.hosts)
    outside = _outside(found, networks)
    shown = [str(n) for n in networks]
    if outside:
        return problem(
            "outside the allowed networks: "
            + "; ".join(f"{n} ({', '.join(a)})" for n, a in outside.items()),
            f"list the hosts by their LAN addresses, or add their networks to {ALLOWED_ENV}",
            outside=outside,
            allowed=shown,
        )
    resolved = sum(not isinstance(r, str) for r in found.values())
    return passed(f"{resolved} resolved host(s) inside {', '.join(shown)}", allowed=shown)


def contactable(context: Context, hosts: Iterable[Host]) -> tuple[list[str], list[str]]:
    """Hosts whose addresses all lie in the allowed networks; and the others."""
    networks, _ = allowed_networks(context.environ)
    found = resolve_all(h.name for h in hosts)
    outside = _outside(found, networks)
    good = [n for n, r in found.items() if not isinstance(r, str) and n not in outside]
    return good, [n for n in found if n not in good]


def _multi_node(context: Context) -> Hostfile | Result:
    parsed = read(context)
    if isinstance(parsed, Result) or len(parsed.hosts) > 1:
        return parsed
    return skipped("one host: the DeepSpeed launcher runs it locally, without ssh")


def ssh_binary(context: Context) -> str | None:
    return shutil.which("ssh", path=context.environ.get("PATH", os.defpath))


def _ssh_check(context: Context) -> Result:
    parsed = _multi_node(context)
    if isinstance(parsed, Result):
        return parsed
    binary = ssh_binary(context)
    if binary is None:
        return problem(
            "ssh is not on PATH; the DeepSpeed launcher reaches the other hosts with it",
            "install the ssh client from the OS media: apt-get install openssh-client",
        )
    good, skipped_hosts = contactable(context, parsed.hosts)
    if not good:
        return skipped("no host is resolvable inside the allowed networks (see cluster.networks)")
    answers = each(good, lambda h: ssh(binary, h, "true", context.environ), SSH_TIMEOUT + 1)
    return judge_ssh(answers, skipped_hosts)


def judge_ssh(answers: Mapping[str, tuple[bool, str] | None], skipped_hosts: list[str]) -> Result:
    failed = {h: a[1] if a else "no answer" for h, a in answers.items() if not (a and a[0])}
    evidence: dict[str, Any] = {"reached": [h for h in answers if h not in failed]}
    evidence["not_contacted"] = skipped_hosts
    if failed:
        text = "; ".join(f"{h}: {why}" for h, why in failed.items())
        return problem(
            f"ssh without a prompt fails for {text}", _SSH_FIX, failed=failed, **evidence
        )
    note = f" (not contacted: {', '.join(skipped_hosts)})" if skipped_hosts else ""
    return passed(f"ssh -o BatchMode=yes works for {len(answers)} host(s){note}", **evidence)


def _pdsh_check(context: Context) -> Result:
    parsed = _multi_node(context)
    if isinstance(parsed, Result):
        return parsed
    found = shutil.which("pdsh", path=context.environ.get("PATH", os.defpath))
    if found:
        return passed(f"pdsh: {found}", pdsh=found)
    return problem(
        "pdsh is not on PATH; the default DeepSpeed multi-node launcher needs it",
        "install pdsh from the OS media (apt-get install pdsh), or start the launcher on each "
        "node: deepspeed --no_ssh --node_rank=N --master_addr=FIRST_HOST --hostfile HOSTFILE ...",
    )


def skew(binary: str, host: str, env: Mapping[str, str]) -> float | str:
    """The host's clock minus ours in seconds (middle of the round trip), or why unknown."""
    before = time.time()
    ok, out = ssh(binary, host, "date +%s.%N", env)
    after = time.time()
    if not ok:
        return out
    try:
        return float(out.split()[-1]) - (before + after) / 2
    except (ValueError, IndexError):
        return f"unexpected `date` output: {out[:80]!r}"


def _clock_check(context: Context) -> Result:
    parsed = _multi_node(context)
    if isinstance(parsed, Result):
        return parsed
    binary = ssh_binary(context)
    good, _ = contactable(context, parsed.hosts)
    if binary is None or not good:
        return skipped("no host can be asked for its time over ssh (see cluster.ssh)")
    found = each(good, lambda h: skew(binary, h, context.environ), SSH_TIMEOUT + 1)
    return judge_clock({h: "no answer" if s is None else s for h, s in found.items()})


def judge_clock(found: Mapping[str, float | str]) -> Result:
    offsets = {h: round(s, 3) for h, s in found.items() if isinstance(s, float)}
    unknown = {h: s for h, s in found.items() if isinstance(s, str)}
    if not offsets:
        return skipped("no host told its time over ssh (see cluster.ssh)", unknown=unknown)
    far = {h: s for h, s in offsets.items() if abs(s) > MAX_SKEW_S}
    if far:
        return problem(
            "clock skew over 1 s: " + ", ".join(f"{h} {s:+.3f} s" for h, s in far.items()),
            "sync every host from one LAN time source: chrony with `server LAN_NTP_HOST iburst`, "
            "then `chronyc makestep`",
            skew_s=offsets,
            unknown=unknown,
        )
    worst = max(abs(s) for s in offsets.values())
    return passed(f"clocks agree within {worst:.3f} s", skew_s=offsets, unknown=unknown)


def _launcher_check(context: Context) -> Result:
    parsed = read(context)
    if isinstance(parsed, Result):
        return parsed
    launcher = Path(context.python).parent / "deepspeed"
    if launcher.is_file() and os.access(launcher, os.X_OK):
        return passed(f"DeepSpeed launcher: {launcher}", launcher=str(launcher))
    bundle = context.bundle or "PREFIX/bundle"
    return problem(
        f"no DeepSpeed launcher at {launcher}",
        f"install DeepSpeed from the bundle: scripts/install-offline.sh {bundle} "
        f"--pubkey {context.pubkey or 'TRUSTED.pub.pem'}",
    )


def _host_count(context: Context) -> int:
    parsed = read(context)
    return 1 if isinstance(parsed, Result) else max(1, len(parsed.hosts))


def checks(context: Context) -> list[Check]:
    waves = math.ceil(_host_count(context) / PARALLEL)
    reach = RESOLVE_TIMEOUT * waves + (SSH_TIMEOUT + 1) * waves + 5.0
    resolving = RESOLVE_TIMEOUT * waves + 5.0

    def check(name: str, title: str, run: Callable[[Context], Result], **kw: Any) -> Check:
        return Check(f"cluster.{name}", "cluster", title, run, **kw)

    return [
        check("hostfile", "the hostfile parses", _hostfile_check, timeout=5.0),
        check("resolve", "every host resolves", _resolve_check, timeout=resolving),
        check("networks", "hosts inside the allowed networks", _networks_check, timeout=resolving),
        check("ssh", "ssh to every host without a prompt", _ssh_check, timeout=reach),
        check("pdsh", "pdsh for the launcher", _pdsh_check, severity="warning", timeout=5.0),
        check("clock", "clocks agree", _clock_check, severity="warning", timeout=reach),
        check("launcher", "the DeepSpeed launcher", _launcher_check, timeout=5.0),
    ]
