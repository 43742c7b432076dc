"""The egress policy: what may leave the host. Pure data, parsed and checked from the options.

A policy allows, besides loopback and replies on established connections:

- whole networks (``--allow CIDR``): the LAN, the cluster, the NAS;
- DNS (UDP and TCP port 53) and NTP (UDP port 123) to the listed servers only;
- single ports on a network (``--allow-port CIDR:PORT/PROTO``);
- IPv6 neighbour discovery on the link (always: without it IPv6 on the LAN stops working).

Everything else is dropped and counted. ``containers`` holds forwarded traffic (containers, VMs
routed through the host) to the same policy.
"""

from __future__ import annotations

import ipaddress
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
    notes: tuple[str, ...] = field(default=(), compare=False)

    def networks(self, version: int) -> list[Network]:
        return [n for n in self.allow if n.version == version]

    def servers(self, kind: str, version: int) -> list[Address]:
        return [a for a in getattr(self, kind) if a.version == version]

    def port_rules(self, version: int) -> list[PortRule]:
        return [r for r in self.ports if r.network.version == version]

    def to_json(self) -> dict[str, object]:
        return {
            "allow": [str(n) for n in self.allow],
            "dns": [str(a) for a in self.dns],
            "ntp": [str(a) for a in self.ntp],
            "ports": [str(r) for r in self.ports],
            "containers": self.containers,
        }


def make_policy(
    allow: Sequence[str] = (),
    dns: Sequence[str] = (),
    ntp: Sequence[str] = (),
    ports: Sequence[str] = (),
    containers: bool = False,
) -> Policy:
    """Parse the options into a :class:`Policy`; every bad item is named in one ConfigError."""
    errors: list[str] = []
    notes: list[str] = []
    networks = _collect(allow, lambda v: parse_network(v, "--allow", notes), errors)
    resolvers = _collect(dns, lambda v: parse_address(v, "--allow-dns"), errors)
    clocks = _collect(ntp, lambda v: parse_address(v, "--allow-ntp"), errors)
    port_rules = _collect(ports, lambda v: parse_port_rule(v, notes), errors)
    if errors:
        raise ConfigError(
            "invalid firewall policy:\n  " + "\n  ".join(errors),
            fix="give networks as CIDR (192.168.10.0/24, fd00:10::/64), servers as IP addresses, "
            "ports as CIDR:PORT/tcp or [CIDR]:PORT/udp",
        )
    return Policy(
        allow=_collapse(networks),
        dns=tuple(sorted(set(resolvers), key=_sort_key)),
        ntp=tuple(sorted(set(clocks), key=_sort_key)),
        ports=tuple(sorted(set(port_rules), key=lambda r: (r.network.version, r))),
        containers=containers,
        notes=tuple(notes),
    )


def _collect(values: Iterable[str], parse: Callable[[str], T], errors: list[str]) -> list[T]:
    parsed: list[T] = []
    for value in values:
        try:
            parsed.append(parse(value))
        except ValueError as exc:
            errors.append(str(exc))
    return parsed


def _sort_key(item: Address | Network) -> tuple[int, str]:
    return item.version, str(item)


def _collapse(networks: list[Network]) -> tuple[Network, ...]:
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
        raise ValueError(
            f"{option} {text!r}: not a network; write it as CIDR, e.g. 10.0.0.0/8"
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
        raise ValueError(f"{option} {text!r}: give the server's IP address, not a name") from None


def parse_port_rule(text: str, notes: list[str] | None = None) -> PortRule:
    """``CIDR:PORT/PROTO``; IPv6 networks in brackets; ``PORT`` may be a range ``8000-8010``."""
    value = text.strip()
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
