"""Doctor checks: the network group. Is this host really cut off from the internet?

Every probe fails fast: connects and queries wait at most the probe timeout, and the probes of
one check run at the same time, so the group takes about a second on a blocked host. A probe
counts as blocked on no route, an unreachable host, a local reject or no answer in time; a
completed connect, a DNS reply or a resolved name means the host reaches out.

Probe targets come from ``context.environ``, so tests can aim them at a fake internet (lists are
comma-separated; a target without a port gets port 443):

``DEEPSEEK_DOCTOR_PROBE_NAMES``
    public DNS names that must not resolve (default ``pypi.org,huggingface.co,github.com``)
``DEEPSEEK_DOCTOR_PROBE_V4``
    IPv4 ``addr:port`` TCP targets (default ``1.1.1.1:443,8.8.8.8:53,151.101.0.223:443``)
``DEEPSEEK_DOCTOR_PROBE_V6``
    IPv6 ``[addr]:port`` TCP targets
    (default ``[2606:4700:4700::1111]:443,[2001:4860:4860::8888]:443``)
``DEEPSEEK_DOCTOR_PROBE_DNS``
    resolver IPs asked over UDP port 53 (default ``1.1.1.1,8.8.8.8``)
``DEEPSEEK_DOCTOR_PROBE_TIMEOUT``
    seconds each probe waits (default ``1.0``)

The firewall check reads ``nft list ruleset``, ``iptables-save`` and ``ip6tables-save`` (found on
the context's ``PATH``) and the files that restore them at boot: ``/etc/nftables.conf`` with its
``include`` files, ``/etc/iptables/rules.v4`` and ``rules.v6``.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
import shutil
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from offline.doctor.context import Context
from offline.doctor.host import run
from offline.doctor.model import Check, Result, passed, problem, skipped
from offline.firewall.probes import (
    Probe,
    ask,
    at_once,
    connect,
    parse_endpoint,
    probe_all,
    resolve,
    shown,
)
from offline.redact import without_userinfo

NAMES_VAR = "DEEPSEEK_DOCTOR_PROBE_NAMES"
V4_VAR = "DEEPSEEK_DOCTOR_PROBE_V4"
V6_VAR = "DEEPSEEK_DOCTOR_PROBE_V6"
DNS_VAR = "DEEPSEEK_DOCTOR_PROBE_DNS"
TIMEOUT_VAR = "DEEPSEEK_DOCTOR_PROBE_TIMEOUT"
_DEFAULTS = {
    NAMES_VAR: "pypi.org,huggingface.co,github.com",
    V4_VAR: "1.1.1.1:443,8.8.8.8:53,151.101.0.223:443",
    V6_VAR: "[2606:4700:4700::1111]:443,[2001:4860:4860::8888]:443",
    DNS_VAR: "1.1.1.1,8.8.8.8",
    TIMEOUT_VAR: "1.0",
}
TABLE = "deepseek_offline"
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")
FAMILIES = ("ipv4", "ipv6")
_NFT_FAMILIES = {"ip": ("ipv4",), "ip6": ("ipv6",), "inet": ("ipv4", "ipv6")}
_NFT_TABLE = re.compile(r"^\s*table\s+(?:(ip|ip6|inet|arp|bridge|netdev)\s+)?([\w.-]+)")
_NFT_INCLUDE = re.compile(r'^\s*include\s+"([^"]+)"', re.MULTILINE)
_CATCH_ALL = re.compile(r"-A OUTPUT -j (DROP|REJECT)\b.*")
_LAN = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_RTF_UP, _RTF_REJECT = 0x0001, 0x0200
_GAI_ERRORS = {getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_")}
_TOOL_TIMEOUT = 2.0
FIREWALL_FIX = (
    "offline firewall apply --allow <LAN CIDR> [--allow-dns <LAN resolver>] "
    "&& offline firewall verify && offline firewall persist"
)

T = TypeVar("T")
R = TypeVar("R")


def checks(context: Context) -> list[Check]:
    def check(name: str, title: str, run: Callable[[Context], Result], warn: bool = False) -> Check:
        return Check(f"net.{name}", "network", title, run, "warning" if warn else "critical", 5.0)

    return [
        check("dns-blocked", "Public DNS names do not resolve", _dns_blocked),
        check("tcp4-blocked", "TCP to the internet over IPv4 is blocked", _tcp4_blocked),
        check("tcp6-blocked", "TCP to the internet over IPv6 is blocked", _tcp6_blocked),
        check("udp53-blocked", "Public DNS resolvers do not answer", _udp53_blocked),
        check("default-route", "No default route", _default_route, warn=True),
        check("firewall-policy", "Egress firewall on and kept", _firewall_policy, warn=True),
        check("proxy", "No proxy outside the LAN", _proxy, warn=True),
    ]


# Probe targets


def _listed(environ: Mapping[str, str], var: str) -> list[str]:
    value = environ.get(var) or _DEFAULTS[var]
    return [item.strip() for item in value.split(",") if item.strip()]


def probe_timeout(environ: Mapping[str, str]) -> float:
    value = environ.get(TIMEOUT_VAR) or _DEFAULTS[TIMEOUT_VAR]
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 10:
        raise ValueError(f"{TIMEOUT_VAR}={value!r}: give seconds between 0 and 10, e.g. 1.0")
    return seconds


def _endpoints(environ: Mapping[str, str], var: str, version: int) -> list[tuple[str, int]]:
    try:
        return [parse_endpoint(item, version) for item in _listed(environ, var)]
    except ValueError as exc:
        raise ValueError(f"{var}: {exc}") from None


# Running probes


# Probe checks


def _target(probe: Probe) -> str:
    return probe.target


def _verdict(
    probes: list[Probe],
    what: str,
    fix: str,
    show: Callable[[Probe], str] = _target,
    **evidence: Any,
) -> Result:
    evidence["probes"] = [p.to_json() for p in probes]
    reached = [show(p) for p in probes if p.reached]
    if not reached:
        return passed(f"all {len(probes)} {what} blocked", **evidence)
    return problem(f"{what} not blocked: " + "; ".join(reached), fix, **evidence)


def nameservers(resolv_conf: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf text."""
    found = [line.split() for line in resolv_conf.splitlines()]
    return [words[1] for words in found if len(words) > 1 and words[0] == "nameserver"]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _resolved(probe: Probe) -> str:
    return f"{probe.target} -> {', '.join(probe.addresses)}"


def _dns_blocked(context: Context) -> Result:
    timeout = probe_timeout(context.environ)
    probes = probe_all(resolve, _listed(context.environ, NAMES_VAR), timeout, str)
    servers = nameservers(_read(Path("/etc/resolv.conf")))
    fix = f"{FIREWALL_FIX}; and list only LAN resolvers (or none) in /etc/resolv.conf"
    return _verdict(probes, "public DNS names", fix, _resolved, resolv_conf_nameservers=servers)


def _tcp_blocked(context: Context, var: str, version: int) -> Result:
    timeout = probe_timeout(context.environ)
    targets = _endpoints(context.environ, var, version)
    probes = probe_all(lambda t: connect(t, timeout), targets, timeout, lambda t: shown(*t))
    return _verdict(probes, f"IPv{version} TCP targets", FIREWALL_FIX)


def _tcp4_blocked(context: Context) -> Result:
    return _tcp_blocked(context, V4_VAR, 4)


def _tcp6_blocked(context: Context) -> Result:
    return _tcp_blocked(context, V6_VAR, 6)


def _resolvers(environ: Mapping[str, str]) -> list[str]:
    try:
        return [str(ipaddress.ip_address(item)) for item in _listed(environ, DNS_VAR)]
    except ValueError as exc:
        raise ValueError(f"{DNS_VAR}: {exc}") from None


def _udp53_blocked(context: Context) -> Result:
    timeout = probe_timeout(context.environ)
    name = _listed(context.environ, NAMES_VAR)[0]
    resolvers = _resolvers(context.environ)
    probes = probe_all(lambda r: ask(r, name, timeout), resolvers, timeout, lambda r: shown(r, 53))
    return _verdict(probes, "public DNS resolvers over UDP 53", FIREWALL_FIX, query=name)


# Default route


def default_routes_v4(proc_net_route: str) -> list[dict[str, Any]]:
    """Default routes in a /proc/net/route text (addresses in host byte order)."""
    routes = []
    for fields in (line.split() for line in proc_net_route.splitlines()[1:]):
        if len(fields) < 8 or int(fields[1], 16) or int(fields[7], 16):
            continue
        if not int(fields[3], 16) & _RTF_UP:
            continue
        gateway = socket.inet_ntoa(struct.pack("=I", int(fields[2], 16)))
        routes.append(_route("ipv4", fields[0], gateway, int(fields[6])))
    return routes


def default_routes_v6(proc_net_ipv6_route: str) -> list[dict[str, Any]]:
    """Default routes in a /proc/net/ipv6_route text; the kernel's reject entries are not routes."""
    routes = []
    for fields in (line.split() for line in proc_net_ipv6_route.splitlines()):
        if len(fields) < 10 or int(fields[0], 16) or int(fields[1], 16):
            continue
        flags = int(fields[8], 16)
        if not flags & _RTF_UP or flags & _RTF_REJECT:
            continue
        gateway = str(ipaddress.IPv6Address(bytes.fromhex(fields[4])))
        routes.append(_route("ipv6", fields[9], gateway, int(fields[5], 16)))
    return routes


def _route(family: str, interface: str, gateway: str, metric: int) -> dict[str, Any]:
    return {"family": family, "interface": interface, "gateway": gateway, "metric": metric}


def _default_route(context: Context) -> Result:
    routes = default_routes_v4(_read(Path("/proc/net/route")))
    routes += default_routes_v6(_read(Path("/proc/net/ipv6_route")))
    if not routes:
        return passed("no default route: traffic to the internet has nowhere to go", routes=[])
    shown = ", ".join(f"via {r['gateway']} dev {r['interface']} ({r['family']})" for r in routes)
    families = sorted({r["family"] for r in routes})
    dels = "; ".join(
        "ip -6 route del default" if f == "ipv6" else "ip route del default" for f in families
    )
    fix = f"{dels}; and remove the gateway from the persistent network configuration"
    return problem(f"default route {shown}", fix, routes=routes)


# Firewall policy


def nft_egress(ruleset: str) -> dict[str, str]:
    """Families an nft ruleset blocks egress for: the deepseek_offline table or an output drop."""
    covered: dict[str, str] = {}
    family, table = "ip", ""
    for line in ruleset.splitlines():
        if found := _NFT_TABLE.match(line):
            family, table = found.group(1) or "ip", found.group(2)
            if table == TABLE:
                _cover(covered, family, f"nft table {family} {table}")
        elif "hook output" in line and "policy drop" in line:
            _cover(covered, family, f"nft table {family} {table}: output policy drop")
    return covered


def _cover(covered: dict[str, str], family: str, how: str) -> None:
    for name in _NFT_FAMILIES.get(family, ()):
        covered.setdefault(name, how)


def iptables_egress(save: str) -> str | None:
    """How an iptables-save dump blocks egress (OUTPUT policy or a final catch-all), or None."""
    policy, rules = _filter_output(save)
    if policy in ("DROP", "REJECT"):
        return f"OUTPUT policy {policy}"
    if rules and (last := _CATCH_ALL.fullmatch(rules[-1])):
        return f"OUTPUT ends with -j {last.group(1)}"
    return None


def _filter_output(save: str) -> tuple[str | None, list[str]]:
    policy, rules, in_filter = None, [], False
    for line in (raw.strip() for raw in save.splitlines()):
        if line.startswith("*"):
            in_filter = line == "*filter"
        elif in_filter and line.startswith(":OUTPUT "):
            policy = line.split()[1]
        elif in_filter and line.startswith("-A OUTPUT "):
            rules.append(line)
    return policy, rules


def active_egress(dumps: Mapping[str, str]) -> dict[str, str]:
    """Families blocked by the running rulesets, keyed by tool: nft, iptables-save, ..."""
    covered = nft_egress(dumps.get("nft", ""))
    for tool, family in (("iptables-save", "ipv4"), ("ip6tables-save", "ipv6")):
        if tool in dumps and (how := iptables_egress(dumps[tool])):
            covered.setdefault(family, f"{tool}: {how}")
    return covered


def nft_config_files(etc: Path) -> list[Path]:
    """``etc/nftables.conf`` and the files its ``include`` lines name (``/etc`` read as ``etc``)."""
    main = etc / "nftables.conf"
    files = [main]
    for pattern in _NFT_INCLUDE.findall(_read(main)):
        rebased = str(etc) + pattern[4:] if pattern.startswith("/etc/") else pattern
        rooted = rebased if rebased.startswith("/") else str(etc / rebased)
        files += [Path(p) for p in sorted(glob.glob(rooted))]
    return files


def persisted_egress(etc: Path) -> dict[str, str]:
    """Families blocked by the rules restored at boot, with the file that restores them."""
    covered: dict[str, str] = {}
    for path in nft_config_files(etc):
        for family in nft_egress(_read(path)):
            covered.setdefault(family, str(path))
    for family, name in (("ipv4", "rules.v4"), ("ipv6", "rules.v6")):
        path = etc / "iptables" / name
        if iptables_egress(_read(path)):
            covered.setdefault(family, str(path))
    return covered


def firewall_result(active: dict[str, str], persisted: dict[str, str], errors: list[str]) -> Result:
    evidence = {"active": active, "persisted": persisted, "errors": errors}
    gaps = []
    if missing := [f for f in FAMILIES if f not in active]:
        gaps.append("no active egress block for " + " and ".join(missing))
    if missing := [f for f in FAMILIES if f not in persisted]:
        gaps.append("no egress block restored at boot for " + " and ".join(missing))
    if not gaps:
        return passed("egress is blocked for IPv4 and IPv6 and restored at boot", **evidence)
    return problem("; ".join(gaps), FIREWALL_FIX, **evidence)


_TOOLS = (("nft", "list", "ruleset"), ("iptables-save",), ("ip6tables-save",))


def _dump(argv: Sequence[str], path: str) -> tuple[str | None, str]:
    found = shutil.which(argv[0], path=path)
    if found is None:
        return None, f"{argv[0]} is not on PATH"
    proc = run([found, *argv[1:]], _TOOL_TIMEOUT)
    if proc.code is None:
        return None, f"{argv[0]}: no answer in {_TOOL_TIMEOUT} s"
    if proc.code != 0:
        return None, f"{' '.join(argv)}: {proc.err.strip() or f'exit {proc.code}'}"
    return proc.out, ""


def _unanswered(argv: Sequence[str]) -> tuple[str | None, str]:
    return None, f"{argv[0]} took over {_TOOL_TIMEOUT} s"


def _firewall_policy(context: Context) -> Result:
    path = context.environ.get("PATH", os.defpath)
    outputs = at_once(lambda argv: _dump(argv, path), _TOOLS, _TOOL_TIMEOUT + 0.5, _unanswered)
    dumps = {
        argv[0]: out for argv, (out, _) in zip(_TOOLS, outputs, strict=True) if out is not None
    }
    errors = [why for _, why in outputs if why]
    if not dumps:
        reason = "cannot read the firewall rules (run as root?): " + "; ".join(errors)
        return skipped(reason, errors=errors)
    return firewall_result(active_egress(dumps), persisted_egress(Path("/etc")), errors)


# Proxies


def proxy_host(url: str) -> str | None:
    """The host a proxy URL points at, or None when there is none to find."""
    shown = without_userinfo(url)
    hostport = shown.partition("://")[2] if "://" in shown else shown
    hostport = hostport.partition("/")[0]
    if hostport.startswith("["):
        return hostport[1:].partition("]")[0] or None
    return hostport.rpartition(":")[0] if hostport.count(":") == 1 else hostport or None


def is_local_address(address: str) -> bool:
    """Loopback, link-local or a private LAN range (RFC 1918, shared 100.64/10, ULA fc00::/7)."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    return (
        ip.is_loopback or ip.is_link_local or any(ip.version == n.version and ip in n for n in _LAN)
    )


def _where(host: str, timeout: float) -> tuple[str, list[str]]:
    """Whether ``host`` is local, outside the LAN or unresolved, and the addresses it stands for."""
    if host == "localhost" or host.endswith(".localhost"):
        return "local", []
    try:
        return ("local" if is_local_address(host) else "outside"), [host]
    except ValueError:
        pass
    probe = probe_all(resolve, [host], timeout, str)[0]
    if not probe.reached:
        return f"unresolved ({probe.outcome})", []
    outside = [a for a in probe.addresses if not is_local_address(a)]
    return ("outside" if outside else "local"), list(probe.addresses)


def _proxy_entry(var: str, value: str, timeout: float) -> dict[str, Any]:
    host = proxy_host(value)
    where, addresses = _where(host, timeout) if host else ("no host", [])
    shown = without_userinfo(value)
    return {"variable": var, "value": shown, "where": where, "addresses": addresses}


def _proxy(context: Context) -> Result:
    timeout = probe_timeout(context.environ)
    found = [
        _proxy_entry(var, value, timeout)
        for var in PROXY_VARS
        if (value := context.environ.get(var, "").strip())
    ]
    outside = [f for f in found if f["where"] == "outside"]
    if not outside:
        return passed(f"{len(found)} proxy variable(s) set, none outside the LAN", proxies=found)
    names = ", ".join(f"{f['variable']}={f['value']}" for f in outside)
    unset = " ".join(f["variable"] for f in outside)
    fix = f"unset {unset}; and remove them from /etc/environment and the shell profiles"
    return problem(f"proxy outside loopback/private ranges: {names}", fix, proxies=found)
