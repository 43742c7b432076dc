"""Probes: the packet-level primitives ``offline firewall verify`` and the doctor share."""

from __future__ import annotations

import socket
import threading

import pytest

from offline.firewall import probes


def test_dns_query_is_a_well_formed_question() -> None:
    query = probes.dns_query("pypi.org", 0x1234)
    assert query == (
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04pypi\x03org\x00\x00\x01\x00\x01"
    )
    assert probes.is_dns_reply(b"\x12\x34\x81\x80" + bytes(8), 0x1234)
    assert not probes.is_dns_reply(query, 0x1234)


@pytest.mark.parametrize(
    ("text", "version", "parsed"),
    [
        ("1.1.1.1:443", 4, ("1.1.1.1", 443)),
        ("8.8.8.8", 4, ("8.8.8.8", 443)),
        ("[2606:4700:4700::1111]:53", 6, ("2606:4700:4700::1111", 53)),
        ("2001:4860:4860::8888", 6, ("2001:4860:4860::8888", 443)),
    ],
)
def test_parse_endpoint(text: str, version: int, parsed: tuple[str, int]) -> None:
    assert probes.parse_endpoint(text, version) == parsed


def test_a_hanging_probe_counts_as_blocked_after_the_deadline() -> None:
    release = threading.Event()

    def hang(name: str) -> probes.Probe:
        release.wait(5)
        return probes.Probe(name, "resolved", True, 5.0)

    found = probes.probe_all(hang, ["a.example"], 0.2, str)
    release.set()
    assert found == [probes.Probe("a.example", "timeout", False, 0.2)]


def test_a_name_sinkholed_to_loopback_is_not_reached() -> None:
    probe = probes.resolve("localhost")
    assert (probe.outcome, probe.reached) == ("sinkholed", False)


def test_a_connect_to_a_local_listener_is_reached() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        probe = probes.connect(("127.0.0.1", port), 1.0)
    assert probe.reached and probe.outcome == "connected"
