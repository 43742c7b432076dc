"""The demo's air-gap counter: a real network namespace in which attempts to leave are
counted and named, loopback is not, and a run without root says the proof was skipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from offline import demo

ATTEMPTS = """
import socket
for addr in [("203.0.113.7", 443), ("2001:db8:1::7", 80)]:
    s = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
    s.settimeout(2)
    try:
        s.connect(addr)
    except OSError:
        pass
try:
    socket.getaddrinfo("pypi.org", 443)
except OSError:
    pass
"""

LOOPBACK = """
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname()); c.sendall(b"x" * 1000); c.close()
"""


@pytest.mark.integration
def test_the_namespace_counts_and_names_every_attempt_to_leave() -> None:
    if not demo.AirGap.possible():
        pytest.skip("network namespaces need root, ip and nft (CI runs as root)")
    with demo.AirGap("dstest-gap") as gap:
        assert gap.packets() == 0
        proc = subprocess.run(gap.wrap([sys.executable, "-c", LOOPBACK]), timeout=60)
        assert proc.returncode == 0 and gap.packets() == 0  # loopback is not egress
        subprocess.run(gap.wrap([sys.executable, "-c", ATTEMPTS]), timeout=60, check=True)
        assert gap.packets() >= 3
        seen = gap.destinations()
        assert "203.0.113.7:443" in seen and "2001:db8:1::7:80" in seen
        assert f"{demo.RESOLVER}:53" in seen  # the DNS lookup went to the resolver, and was caught
        gap.forget()
        assert gap.destinations() == []
    assert not Path("/etc/netns/dstest-gap").exists()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "dstest-gap" not in names


def test_without_a_namespace_the_summary_says_the_proof_was_skipped(tmp_path: Path) -> None:
    run = demo.Demo(tmp_path, tmp_path, tmp_path / "host", "python3", 0, 0, None)
    run.stages = [demo.Stage("install", 1.0), demo.Stage("train (SFT)", 2.0)]
    text = demo.summary(run, {}, 3.0)
    assert "AIR-GAP PROOF SKIPPED" in text and "IN PLACE" in text
    # with a namespace, a leak is named with its stage and destination
    run.gap = demo.AirGap("unused")
    run.stages = [
        demo.Stage("doctor (network)", 0.1, egress=5),
        demo.Stage("train (SFT)", 2.0, egress=2, destinations=["198.18.0.53:53"]),
    ]
    run.counted = 7
    text = demo.summary(run, {}, 3.0)
    assert "air-gap: 2 packets" in text and "5 deliberate probes" in text
    assert "LEAK during train (SFT): 2 packets to 198.18.0.53:53" in text
    assert os.path.relpath(tmp_path / "host/workspace/models/export") in text
