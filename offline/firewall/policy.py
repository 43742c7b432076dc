"""The egress policy: what may leave the host. Pure data, parsed and checked from the options.

A policy allows, besides loopback and replies on established connections:

- whole networks (``--allow CIDR``): the LAN, the cluster, the NAS;
- DNS (UDP and TCP port 53) and NTP (UDP port 123) to the listed servers only;
- single ports on a network (``--allow-port CIDR:PORT/PROTO``);
- IPv6 neighbour discovery on the link (always: without it IPv6 on the LAN stops working).

Everything else is dropped and counted. ``containers`` holds forwarded traffic (containers, VMs
routed through the host) to the same policy.

What the checks refuse, also after overlapping and adjacent items are merged:

- a set that adds up to a whole address family (``0.0.0.0/1`` and ``128.0.0.0/1`` are
  ``0.0.0.0/0``), for networks and for the same port on networks: that is the whole internet;
- any public address (outside :data:`LAN_SPACE`), unless ``allow_public`` (``--allow-public``):
  a network is public when any part of it is, so ``172.0.0.0/8`` (which holds the private
  ``172.16.0.0/12``) and the carrier-grade NAT space ``100.64.0.0/10`` both are;
- host names: rules hold addresses, and nothing here ever looks a name up.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from offline.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

TABLE = "deepseek_offline"
CHAIN_PREFIX = "DSO-"
LOG_PREFIX = "offline-drop"
LOG_RATE = (10, "minute", 5)  # at most 10 log lines a minute, bursts of 5: drops are still counted
PROTOCOLS = ("tcp", "udp")
T = TypeVar("T")

LAN_SPACE: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",  # RFC 1918 private
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local
        "::1/128",  # loopback
        "fe80::/10",  # link-local
        "fc00::/7",  # unique local (ULA)
    )
)
WHOLE = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
_HOST_NAME = re.compile(r"(?:[a-z0-9-]+\.)*[a-z][a-z0-9-]*\.?", re.IGNORECASE)
_NOT_HEX = re.compile(r"[g-z]", re.IGNORECASE)
_FIX_SYNTAX = (
    "give networks as CIDR (192.168.10.0/24, fd00:10::/64), servers as IP addresses, "
    "ports as CIDR:PORT/tcp or [CIDR]:PORT/udp"
)
_FIX_FAMILY = "list only the networks the host must reach, never the whole internet"
_FIX_PUBLIC = (
    "keep to private, loopback, link-local and ULA space, or add --allow-public if the "
    "host must reach these public addresses"
)


@dataclass(frozen=True, order=True)
class PortRule:
    """Traffic to ``network`` on ``first``..``last`` (one port when equal) over ``proto``."""

    network: Network
    first: int
    last: int
    proto: str

    def __str__(self) -> str:
        ports = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        where = f"[{self.network}]" if self.network.version == 6 else str(self.network)
        return f"{where}:{ports}/{self.proto}"


@dataclass(frozen=True)
class Policy:
    """An egress policy. Build it with :func:`make_policy`, which checks and normalises."""

    allow: tuple[Network, ...] = ()
    dns: tuple[Address, ...] = ()
    ntp: tuple[Address, ...] = ()
    ports: tuple[PortRule, ...] = ()
    containers: bool = False
    allow_public: bool = False
    notes: tuple[str, ...] = field(default=(), compare=False)

    def networks(self, version: int) -> list[Network]:
        return [n for n in self.allow if n.version == version]

    def servers(self, kind: str, version: int) -> list[Address]:
        return [a for a in getattr(self, kind) if a.version == version]

    def port_rules(self, version: int) -> list[PortRule]:
        return [r for r in self.ports if r.network.version == version]

    def public(self) -> list[str]:
        """What the policy lets out to public space, one item per line; empty for a LAN policy."""
        found = [str(part) for network in self.allow for part in public_part(network)]
        for kind, label in (("dns", "DNS"), ("ntp", "NTP")):
            found += [f"{a} ({label})" for a in getattr(self, kind) if is_public(a)]
        found += [
            str(PortRule(part, rule.first, rule.last, rule.proto))
            for rule in self.ports
            for part in public_part(rule.network)
        ]
        return found

    def to_json(self) -> dict[str, object]:
        return {
            "allow": [str(n) for n in self.allow],
            "dns": [str(a) for a in self.dns],
            "ntp": [str(a) for a in self.ntp],
            "ports": [str(r) for r in self.ports],
            "containers": self.containers,
            "allow_public": self.allow_public,
            "public": self.public(),
        }


def make_policy(
    allow: Sequence[str] = (),
    dns: Sequence[str] = (),
    ntp: Sequence[str] = (),
    ports: Sequence[str] = (),
    containers: bool = False,
    allow_public: bool = False,
) -> Policy:
    """Parse and check the options into a :class:`Policy`; every refusal is in one ConfigError."""
    errors: list[tuple[str, str]] = []
    notes: list[str] = []
    networks = _collect(allow, lambda v: parse_network(v, "--allow", notes), errors)
    resolvers = _collect(dns, lambda v: parse_address(v, "--allow-dns"), errors)
    clocks = _collect(ntp, lambda v: parse_address(v, "--allow-ntp"), errors)
    port_rules = _collect(ports, lambda v: parse_port_rule(v, notes), errors)
    servers = [("--allow-dns", resolvers), ("--allow-ntp", clocks)]
    errors += _refusals(networks, port_rules, servers, allow_public)
    if errors:
        fixes = dict.fromkeys(fix for _, fix in errors)
        raise ConfigError(
            "invalid firewall policy:\n  " + "\n  ".join(e for e, _ in errors),
            fix="; ".join(fixes),
        )
    return Policy(
        allow=_collapse([n for _, n in networks]),
        dns=tuple(sorted({a for _, a in resolvers}, key=_sort_key)),
        ntp=tuple(sorted({a for _, a in clocks}, key=_sort_key)),
        ports=tuple(sorted({r for _, r in port_rules}, key=lambda r: (r.network.version, r))),
        containers=containers,
        allow_public=allow_public,
        notes=tuple(notes),
    )


def load_policy(data: object, source: str) -> Policy:
    """A stored policy (the form :meth:`Policy.to_json` writes), checked like the options.

    Raises:
        ConfigError: naming ``source``, when the data is malformed or the checks refuse it.
    """
    fields = data if isinstance(data, dict) else {}
    lists = {key: fields.get(key, []) for key in ("allow", "dns", "ntp", "ports")}
    flags = {key: fields.get(key, False) for key in ("containers", "allow_public")}
    well_formed = all(
        isinstance(v, list) and all(isinstance(i, str) for i in v) for v in lists.values()
    ) and all(isinstance(v, bool) for v in flags.values())
    if not isinstance(data, dict) or not well_formed:
        raise ConfigError(
            f"{source}: not a firewall policy (lists of strings and two booleans)",
            fix="offline firewall apply --allow CIDR ... again",
        )
    try:
        return make_policy(**lists, **flags)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", fix=exc.fix) from None


def _collect(
    values: Iterable[str], parse: Callable[[str], T], errors: list[tuple[str, str]]
) -> list[tuple[str, T]]:
    """``(text, parsed)`` for each value that parses; the others' messages go to ``errors``."""
    parsed: list[tuple[str, T]] = []
    for value in values:
        try:
            parsed.append((value, parse(value)))
        except ValueError as exc:
            errors.append((str(exc), _FIX_SYNTAX))
    return parsed


def _whole_families(
    networks: Sequence[tuple[str, Network]], port_rules: Sequence[tuple[str, PortRule]]
) -> list[str]:
    """A message for each group of items whose union is a whole address family."""
    found = _whole_family([(f"--allow {t}", n) for t, n in networks], "")
    groups: dict[tuple[str, int, int], list[tuple[str, Network]]] = {}
    for text, rule in port_rules:
        groups.setdefault((rule.proto, rule.first, rule.last), []).append(
            (f"--allow-port {text}", rule.network)
        )
    for (proto, first, last), items in groups.items():
        ports = str(first) if first == last else f"{first}-{last}"
        found += _whole_family(items, f"port {ports}/{proto} on ")
    return found


def _whole_family(items: Sequence[tuple[str, Network]], what: str) -> list[str]:
    found = []
    for version in (4, 6):
        same = [(label, n) for label, n in items if n.version == version]
        if WHOLE[version] in _collapse([n for _, n in same]):
            names = ", ".join(label for label, _ in same)
            found.append(
                f"{names}: together they allow {what}{WHOLE[version]}, every IPv{version} "
                "address: the whole internet"
            )
    return found


Item = Network | Address | PortRule


def _refusals(
    networks: Sequence[tuple[str, Network]],
    port_rules: Sequence[tuple[str, PortRule]],
    servers: Sequence[tuple[str, Sequence[tuple[str, Address]]]],
    allow_public: bool,
) -> list[tuple[str, str]]:
    """What the checks of the whole set refuse, each with its fix."""
    families = _whole_families(networks, port_rules)
    if families or allow_public:  # --allow-public would not help a whole family
        return [(e, _FIX_FAMILY) for e in families]
    options: list[tuple[str, Sequence[tuple[str, Item]]]] = [
        ("--allow", networks),
        ("--allow-port", port_rules),
        *servers,
    ]
    return [(e, _FIX_PUBLIC) for option, items in options for e in _public_items(option, items)]


def _public_items(option: str, items: Sequence[tuple[str, Item]]) -> list[str]:
    """A message for each item that reaches public space (any part of it)."""
    found = []
    for text, item in items:
        if parts := public_part(_network(item)):
            found.append(f"{option} {text}: reaches public addresses ({_shown(parts)})")
    return found


def _network(item: Item) -> Network:
    if isinstance(item, PortRule):
        return item.network
    if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return item
    return ipaddress.ip_network(item)


def _shown(parts: Sequence[Network], most: int = 4) -> str:
    shown = ", ".join(str(p) for p in parts[:most])
    return shown if len(parts) <= most else f"{shown} and {len(parts) - most} more"


def public_part(network: Network) -> list[Network]:
    """The parts of ``network`` outside :data:`LAN_SPACE`, smallest first address first."""
    left = [network]
    for lan in LAN_SPACE:
        if lan.version == network.version:
            left = [piece for net in left for piece in _without(net, lan)]
    return sorted(ipaddress.collapse_addresses(left))  # type: ignore[type-var]


def _without(network: Network, lan: Network) -> list[Network]:
    # Networks are aligned blocks: two that overlap at all hold one another.
    if network.subnet_of(lan):  # type: ignore[arg-type]
        return []
    if lan.subnet_of(network):  # type: ignore[arg-type]
        return list(network.address_exclude(lan))  # type: ignore[arg-type]
    return [network]


def is_public(address: Address) -> bool:
    """True for an address outside :data:`LAN_SPACE`."""
    return bool(public_part(_network(address)))


def _sort_key(item: Address | Network) -> tuple[int, str]:
    return item.version, str(item)


def _collapse(networks: Sequence[Network]) -> tuple[Network, ...]:
    """Overlapping and adjacent networks merged, IPv4 first: the rulesets stay small and exact."""
    merged: list[Network] = []
    for version in (4, 6):
        same = [n for n in networks if n.version == version]
        merged += ipaddress.collapse_addresses(same)  # type: ignore[type-var]
    return tuple(merged)


def parse_network(text: str, option: str = "--allow", notes: list[str] | None = None) -> Network:
    """``192.168.1.0/24`` or ``fd00::/64`` (a bare address means that one host)."""
    value = text.strip()
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        port = "; one port is --allow-port ADDRESS/32:PORT/tcp" if ":" in value else ""
        need = "the firewall needs addresses: CIDR such as 192.168.10.0/24, or one address"
        raise ValueError(
            _name_refusal(text, option, need + port)
            or f"{option} {text!r}: not a network; write it as CIDR, e.g. 10.0.0.0/8"
        ) from None
    if network.prefixlen == 0:
        raise ValueError(
            f"{option} {text!r}: allows the whole internet; list your LAN networks instead"
        )
    if notes is not None and "/" in value and str(network) != value:
        notes.append(f"{option} {text}: host bits set; allowing the network {network}")
    return network


def parse_address(text: str, option: str) -> Address:
    """A server's IP address (never a name: rules must not depend on DNS)."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        need = "give the server's IP address, not a name"
        refusal = _name_refusal(text, option, need)
        raise ValueError(refusal or f"{option} {text!r}: {need}") from None


def host_name(text: str) -> str | None:
    """The host name in ``text`` (``NAME``, ``NAME:PORT``, ``NAME/...``), or None.

    Hex digits alone (``fd00``) are not taken for a name: they may be a mistyped IPv6 address.
    """
    host = text.strip().partition("/")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    if not _HOST_NAME.fullmatch(host) or not ("." in host or _NOT_HEX.search(host)):
        return None
    return host


def _name_refusal(text: str, option: str, need: str) -> str | None:
    """The message for a host name where an address is needed, or None for anything else."""
    name = host_name(text)
    if name is None:
        return None
    return f"{option} {text!r}: {name!r} is a host name; {need} (names are never looked up)"


def parse_port_rule(text: str, notes: list[str] | None = None) -> PortRule:
    """``CIDR:PORT/PROTO``; IPv6 networks in brackets; ``PORT`` may be a range ``8000-8010``."""
    value = text.strip()
    need = "give its address as CIDR:PORT/tcp, e.g. 10.0.0.5/32:443/tcp"
    if refusal := _name_refusal(text, "--allow-port", need):
        raise ValueError(refusal)
    where, _, proto = value.rpartition("/")
    if value.startswith("["):
        network_text, _, rest = value[1:].partition("]")
        port_text, _, proto = rest.removeprefix(":").partition("/")
    else:
        network_text, _, port_text = where.rpartition(":")
    if proto not in PROTOCOLS or not network_text or not port_text:
        raise ValueError(
            f"--allow-port {text!r}: write CIDR:PORT/tcp or udp, e.g. 10.0.0.5/32:443/tcp "
            "or [fd00::5]:443/tcp"
        )
    network = parse_network(network_text, f"--allow-port {text!r}:", notes)
    first, last = _ports(port_text, text)
    return PortRule(network, first, last, proto)


def _ports(port_text: str, text: str) -> tuple[int, int]:
    low, _, high = port_text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        first, last = 0, 0
    if not 0 < first <= last < 65536:
        raise ValueError(f"--allow-port {text!r}: ports are 1-65535 (a range as 8000-8010)")
    return first, last
