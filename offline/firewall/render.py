"""Render a :class:`~offline.firewall.policy.Policy` as an nft script or iptables-restore input.

Both renderings touch only our own objects:

- nft: the table ``inet deepseek_offline`` (IPv4 and IPv6 in one table). The script creates,
  deletes and redefines the table in one ``nft -f`` transaction, so applying it again replaces it
  atomically. Drops in our table are final whatever other tables (Docker's, firewalld's) accept;
  our accepts only end our own table's verdict.
- iptables: chains ``DSO-OUTPUT`` (and ``DSO-FORWARD``) in the filter table, entered by one jump
  at the top of ``OUTPUT`` (and ``FORWARD``, and ``DOCKER-USER`` when Docker made it). Allowed
  traffic ``RETURN``s, so the rest of ``OUTPUT`` (an administrator's own drops) still applies;
  the builtin chains' policies are never changed.

Dropped packets are counted by one rule per hook (``comment "deepseek-offline: ... drop"``) and
logged at a limited rate with the prefix ``offline-drop``.
"""

from __future__ import annotations

from collections.abc import Iterable

from offline.firewall.policy import (
    CHAIN_PREFIX,
    LOG_PREFIX,
    LOG_RATE,
    TABLE,
    Address,
    Network,
    Policy,
)

OUTPUT_CHAIN, FORWARD_CHAIN = "DSO-OUTPUT", "DSO-FORWARD"
DROP_COMMENT = "deepseek-offline: {hook} drop"
ND_TYPES_NFT = (
    "nd-router-solicit",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "mld-listener-report",
    "mld2-listener-report",
)
ND_TYPES_IPT = (
    "router-solicitation",
    "neighbour-solicitation",
    "neighbour-advertisement",
    "143",  # MLDv2 listener report (ip6tables has no name for it)
    "131",  # MLDv1 listener report
)
LINK_LOCAL = ("fe80::/10", "ff02::/16")


def hooks(policy: Policy) -> list[str]:
    """The netfilter hooks the policy holds: output, and forward with ``containers``."""
    return ["output", "forward"] if policy.containers else ["output"]


# nft


def nft_script(policy: Policy) -> str:
    """The whole ``nft -f`` transaction that (re)defines our table."""
    body = "\n".join(f"\t{line}" for line in nft_table_body(policy))
    return (
        "#!/usr/sbin/nft -f\n"
        "# deepseek-offline egress policy from `offline firewall`: change the policy, not this\n"
        f"table inet {TABLE}\n"
        f"delete table inet {TABLE}\n"
        f"table inet {TABLE} {{\n{body}\n}}\n"
    )


def nft_table_body(policy: Policy) -> list[str]:
    lines = ["chain egress {", *(f"\t{rule}" for rule in nft_egress_rules(policy)), "}"]
    for hook in hooks(policy):
        lines += [
            f"chain {hook} {{",
            f"\ttype filter hook {hook} priority filter; policy drop;",
            "\tjump egress",
            f"\tlimit rate {LOG_RATE[0]}/{LOG_RATE[1]} burst {LOG_RATE[2]} packets "
            f'log prefix "{LOG_PREFIX} {hook}: " level warn',
            f'\tcounter drop comment "{DROP_COMMENT.format(hook=hook)}"',
            "}",
        ]
    return lines


def nft_egress_rules(policy: Policy) -> list[str]:
    """The allow rules, shared by the output and forward hooks; what falls through is dropped."""
    rules = ['oifname "lo" accept', "ct state established,related accept"]
    for version, match in ((4, "ip daddr"), (6, "ip6 daddr")):
        if networks := policy.networks(version):
            rules.append(f"{match} {_nft_set(networks)} accept")
        if servers := policy.servers("dns", version):
            rules.append(
                f"{match} {_nft_set(servers)} meta l4proto {{ tcp, udp }} th dport 53 accept"
            )
        if servers := policy.servers("ntp", version):
            rules.append(f"{match} {_nft_set(servers)} udp dport 123 accept")
        for rule in policy.port_rules(version):
            ports = rule.first if rule.first == rule.last else f"{rule.first}-{rule.last}"
            rules.append(f"{match} {rule.network} {rule.proto} dport {ports} accept")
    types = ", ".join(ND_TYPES_NFT)
    rules.append(f"ip6 daddr {{ {', '.join(LINK_LOCAL)} }} icmpv6 type {{ {types} }} accept")
    return rules


def _nft_set(items: Iterable[Network | Address]) -> str:
    values = [str(i) for i in items]
    return values[0] if len(values) == 1 else "{ " + ", ".join(values) + " }"


# iptables


def iptables_rules(policy: Policy, version: int, chains: Iterable[str]) -> str:
    """``iptables-restore --noflush`` input for one IP version.

    ``chains`` are the chains of the live filter table: a jump already in place is not added
    twice, and ``DOCKER-USER`` gets a jump when it exists.
    """
    present = set(chains)
    lines = ["*filter"]
    names = [OUTPUT_CHAIN] + ([FORWARD_CHAIN] if policy.containers else [])
    lines += [f":{name} - [0:0]" for name in names]  # declaring flushes: the rules are replaced
    for hook, name in zip(hooks(policy), names, strict=True):
        lines += [f"-A {name} {rule}" for rule in _ipt_allow(policy, version)]
        prefix = f"{LOG_PREFIX} {hook}: "
        rate, unit, burst = LOG_RATE
        lines.append(
            f"-A {name} -m limit --limit {rate}/{unit} --limit-burst {burst} "
            f'-j LOG --log-prefix "{prefix}"'
        )
        lines.append(f'-A {name} -m comment --comment "{DROP_COMMENT.format(hook=hook)}" -j DROP')
    lines += [f"-I {parent} 1 -j {name}" for parent, name in jumps(policy, present)]
    stale = {c for c in present if c.startswith(CHAIN_PREFIX) and c not in names}
    unlink = [link for link in present if link.partition("->")[2] in stale]
    lines += iptables_removal(sorted(unlink), sorted(stale)).splitlines()[1:-1]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def jumps(policy: Policy, present: set[str] | None = None) -> list[tuple[str, str]]:
    """(builtin or Docker chain, our chain) pairs still to be linked, given ``present`` jumps."""
    wanted = [("OUTPUT", OUTPUT_CHAIN)]
    if policy.containers:
        wanted.append(("FORWARD", FORWARD_CHAIN))
        if present is not None and "DOCKER-USER" in present:
            wanted.append(("DOCKER-USER", FORWARD_CHAIN))
    linked = present or set()
    return [(parent, name) for parent, name in wanted if f"{parent}->{name}" not in linked]


def _ipt_allow(policy: Policy, version: int) -> list[str]:
    rules = ["-o lo -j RETURN", "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"]
    rules += [f"-d {n} -j RETURN" for n in policy.networks(version)]
    for server in policy.servers("dns", version):
        rules += [f"-d {server} -p {proto} --dport 53 -j RETURN" for proto in ("udp", "tcp")]
    rules += [f"-d {s} -p udp --dport 123 -j RETURN" for s in policy.servers("ntp", version)]
    for rule in policy.port_rules(version):
        ports = rule.first if rule.first == rule.last else f"{rule.first}:{rule.last}"
        rules.append(f"-d {rule.network} -p {rule.proto} --dport {ports} -j RETURN")
    if version == 6:
        rules += [
            f"-d {dest} -p ipv6-icmp --icmpv6-type {kind} -j RETURN"
            for dest in LINK_LOCAL
            for kind in ND_TYPES_IPT
        ]
    return rules


def iptables_removal(links: Iterable[str], chains: Iterable[str]) -> str:
    """``iptables-restore --noflush`` input removing our jumps (``PARENT->CHILD``) and chains."""
    lines = ["*filter"]
    for link in links:
        parent, _, child = link.partition("->")
        lines.append(f"-D {parent} -j {child}")
    for chain in chains:
        lines += [f"-F {chain}", f"-X {chain}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def plan_text(policy: Policy, backend: str) -> str:
    """What ``offline firewall plan`` prints: the ruleset(s) the backend would load.

    A policy that reaches public addresses (``--allow-public``) lists them first, as comments.
    """
    if backend == "nft":
        shebang, _, rest = nft_script(policy).partition("\n")
        return f"{shebang}\n{public_comment(policy)}{rest}"
    return public_comment(policy) + "".join(
        f"# {tool} --noflush\n{iptables_rules(policy, version, ())}"
        for version, tool in ((4, "iptables-restore"), (6, "ip6tables-restore"))
    )


def public_comment(policy: Policy) -> str:
    """Comment lines naming the public addresses the policy reaches; empty when there are none."""
    public = policy.public()
    if not public:
        return ""
    lines = [
        "# PUBLIC addresses allowed (--allow-public): outside private, loopback, link-local "
        "and ULA space",
        *(f"#   {item}" for item in public),
    ]
    return "\n".join(lines) + "\n"
