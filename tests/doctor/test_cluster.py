"""The cluster group against real hostfiles, the real ssh client (no sshd here) and a fake ssh."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from offline.doctor.checks import cluster
from offline.doctor.context import Context
from offline.doctor.model import Finding
from offline.doctor.runner import run_checks

PUBLIC = "203.0.113.7"  # TEST-NET-3: outside every private range, never contacted
MIXED = (
    "# training nodes\n"
    "localhost slots=2\n"
    "127.0.0.1 slots=1  # loopback\n"
    "worker-3 slots four\n"
    f"{PUBLIC} slots=1\n"
)
FAKE_SSH = """#!/bin/sh
for last; do :; done
[ "$last" = true ] && exit 0
echo "$(( $(date +%s) + ${FAKE_SKEW:-0} )).$(date +%N)"
"""


def bin_dir(root: Path, *, ssh: str | None = "real") -> Path:
    """A PATH of its own: the real ssh client, a fake one, or none; never pdsh."""
    root.mkdir(parents=True, exist_ok=True)
    if ssh == "real":
        real = shutil.which("ssh")
        assert real, (
            "the ssh client is part of the test environment (apt-get install openssh-client)"
        )
        (root / "ssh").symlink_to(real)
    elif ssh is not None:
        (root / "ssh").write_text(ssh)
        (root / "ssh").chmod(0o755)
    return root


def context(tmp_path: Path, hostfile: str | None, **env: str) -> Context:
    path = None
    if hostfile is not None:
        path = tmp_path / "hostfile"
        path.write_text(hostfile)
    if "PATH" not in env:
        env["PATH"] = str(bin_dir(tmp_path / "bin"))
    return Context.create(hostfile=path, environ={"HOME": str(tmp_path), **env})


def run(ctx: Context) -> dict[str, Finding]:
    return {f.id.removeprefix("cluster."): f for f in run_checks(cluster.checks(ctx), ctx)}


def statuses(found: dict[str, Finding]) -> dict[str, str]:
    return {name: f.status for name, f in found.items()}


def test_without_a_hostfile_every_check_skips(tmp_path: Path) -> None:
    found = run(context(tmp_path, None))
    assert len(found) == 7
    assert set(statuses(found).values()) == {"skip"}
    assert {f.message for f in found.values()} == {cluster.NO_HOSTFILE}


def test_a_mixed_hostfile_gets_a_status_per_check(tmp_path: Path) -> None:
    started = time.monotonic()
    found = run(context(tmp_path, MIXED))
    assert time.monotonic() - started < cluster.SSH_TIMEOUT
    assert statuses(found) == {
        "hostfile": "fail", "resolve": "pass", "networks": "fail", "ssh": "fail",
        "pdsh": "warn", "clock": "skip", "launcher": "pass",
    }  # fmt: skip
    assert "line 4: 'worker-3 slots four' is not `HOSTNAME slots=N`" in found["hostfile"].message
    assert found["networks"].evidence["outside"] == {PUBLIC: [PUBLIC]}
    assert found["ssh"].message.startswith("ssh without a prompt fails for localhost: ")
    assert set(found["ssh"].evidence["failed"]) == {"localhost", "127.0.0.1"}
    assert found["ssh"].evidence["not_contacted"] == [PUBLIC]
    assert "--no_ssh --node_rank" in (found["pdsh"].fix or "")
    for name in ("hostfile", "networks", "ssh", "pdsh"):
        assert found[name].fix, name


def test_allowed_cidrs_from_the_environment_replace_the_private_ranges(tmp_path: Path) -> None:
    hostfile = f"{PUBLIC} slots=1\n127.0.0.1 slots=1\n"

    def networks(cidrs: str) -> Finding:
        # PATH without ssh: with the public host allowed, the doctor would otherwise contact it.
        ctx = context(tmp_path, hostfile, PATH=str(tmp_path), **{cluster.ALLOWED_ENV: cidrs})
        return run(ctx)["networks"]

    assert networks("203.0.113.0/24").evidence["outside"] == {"127.0.0.1": ["127.0.0.1"]}
    assert networks("203.0.113.0/24, 127.0.0.0/8").status == "pass"
    bad = networks("10.0.0.0/8,intranet")
    assert bad.status == "fail"
    assert "intranet" in bad.message


def test_ssh_missing_fails_with_a_fix(tmp_path: Path) -> None:
    found = run(context(tmp_path, "localhost slots=1\n127.0.0.1 slots=1\n", PATH=str(tmp_path)))
    assert found["ssh"].status == "fail"
    assert "openssh-client" in (found["ssh"].fix or "")
    assert found["clock"].status == "skip"


def test_one_host_needs_no_ssh_pdsh_or_clock(tmp_path: Path) -> None:
    found = run(context(tmp_path, "localhost slots=4\n"))
    assert statuses(found) == {
        "hostfile": "pass", "resolve": "pass", "networks": "pass", "ssh": "skip",
        "pdsh": "skip", "clock": "skip", "launcher": "pass",
    }  # fmt: skip
    assert found["hostfile"].evidence["hosts"] == {"localhost": 4}


def test_an_unresolvable_host_fails_resolve(tmp_path: Path) -> None:
    found = run(context(tmp_path, "no-such-host.invalid slots=1\nlocalhost slots=1\n"))
    assert found["resolve"].status == "fail"
    assert "no-such-host.invalid" in found["resolve"].evidence["failed"]
    assert found["ssh"].evidence["not_contacted"] == ["no-such-host.invalid"]


@pytest.mark.parametrize(("skew", "status"), [("0", "pass"), ("5", "warn"), ("-3", "warn")])
def test_clock_skew_over_a_second_warns(tmp_path: Path, skew: str, status: str) -> None:
    path = f"{bin_dir(tmp_path / 'fake', ssh=FAKE_SSH)}:/usr/bin:/bin"
    found = run(
        context(tmp_path, "localhost slots=1\n127.0.0.1 slots=1\n", PATH=path, FAKE_SKEW=skew)
    )
    assert found["ssh"].status == "pass"
    assert found["clock"].status == status
    offsets = found["clock"].evidence["skew_s"]
    assert set(offsets) == {"localhost", "127.0.0.1"}
    assert all(abs(value - int(skew)) < 1 for value in offsets.values())
    if status == "warn":
        assert "chronyc makestep" in (found["clock"].fix or "")


def test_no_launcher_beside_the_python_fails(tmp_path: Path) -> None:
    ctx = context(tmp_path, "localhost slots=1\n")
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    found = run(Context(hostfile=ctx.hostfile, environ=ctx.environ, python=str(python)))
    assert found["launcher"].status == "fail"
    assert "install-offline.sh" in (found["launcher"].fix or "")


def test_an_unreadable_hostfile_fails_once_and_the_rest_skip(tmp_path: Path) -> None:
    found = run(Context.create(hostfile=tmp_path / "missing", environ={}))
    assert found["hostfile"].status == "fail"
    assert {f.status for n, f in found.items() if n != "hostfile"} == {"skip"}


@pytest.mark.parametrize(
    ("text", "hosts", "errors"),
    [
        ("a slots=1\n\n# c\nb slots=8 # gpu box\n", {"a": 1, "b": 8}, []),
        ("a slots = 1\n", {}, ["line 1: 'a slots = 1' is not `HOSTNAME slots=N`"]),
        ("a\n", {}, ["line 1: 'a' is not `HOSTNAME slots=N`"]),
        ("a slots=0\n", {}, ["line 1: 'a slots=0' has no slots"]),
        ("a slots=1\na slots=2\n", {"a": 1}, ["line 2: a is listed twice"]),
        ("a slots=1 extra\n", {}, ["line 1: 'a slots=1 extra' is not `HOSTNAME slots=N`"]),
    ],
)
def test_parse_hostfile(text: str, hosts: dict[str, int], errors: list[str]) -> None:
    parsed = cluster.parse_hostfile(text)
    assert {h.name: h.slots for h in parsed.hosts} == hosts
    assert list(parsed.errors) == errors


def test_addresses_inside_networks() -> None:
    networks, bad = cluster.allowed_networks({})
    assert bad == []
    inside = [
        "10.1.2.3",
        "172.31.0.1",
        "192.168.9.9",
        "127.0.0.1",
        "::1",
        "fd12::1",
        "::ffff:10.0.0.1",
    ]
    assert all(cluster.inside(a, networks) for a in inside)
    assert not any(cluster.inside(a, networks) for a in ["8.8.8.8", "172.32.0.1", "2001:db8::1"])


def test_each_leaves_a_stuck_item_behind() -> None:
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    started = time.monotonic()
    done = cluster.each([0.0, 30.0], nap, timeout=0.5)
    assert done == {0.0: 0.0, 30.0: None}
    assert time.monotonic() - started < 2


def test_the_environment_reaches_ssh(tmp_path: Path) -> None:
    fake = bin_dir(tmp_path / "fake", ssh='#!/bin/sh\necho "$MARK"\n')
    env = {"MARK": "seen", "PATH": os.defpath}
    assert cluster.ssh(str(fake / "ssh"), "h", "true", env) == (True, "seen")
