"""The demo's air-gap counter: a real network namespace in which attempts to leave are
counted and named, loopback is not, and a run without root says the proof was skipped."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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


ROOT = Path(__file__).resolve().parents[1]
FAKE_DPKG_QUERY = """#!/bin/sh
# every package is installed but nftables
for last; do :; done
[ "$last" = nftables ] && exit 1
printf 'install ok installed'
"""
FAKE_APT_GET = """#!/bin/sh
echo "E: Unable to locate package nftables" >&2
exit 100
"""


def _path_without(tmp_path: Path, *hidden: str) -> Path:
    """A PATH directory with every command of this machine's PATH but ``hidden``, plus a
    dpkg-query that says nftables is not installed and an apt-get that cannot install it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("dpkg-query", FAKE_DPKG_QUERY), ("apt-get", FAKE_APT_GET)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    for directory in os.environ["PATH"].split(os.pathsep):
        for tool in Path(directory).glob("*") if Path(directory).is_dir() else ():
            target = fake / tool.name
            if tool.name not in hidden and not target.exists() and os.access(tool, os.X_OK):
                target.symlink_to(tool)
    return fake


def test_the_demo_will_not_start_when_nft_is_missing_and_cannot_be_installed(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("as root the demo installs what it needs (CI runs as root)")
    fake = _path_without(tmp_path, "nft", "dpkg-query", "apt-get")
    prefix = tmp_path / "host"
    prefix.mkdir()
    (prefix / "kept").write_text("an earlier run's files")
    env = {**os.environ, "PATH": str(fake)}
    proc = subprocess.run(
        [sys.executable, "-m", "offline.demo", "--bundle", str(tmp_path / "no-bundle"),
         "--pubkey", str(tmp_path / "no.pem"), "--prefix", str(prefix)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "apt-get could not install: nftables" in proc.stderr  # the installer tried
    assert "cannot start the isolated phase: nft (Debian package nftables) missing" in proc.stderr
    assert "fix: apt-get install nftables" in proc.stderr
    # nothing started: the prefix is as it was, no namespace was made
    assert [p.name for p in prefix.iterdir()] == ["kept"]
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert demo.NETNS not in names


def test_what_is_missing_decides_between_namespace_in_place_and_stop() -> None:
    reqs = {r.command: r for r in demo.requirements(ROOT)}
    # the list the installer reads names what the demo needs, and why
    assert reqs["nft"].package == "nftables" and reqs["nft"].when == "airgap"
    assert reqs["aarch64-linux-gnu-g++"].when == "always"
    assert demo.check_prerequisites([], root=True) is True
    # not root: no namespace, in place (the summary says the proof was skipped)
    assert demo.check_prerequisites([], root=False) is False
    assert demo.check_prerequisites([reqs["nft"]], root=False) is False
    # the pipeline cannot run without the cross compiler, root or not
    with pytest.raises(SystemExit, match=r"fix: sudo apt-get install g\+\+-aarch64-linux-gnu"):
        demo.check_prerequisites([reqs["aarch64-linux-gnu-g++"]], root=False)
    with pytest.raises(SystemExit, match="apt-get install nftables"):
        demo.check_prerequisites([reqs["nft"]], root=True)


def test_the_package_installer_names_the_packages_and_the_fix_without_root(
    tmp_path: Path,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    # another user cannot enter pytest's temporary directories: a directory of its own
    with tempfile.TemporaryDirectory() as shared:
        Path(shared).chmod(0o755)
        proc = _as_nobody(_path_without(Path(shared), "dpkg-query", "apt-get"))
    assert proc.returncode == 1
    assert "missing Debian packages: nftables" in proc.stderr
    assert "fix: sudo " in proc.stderr and "install-debian-packages.sh demo" in proc.stderr


def _as_nobody(fake: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         "bash", str(ROOT / "scripts/install-debian-packages.sh"), "demo"],
        env={**os.environ, "PATH": str(fake)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_not_isolated_the_doctor_network_group_is_not_applicable(tmp_path: Path) -> None:
    run = demo.Demo(tmp_path, tmp_path, tmp_path / "host", "python3", 0, 0, None)
    figures = {"doctor": demo._doctor(run)}  # nothing runs: there is no namespace to prove
    assert [s.name for s in run.stages] == [demo.DOCTOR]
    text = demo.summary(run, figures, 1.0)
    assert "not applicable: the demo ran in place, not isolated" in text
    assert "AIR-GAP PROOF SKIPPED" in text
