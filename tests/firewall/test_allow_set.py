"""The allow set is checked as a whole: no whole address family, no public space unless asked for,
no host names. Pure: nothing here touches a firewall.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import re
import socket
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from offline.errors import ConfigError
from offline.firewall.policy import Network, Policy, load_policy, make_policy
from offline.firewall.render import iptables_rules, nft_script, plan_text
from offline.firewall.verify import Verification, applied_policy

# Written out here, not imported: the test's own idea of the space that is not public.
NOT_PUBLIC = [
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fe80::/10",
        "fc00::/7",
    )
]
# Where a range starts or ends is where a check is most easily wrong.
EDGES = [
    *NOT_PUBLIC,
    *(
        ipaddress.ip_network(n)
        for n in (
            "100.64.0.0/10",  # shared (carrier-grade NAT) space: the provider's, not ours
            "0.0.0.0/8",
            "224.0.0.0/4",
            "8.8.8.0/24",
            "::ffff:0:0/96",  # IPv4-mapped: every IPv4 address again
            "64:ff9b::/96",  # NAT64: the IPv4 internet through a translator
            "2001:db8::/32",
            "ff02::/16",
        )
    ),
]
FAMILY = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
CIDR = re.compile(r"[0-9a-fA-F:.]+/\d+")
apply_module = importlib.import_module("offline.firewall.apply")  # the package exports apply()


@st.composite
def networks(draw: st.DrawFn) -> Network:
    """A network next to, inside or across the edge of an interesting range."""
    base = draw(st.sampled_from(EDGES))
    where = draw(st.sampled_from(["first", "last", "inside"]))
    start, end = int(base.network_address), int(base.broadcast_address)
    if where == "inside":
        value = draw(st.integers(start, end))
    else:
        value = (start if where == "first" else end) + draw(st.integers(-3, 3))
    bits = base.max_prefixlen
    value = min(max(value, 0), 2**bits - 1)
    prefix = draw(st.integers(1, bits))
    kind = ipaddress.IPv4Network if base.version == 4 else ipaddress.IPv6Network
    return kind((value, prefix), strict=False)


@st.composite
def family_covers(draw: st.DrawFn) -> list[str]:
    """Items whose union is a whole address family (none of them a /0), in any order."""
    whole = FAMILY[draw(st.sampled_from([4, 6]))]
    return draw(st.permutations(_cover(draw, whole)))


def _cover(draw: st.DrawFn, whole: Network) -> list[str]:
    parts = list(whole.subnets())
    for pick in draw(st.lists(st.integers(0, 10**6), max_size=10)):
        chosen = parts.pop(pick % len(parts))
        parts += list(chosen.subnets())
    extra = draw(st.lists(networks(), max_size=3))
    return [str(n) for n in parts + extra]


def _lan(network: Network) -> bool:
    return any(network.version == lan.version and network.subnet_of(lan) for lan in NOT_PUBLIC)  # type: ignore[arg-type]


def _covers_a_family(items: list[Network]) -> bool:
    for version, whole in FAMILY.items():
        same = [n for n in items if n.version == version]
        if whole in ipaddress.collapse_addresses(same):  # type: ignore[type-var]
            return True
    return False


def _port(network: Network) -> str:
    return f"[{network}]:443/tcp" if network.version == 6 else f"{network}:443/tcp"


def _rendered(policy: Policy) -> str:
    return nft_script(policy) + "".join(iptables_rules(policy, v, ()) for v in (4, 6))


def _no_whole_family(text: str) -> None:
    for token in CIDR.findall(text):
        assert ipaddress.ip_network(token, strict=False).prefixlen > 0, token


@settings(max_examples=150, deadline=None)
@given(family_covers(), st.booleans())
def test_a_set_adding_up_to_a_whole_family_is_refused(items: list[str], public: bool) -> None:
    flag = {"allow_public": True} if public else {}
    with pytest.raises(ConfigError) as caught:
        make_policy(allow=items, **flag)
    message = str(caught.value)
    assert "the whole internet" in message
    versions = {ipaddress.ip_network(item).version for item in items}
    covered = [v for v in versions if f"allow {FAMILY[v]}, every" in message]
    assert covered, message
    named = [i for i in items if ipaddress.ip_network(i).version in covered]
    assert all(f"--allow {item}" in message for item in named)


@settings(max_examples=60, deadline=None)
@given(family_covers())
def test_the_same_port_on_a_whole_family_is_refused(items: list[str]) -> None:
    ports = [_port(ipaddress.ip_network(item)) for item in items]
    with pytest.raises(ConfigError, match="port 443/tcp on"):
        make_policy(ports=ports, allow_public=True)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    st.lists(networks(), max_size=5),
    st.lists(networks(), max_size=2),
    st.lists(networks(), max_size=2),
)
@example(  # two halves of the IPv4 space on one port: a whole family, named as such
    allow=[],
    ports=[ipaddress.ip_network("0.0.0.0/1"), ipaddress.ip_network("128.0.0.0/1")],
    servers=[],
)
def test_without_the_flag_only_non_public_space_is_accepted(
    allow: list[Network], ports: list[Network], servers: list[Network]
) -> None:
    dns = [str(n.network_address) for n in servers]
    options = {"allow": [str(n) for n in allow], "ports": [_port(n) for n in ports], "dns": dns}
    lan_only = all(_lan(n) for n in allow + ports) and all(
        _lan(ipaddress.ip_network(a)) for a in dns
    )
    if _covers_a_family(allow) or _covers_a_family(ports):
        # A whole family is refused first: --allow-public would not make it acceptable.
        with pytest.raises(ConfigError, match="the whole internet"):
            make_policy(**options)
        return
    if not lan_only:
        with pytest.raises(ConfigError, match="--allow-public"):
            make_policy(**options)
        return
    policy = make_policy(**options)
    assert all(_lan(n) for n in policy.allow) and all(_lan(r.network) for r in policy.ports)
    assert policy.public() == []
    _no_whole_family(_rendered(policy))


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(networks(), min_size=1, max_size=6))
def test_with_the_flag_public_space_is_listed_and_never_a_whole_family(
    allow: list[Network],
) -> None:
    for version, whole in FAMILY.items():
        same = [n for n in allow if n.version == version]
        assume(whole not in ipaddress.collapse_addresses(same))  # type: ignore[type-var]
    policy = make_policy(allow=[str(n) for n in allow], allow_public=True)
    assert bool(policy.public()) == (not all(_lan(n) for n in allow))
    assert policy.to_json()["public"] == policy.public()
    for item in policy.public():
        assert not _lan(ipaddress.ip_network(item))
    _no_whole_family(_rendered(policy))


@pytest.mark.parametrize(
    ("halves", "whole"),
    [(["0.0.0.0/1", "128.0.0.0/1"], "0.0.0.0/0"), (["::/1", "8000::/1"], "::/0")],
)
def test_two_halves_are_the_whole_internet(halves: list[str], whole: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_policy(allow=halves, allow_public=True)
    message = str(caught.value)
    assert f"--allow {halves[0]}, --allow {halves[1]}" in message
    assert f"together they allow {whole}" in message
    assert "fix: list only the networks" in message


@pytest.mark.parametrize(
    "item",
    ["172.0.0.0/8", "100.64.0.0/10", "10.0.0.0/7", "8.8.8.8", "::ffff:0:0/96", "64:ff9b::/96"],
)
def test_a_network_with_any_public_part_needs_the_flag(item: str) -> None:
    with pytest.raises(ConfigError, match=f"--allow {re.escape(item)}: reaches public"):
        make_policy(allow=[item])
    assert make_policy(allow=[item], allow_public=True).public()


def test_private_loopback_link_local_and_ula_need_no_flag() -> None:
    items = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.1", "169.254.0.0/16"]
    items += ["::1", "fe80::/10", "fc00::/7"]
    assert make_policy(allow=items, dns=["10.0.0.53"], ntp=["fd00::123"]).public() == []


def test_public_servers_and_ports_need_the_flag_too() -> None:
    with pytest.raises(ConfigError) as caught:
        make_policy(dns=["8.8.8.8"], ntp=["2001:db8::123"], ports=["1.1.1.1/32:443/tcp"])
    for item in ("--allow-dns 8.8.8.8", "--allow-ntp 2001:db8::123", "--allow-port 1.1.1.1/32"):
        assert item in str(caught.value)
    policy = make_policy(dns=["8.8.8.8"], ports=["1.1.1.1/32:443/tcp"], allow_public=True)
    assert policy.public() == ["8.8.8.8 (DNS)", "1.1.1.1/32:443/tcp"]


@pytest.mark.parametrize(
    ("option", "item", "name"),
    [
        ("allow", "example.com", "example.com"),
        ("allow", "db.local:5432", "db.local"),
        ("ports", "db.local:5432/tcp", "db.local"),
        ("dns", "dns.example", "dns.example"),
        ("ntp", "pool.ntp.org", "pool.ntp.org"),
    ],
)
def test_host_names_are_refused_without_a_lookup(
    monkeypatch: pytest.MonkeyPatch, option: str, item: str, name: str
) -> None:
    def no_lookup(*args: object, **kwargs: object) -> None:
        raise AssertionError("a name was looked up")

    for lookup in ("getaddrinfo", "gethostbyname", "gethostbyname_ex"):
        monkeypatch.setattr(socket, lookup, no_lookup)
    with pytest.raises(ConfigError) as caught:
        make_policy(**{option: [item]})
    assert f"{item!r}: {name!r} is a host name" in str(caught.value)
    assert "never looked up" in str(caught.value)


def test_plan_lists_the_public_addresses_first() -> None:
    policy = make_policy(allow=["192.168.50.0/24"], dns=["8.8.8.8"], allow_public=True)
    for backend in ("nft", "iptables"):
        shown = plan_text(policy, backend)
        assert "# PUBLIC addresses allowed (--allow-public)" in shown
        assert "#   8.8.8.8 (DNS)" in shown
    assert plan_text(policy, "nft").startswith("#!/usr/sbin/nft -f\n")
    assert "PUBLIC" not in plan_text(make_policy(allow=["192.168.50.0/24"]), "nft")


def test_a_stored_policy_goes_through_the_same_checks() -> None:
    hostile = {"allow": ["0.0.0.0/1", "128.0.0.0/1"], "allow_public": True}
    with pytest.raises(ConfigError, match=r"(?s)applied\.json: .*together they allow 0\.0\.0\.0/0"):
        load_policy(hostile, "applied.json")
    with pytest.raises(ConfigError, match="reaches public"):
        load_policy({"allow": ["8.8.8.0/24"]}, "applied.json")
    with pytest.raises(ConfigError, match="not a firewall policy"):
        load_policy({"allow": "10.0.0.0/8"}, "applied.json")
    good = make_policy(allow=["10.0.0.0/8"], dns=["8.8.8.8"], allow_public=True)
    assert load_policy(json.loads(json.dumps(good.to_json())), "applied.json") == good


def test_apply_refuses_a_policy_built_past_the_checks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def untouched(name: str | None) -> None:
        raise AssertionError("the firewall was touched")

    monkeypatch.setattr(apply_module, "make_backend", untouched)
    halves = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/1", "128.0.0.0/1"))
    for policy in (Policy(allow=halves), Policy(allow=(ipaddress.ip_network("8.8.8.8"),))):
        with pytest.raises(ConfigError):
            apply_module.apply(policy, "nft", 0, tmp_path / "state")
    assert not (tmp_path / "state").exists()


def _applied(state: Path, policy: dict[str, object]) -> None:
    state.mkdir(exist_ok=True)
    (state / "applied.json").write_text(json.dumps({"policy": policy, "ruleset": ""}))


def test_verify_evidence_records_the_public_addresses(tmp_path: Path) -> None:
    assert applied_policy(tmp_path, None) is None
    policy = make_policy(allow=["192.168.50.0/24"], dns=["8.8.8.8"], allow_public=True)
    _applied(tmp_path, policy.to_json())
    found = applied_policy(tmp_path, None)
    assert found is not None and found["ok"] is True
    assert found["public"] == ["8.8.8.8 (DNS)"] and found["allow_public"] is True


def test_verify_fails_on_an_applied_policy_the_checks_refuse(tmp_path: Path) -> None:
    _applied(tmp_path, {"allow": ["0.0.0.0/1", "128.0.0.0/1"], "allow_public": True})
    found = applied_policy(tmp_path, None)
    assert found is not None and found["ok"] is False
    assert "--allow 0.0.0.0/1, --allow 128.0.0.0/1" in found["problem"]
    evidence = Verification([], "nft", "0" * 64, {}, {}, policy=found)
    assert not evidence.ok and evidence.to_json()["policy"]["ok"] is False
