"""``offline firewall`` on a real kernel, in throwaway namespaces (see tests/fixtures/fwnet.py).

Each test builds an appliance between a LAN, a WAN playing the internet, and a container, runs
the real CLI inside the appliance, and checks packets. The host namespace's ruleset and links
must be the same after every test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from offline.audit.chain import verify as audit_verify
from offline.firewall.apply import EVENTS
from offline.firewall.backend import snapshot
from tests.fixtures.fwnet import CTR_V4, LAN_SERVICE, LAN_V4, LAN_V6, PUBLIC, Site, site
from tests.fixtures.netns import Namespace

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and netfilter need root"),
]
BACKENDS = ["nft", "iptables"]
LAN_POLICY = ["--allow", "192.168.50.0/24", "--allow", "fd00:50::/64"]
LAN_TARGETS = [f"{LAN_V4}:{LAN_SERVICE}", f"[{LAN_V6}]:{LAN_SERVICE}"]


def _links() -> str:
    shown = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return "\n".join(line.split(":")[1].strip() for line in shown.stdout.splitlines())


@pytest.fixture(autouse=True)
def host_untouched() -> Iterator[None]:
    before = (snapshot(), _links())
    yield
    assert (snapshot(), _links()) == before, "the host namespace's rules or links changed"


@pytest.fixture
def net() -> Iterator[Site]:
    with site() as made:
        yield made


def fw(ns: Namespace, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    stateful = {"apply", "confirm", "rollback", "status", "verify"}
    extra = ["--state-dir", str(state)] if args[0] in stateful else []
    return ns.run([sys.executable, "-m", "offline", "firewall", *args, *extra], timeout=60)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def verify(
    ns: Namespace, *targets: str, state: Path = Path("/nonexistent")
) -> tuple[int, dict[str, Any]]:
    args = [a for t in targets for a in ("--expect-reachable", t)]
    proc = fw(ns, state, "verify", "--json", "--timeout", "1", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def ruleset(ns: Namespace) -> str:
    code = "from offline.firewall.backend import snapshot; print(snapshot(), end='')"
    return ok(ns.run([sys.executable, "-c", code]))


def connects(ns: Namespace, host: str, port: int, timeout: float = 1.0) -> bool:
    code = (
        "import sys; from offline.firewall.probes import connect; "
        f"sys.exit(0 if connect(({host!r}, {port}), {timeout}).reached else 1)"
    )
    return ns.run([sys.executable, "-c", code]).returncode == 0


def answers_dns(ns: Namespace, resolver: str) -> bool:
    code = (
        "import sys; from offline.firewall.probes import ask; "
        f"sys.exit(0 if ask({resolver!r}, 'pypi.org', 1.0).reached else 1)"
    )
    return ns.run([sys.executable, "-c", code]).returncode == 0


def blocked_kinds(report: dict[str, Any]) -> set[str]:
    return {p["kind"] for p in report["probes"] if p["expect"] == "blocked" and not p["reached"]}


def test_before_apply_the_wan_answers_every_probe_and_verify_fails(net: Site) -> None:
    code, report = verify(net.appliance, *LAN_TARGETS)
    assert code == 1 and not report["ok"]
    leaked = [p for p in report["probes"] if p["expect"] == "blocked"]
    assert leaked and all(p["reached"] for p in leaked), leaked
    assert {p["kind"] for p in leaked} == {"tcp", "udp53", "dns", "quic", "icmp"}
    assert report["backend"] is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_blocks_the_wan_keeps_the_lan_and_rollback_restores_empty(
    net: Site, tmp_path: Path, backend: str
) -> None:
    app = net.appliance
    baseline = ruleset(app)
    ok(fw(app, tmp_path, "apply", *LAN_POLICY, "--backend", backend))
    code, report = verify(app, *LAN_TARGETS, state=tmp_path)
    assert code == 0 and report["ok"], report["probes"]
    assert blocked_kinds(report) == {"tcp", "udp53", "dns", "quic", "icmp"}
    # Datagrams are refused on the spot (EPERM); a dropped TCP SYN is retried until the timeout.
    local = [p for p in report["probes"] if p["kind"] in ("quic", "icmp", "udp53")]
    assert all(p["outcome"] == "EPERM" for p in local), local
    drops = report["drops"]
    assert drops["after"]["output"]["packets"] > drops["before"]["output"]["packets"]
    assert report["backend"] == backend

    rolled = json.loads(ok(fw(app, tmp_path, "rollback", "--json")))
    assert rolled["exact"] and rolled["differences"] == []
    assert ruleset(app) == baseline
    assert connects(app, PUBLIC[0], 443)
    # every change and the verify's evidence, on a hash chain offline evidence reads
    events = tmp_path / EVENTS
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in lines if "event" in e] == ["apply", "verify", "rollback"]
    (logged,) = [e for e in lines if e.get("event") == "verify"]
    assert logged["verify"]["ok"] and logged["verify"]["ruleset_sha256"] == report["ruleset_sha256"]
    chain = audit_verify([events])
    assert chain.ok and chain.closed, chain.as_dict()


@pytest.mark.parametrize("backend", BACKENDS)
def test_rollback_restores_an_administrators_rules_exactly(
    net: Site, tmp_path: Path, backend: str
) -> None:
    app = net.appliance
    admin = "table inet admin {\n chain out {\n  type filter hook output priority 10;\n"
    admin += "  ip daddr 192.168.50.99 drop\n }\n}\n"
    loaded = subprocess.run(
        ["ip", "netns", "exec", app.name, "nft", "-f", "-"],
        input=admin,
        text=True,
        capture_output=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert (
        app.run(["iptables", "-A", "OUTPUT", "-d", "192.168.50.98", "-j", "DROP"]).returncode == 0
    )
    baseline = ruleset(app)
    ok(fw(app, tmp_path, "apply", *LAN_POLICY, "--backend", backend))
    ok(fw(app, tmp_path, "apply", "--allow", "192.168.50.0/25", "--backend", backend))
    assert ruleset(app) != baseline
    rolled = json.loads(ok(fw(app, tmp_path, "rollback", "--json")))
    assert rolled["exact"], rolled["differences"]
    assert ruleset(app) == baseline


def test_a_whole_internet_or_public_allow_is_refused_before_anything_changes(
    net: Site, tmp_path: Path
) -> None:
    app = net.appliance
    baseline = ruleset(app)
    halves = ["--allow", "0.0.0.0/1", "--allow", "128.0.0.0/1", "--allow-public"]
    for policy in (halves, ["--allow-port", "1.1.1.1/32:443/tcp"]):
        refused = fw(app, tmp_path, "apply", *policy)
        assert refused.returncode == 3, refused.stderr
    assert ruleset(app) == baseline
    assert not list(tmp_path.glob("*.json")), "state was written"
    assert connects(app, PUBLIC[0], 443)


def test_dns_ntp_and_single_ports_go_only_where_listed(net: Site, tmp_path: Path) -> None:
    app = net.appliance
    policy = ["--allow-dns", "8.8.8.8", "--allow-port", "1.1.1.1/32:443/tcp", "--allow-public"]
    ok(fw(app, tmp_path, "apply", *policy))
    _, report = verify(app, state=tmp_path)
    assert report["policy"]["public"] == ["8.8.8.8 (DNS)", "1.1.1.1/32:443/tcp"]
    assert report["policy"]["allow_public"] and report["policy"]["matches_live"]
    assert answers_dns(app, "8.8.8.8")
    assert not answers_dns(app, "1.1.1.1")
    assert connects(app, "1.1.1.1", 443)
    assert not connects(app, "1.1.1.1", 53)
    assert not connects(app, "8.8.8.8", 443)
    assert not connects(app, LAN_V4, LAN_SERVICE)  # the LAN was not allowed this time


def test_the_confirm_timeout_rolls_back_by_itself(net: Site, tmp_path: Path) -> None:
    app = net.appliance
    baseline = ruleset(app)
    shown = ok(fw(app, tmp_path, "apply", *LAN_POLICY, "--confirm-timeout", "2"))
    assert "offline firewall confirm" in shown
    assert not connects(app, PUBLIC[0], 443)
    deadline = time.monotonic() + 15
    while ruleset(app) != baseline and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ruleset(app) == baseline, (tmp_path / "watchdog.log").read_text()
    assert connects(app, PUBLIC[0], 443)
    late = fw(app, tmp_path, "confirm")
    assert late.returncode == 4 and "too late" in late.stderr


def test_confirm_in_time_keeps_the_rules(net: Site, tmp_path: Path) -> None:
    app = net.appliance
    ok(fw(app, tmp_path, "apply", *LAN_POLICY, "--confirm-timeout", "2"))
    pending = json.loads(fw(app, tmp_path, "status", "--json", "--root", str(tmp_path)).stdout)
    assert pending["pending_confirm_by"]
    ok(fw(app, tmp_path, "confirm"))
    time.sleep(3.5)
    assert not connects(app, PUBLIC[0], 443)
    assert connects(app, LAN_V4, LAN_SERVICE)
    after = json.loads(fw(app, tmp_path, "status", "--json", "--root", str(tmp_path)).stdout)
    assert after["live"] and after["matches_applied"] and after["pending_confirm_by"] is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_containers_cannot_bypass_the_policy(net: Site, tmp_path: Path, backend: str) -> None:
    app, ctr = net.appliance, net.ctr
    assert connects(ctr, PUBLIC[0], 443)
    ok(fw(app, tmp_path, "apply", *LAN_POLICY, "--backend", backend))
    assert connects(ctr, PUBLIC[0], 443), "without --containers forwarded traffic is not held"
    ok(fw(app, tmp_path, "apply", *LAN_POLICY, "--containers", "--backend", backend))
    assert not connects(ctr, PUBLIC[0], 443)
    assert not connects(ctr, "2606:4700:4700::1111", 443)
    assert connects(ctr, LAN_V4, LAN_SERVICE)
    _, report = verify(app)
    assert report["drops"]["after"]["forward"]["packets"] > 0
    ok(fw(app, tmp_path, "rollback"))
    assert connects(ctr, PUBLIC[0], 443)


def test_docker_user_chain_is_held_before_dockers_accepts(net: Site, tmp_path: Path) -> None:
    app, ctr = net.appliance, net.ctr
    docker_like = "*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\n"
    docker_like += f"-A FORWARD -s {CTR_V4}/24 -j ACCEPT\n-A DOCKER-USER -j RETURN\nCOMMIT\n"
    loaded = subprocess.run(
        ["ip", "netns", "exec", app.name, "iptables-restore", "--noflush"],
        input=docker_like,
        text=True,
        capture_output=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    ok(fw(app, tmp_path, "apply", *LAN_POLICY, "--containers", "--backend", "iptables"))
    saved = ok(app.run(["iptables-save", "-t", "filter"]))
    assert "-A DOCKER-USER -j DSO-FORWARD" in saved
    # Docker re-inserting its jump above ours must not open the way out.
    assert app.run(["iptables", "-D", "FORWARD", "-j", "DSO-FORWARD"]).returncode == 0
    assert not connects(ctr, PUBLIC[0], 443)
    ok(fw(app, tmp_path, "rollback"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_persist_writes_what_boot_loads_and_status_sees_drift(
    net: Site, tmp_path: Path, backend: str
) -> None:
    app, root = net.appliance, tmp_path / "root"
    ok(fw(app, tmp_path, "apply", *LAN_POLICY, "--backend", backend))
    before = json.loads(fw(app, tmp_path, "status", "--json", "--root", str(root)).stdout)
    assert not before["persisted"] and not before["ok"]
    ok(fw(app, tmp_path, "persist", "--root", str(root)))
    unit = "nftables.service" if backend == "nft" else "netfilter-persistent.service"
    wants = root / "etc/systemd/system/sysinit.target.wants" / unit
    not_enabled = fw(app, tmp_path, "status", "--root", str(root))
    assert not_enabled.returncode == 1 and "nothing loads the persisted rules" in not_enabled.stdout
    wants.parent.mkdir(parents=True)
    wants.symlink_to(f"/lib/systemd/system/{unit}")
    assert fw(app, tmp_path, "status", "--root", str(root)).returncode == 0

    # A reboot: the live rules are gone, then the boot service loads the persisted files.
    ok(fw(app, tmp_path, "rollback"))
    assert connects(app, PUBLIC[0], 443)
    if backend == "nft":
        assert (
            'include "/etc/nftables.d/deepseek-offline.nft"'
            in (root / "etc/nftables.conf").read_text()
        )
        ok(app.run(["nft", "-f", str(root / "etc/nftables.d/deepseek-offline.nft")]))
    else:
        for tool, name in (("iptables-restore", "rules.v4"), ("ip6tables-restore", "rules.v6")):
            ok(app.run([tool, str(root / "etc/iptables" / name)]))
    assert not connects(app, PUBLIC[0], 443)
    assert connects(app, LAN_V4, LAN_SERVICE)
    again = json.loads(fw(app, tmp_path, "status", "--json", "--root", str(root)).stdout)
    assert again["live"] and again["matches_persisted"]


def test_iptables_undoes_ipv4_when_ipv6_fails(net: Site, tmp_path: Path) -> None:
    app = net.appliance
    baseline = ruleset(app)
    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "ip6tables-restore").write_text(
        "#!/bin/sh\necho 'ip6tables-restore: boom' >&2\nexit 1\n"
    )
    (broken / "ip6tables-restore").chmod(0o755)
    env = dict(os.environ, PATH=f"{broken}:{os.environ['PATH']}")
    argv = [sys.executable, "-m", "offline", "firewall", "apply", *LAN_POLICY]
    argv += ["--backend", "iptables", "--state-dir", str(tmp_path / "state")]
    failed = app.run(argv, env=env, timeout=60)
    assert failed.returncode == 9 and "boom" in failed.stderr
    assert ruleset(app) == baseline
    assert connects(app, PUBLIC[0], 443)


def _doctor_network(ns: Namespace) -> dict[str, str]:
    argv = [sys.executable, "-m", "offline", "doctor", "--only", "network", "--json"]
    report = json.loads(ns.run(argv, timeout=60).stdout)
    return {c["id"]: c["status"] for c in report["checks"]}


def test_the_doctor_agrees_with_verify_before_and_after(net: Site, tmp_path: Path) -> None:
    app = net.appliance
    probes = ("net.tcp4-blocked", "net.tcp6-blocked", "net.udp53-blocked", "net.dns-blocked")
    before = _doctor_network(app)
    assert all(before[check] == "fail" for check in probes), before
    ok(fw(app, tmp_path, "apply", *LAN_POLICY))
    after = _doctor_network(app)
    assert all(after[check] == "pass" for check in probes), after


def test_status_names_legacy_and_nft_iptables_mixed(net: Site, tmp_path: Path) -> None:
    app = net.appliance
    ok(fw(app, tmp_path, "apply", *LAN_POLICY, "--backend", "iptables"))
    clean = json.loads(fw(app, tmp_path, "status", "--json", "--root", str(tmp_path)).stdout)
    assert not any("legacy" in m for m in clean["managers"])
    legacy = ["iptables-legacy", "-A", "OUTPUT", "-d", "192.168.50.97", "-j", "DROP"]
    assert app.run(legacy).returncode == 0
    mixed = fw(app, tmp_path, "status", "--json", "--root", str(tmp_path))
    found = json.loads(mixed.stdout)
    assert mixed.returncode == 1
    assert any("iptables-legacy and iptables-nft both hold rules" in p for p in found["problems"])
