"""Probes that show whether traffic gets out: TCP connects, DNS over UDP, name lookups, QUIC, ICMP.

Shared by ``offline firewall verify`` and the doctor's network group. Every probe fails fast (it
waits at most its timeout) and never raises for a network outcome: it returns a :class:`Probe`
saying what it saw. ``reached`` means something answered from the other side; a local drop
(``EPERM`` from the firewall), no route, or silence until the timeout all mean blocked.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_GAI_ERRORS = {getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_")}


@dataclass(frozen=True)
class Probe:
    """What one probe saw; ``reached`` means the target answered."""

    target: str
    outcome: str
    reached: bool
    seconds: float
    addresses: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "target": self.target,
            "outcome": self.outcome,
            "reached": self.reached,
            "seconds": round(self.seconds, 3),
        }
        return shown | ({"addresses": list(self.addresses)} if self.addresses else {})


def parse_endpoint(text: str, version: int, port: int = 443) -> tuple[str, int]:
    """``addr:port``, ``[addr]:port`` or a bare address, checked to be of IP ``version``."""
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    try:
        address = ipaddress.ip_address(host)
        number = int(port_text) if port_text else port
    except ValueError:
        address, number = None, 0
    if address is None or address.version != version or not 0 < number < 65536:
        raise ValueError(f"{text!r} is not an IPv{version} address with an optional port")
    return str(address), number


def shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def at_once(
    work: Callable[[T], R], items: Sequence[T], deadline: float, late: Callable[[T], R]
) -> list[R]:
    """``work`` on every item in its own thread; an item not done after ``deadline`` s is ``late``.

    Threads are daemons: one stuck in a blocking call (getaddrinfo) is left behind.
    """
    results: dict[int, R | Exception] = {}

    def run(i: int, item: T) -> None:
        try:
            results[i] = work(item)
        except Exception as exc:  # re-raised below, in the check's own thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, x), daemon=True) for i, x in enumerate(items)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + deadline
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return [_unwrap(results.get(i), item, late) for i, item in enumerate(items)]


def _unwrap(result: R | Exception | None, item: T, late: Callable[[T], R]) -> R:
    if isinstance(result, Exception):
        raise result
    return late(item) if result is None else result


def failure(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return _GAI_ERRORS.get(exc.errno, str(exc))
    if exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc))
    return str(exc) or type(exc).__name__


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def connect(endpoint: tuple[str, int], timeout: float) -> Probe:
    """One TCP connect; anything but a completed handshake counts as blocked."""
    host, port = endpoint
    started = time.monotonic()
    try:
        with socket.socket(family(host), socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect((host, port))
        outcome, reached = "connected", True
    except TimeoutError:
        outcome, reached = "timeout", False
    except OSError as exc:
        outcome, reached = failure(exc), False
    return Probe(shown(host, port), outcome, reached, time.monotonic() - started)


def dns_query(name: str, ident: int) -> bytes:
    """A minimal DNS query: one question, type A, class IN, recursion desired."""
    labels = b"".join(
        bytes([len(part)]) + part for part in name.rstrip(".").encode("idna").split(b".")
    )
    return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!2H", 1, 1)


def is_dns_reply(data: bytes, ident: int) -> bool:
    if len(data) < 12:
        return False
    got, flags = struct.unpack("!2H", data[:4])
    return bool(got == ident and flags & 0x8000)


def ask(resolver: str, name: str, timeout: float) -> Probe:
    """One DNS query over UDP port 53; any reply means the resolver was reached."""
    ident = int.from_bytes(os.urandom(2), "big")
    started = time.monotonic()
    try:
        with socket.socket(family(resolver), socket.SOCK_DGRAM) as sock:
            sock.connect((resolver, 53))
            sock.send(dns_query(name, ident))
            _await_reply(sock, ident, started + timeout)
        outcome, reached = "answered", True
    except TimeoutError:
        outcome, reached = "timeout", False
    except OSError as exc:
        outcome, reached = failure(exc), False
    return Probe(shown(resolver, 53), outcome, reached, time.monotonic() - started)


def _await_reply(sock: socket.socket, ident: int, end: float) -> None:
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        if is_dns_reply(sock.recv(4096), ident):
            return
    raise TimeoutError


def resolve(name: str) -> Probe:
    """Resolve ``name`` the way programs do (getaddrinfo: /etc/hosts, then resolv.conf).

    A name that resolves only to loopback or unspecified addresses is sinkholed, not reached.
    """
    started = time.monotonic()
    try:
        infos = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        outcome = failure(exc) if isinstance(exc, OSError) else str(exc)
        return Probe(name, outcome, False, time.monotonic() - started)
    addresses = tuple(sorted({str(info[4][0]) for info in infos}))
    reached = not all(_sinkhole(a) for a in addresses)
    outcome = "resolved" if reached else "sinkholed"
    return Probe(name, outcome, reached, time.monotonic() - started, addresses)


def _sinkhole(address: str) -> bool:
    """An answer that leads nowhere: a name blocked in /etc/hosts as 0.0.0.0 or 127.0.0.1."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    return ip.is_loopback or ip.is_unspecified


def probe_all(
    work: Callable[[T], Probe], items: Sequence[T], timeout: float, label: Callable[[T], str]
) -> list[Probe]:
    """Every probe at once; one still running shortly after ``timeout`` counts as timed out."""

    def late(item: T) -> Probe:
        return Probe(label(item), "timeout", False, timeout)

    return at_once(work, items, timeout + 0.25, late)


def datagram(endpoint: tuple[str, int], payload: bytes, timeout: float) -> Probe:
    """One UDP datagram (a QUIC Initial-sized packet to 443); any reply or ICMP error is reached.

    An ICMP port-unreachable (``ECONNREFUSED`` on the next receive) also proves the packet left.
    """
    host, port = endpoint
    started = time.monotonic()
    try:
        with socket.socket(family(host), socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect((host, port))
            sock.send(payload)
            sock.recv(4096)
        outcome, reached = "answered", True
    except TimeoutError:
        outcome, reached = "timeout", False
    except ConnectionRefusedError:
        outcome, reached = "port unreachable (the packet got out)", True
    except OSError as exc:
        outcome, reached = failure(exc), False
    return Probe(f"udp {shown(host, port)}", outcome, reached, time.monotonic() - started)


def quic_initial() -> bytes:
    """A datagram shaped like a QUIC v1 Initial (long header, padded to 1200 bytes)."""
    dcid, scid = os.urandom(8), os.urandom(8)
    header = bytes([0xC3]) + b"\x00\x00\x00\x01" + bytes([8]) + dcid + bytes([8]) + scid
    return (header + b"\x00" + b"\x44\x00").ljust(1200, b"\x00")


def ping(host: str, timeout: float) -> Probe:
    """One ICMP (v4) or ICMPv6 echo request; an echo reply is reached.

    Uses an unprivileged ICMP datagram socket where ``net.ipv4.ping_group_range`` allows it,
    else a raw socket (root). Neither possible: the outcome says so and it counts as blocked.
    """
    version = ipaddress.ip_address(host).version
    proto = socket.IPPROTO_ICMP if version == 4 else socket.IPPROTO_ICMPV6
    request = struct.pack("!BBHHH", 8 if version == 4 else 128, 0, 0, os.getpid() & 0xFFFF, 1)
    if version == 4:
        request = request[:2] + struct.pack("!H", _checksum(request + b"deepseek")) + request[4:]
    started = time.monotonic()
    try:
        with _icmp_socket(family(host), proto) as sock:
            sock.settimeout(timeout)
            sock.connect((host, 0))
            sock.send(request + b"deepseek")
            _await_echo(sock, version, started + timeout)
        outcome, reached = "echo reply", True
    except TimeoutError:
        outcome, reached = "timeout", False
    except OSError as exc:
        outcome, reached = failure(exc), False
    return Probe(f"icmp {host}", outcome, reached, time.monotonic() - started)


def _icmp_socket(fam: socket.AddressFamily, proto: int) -> socket.socket:
    try:
        return socket.socket(fam, socket.SOCK_DGRAM, proto)
    except PermissionError:
        return socket.socket(fam, socket.SOCK_RAW, proto)


def _await_echo(sock: socket.socket, version: int, end: float) -> None:
    reply_type = 0 if version == 4 else 129
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        data = sock.recv(4096)
        if sock.type == socket.SOCK_RAW and version == 4:
            data = data[(data[0] & 0x0F) * 4 :]  # raw IPv4 sockets hand over the IP header too
        if data and data[0] == reply_type:
            return
    raise TimeoutError


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF
