"""The live firewall: read it, load our rules, take them out again. Two backends, one interface.

``NftBackend`` keeps everything in the table ``inet deepseek_offline``; ``IptablesBackend`` in
the ``DSO-*`` chains of the filter tables of ``iptables`` and ``ip6tables`` (whichever variant,
legacy or nft, those commands are on this host). Neither ever flushes or edits what others own.

Every command runs in the caller's network namespace; tests run the whole module inside
throwaway namespaces.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from offline.errors import ToolError
from offline.firewall.policy import CHAIN_PREFIX, TABLE, Policy
from offline.firewall.render import iptables_removal, iptables_rules, nft_script

TOOL_TIMEOUT = 20.0
_COUNTED = re.compile(r'^\[(\d+):(\d+)\] -A (\S+) .*--comment "?deepseek-offline: (\w+) drop"?')
_CHAIN = re.compile(r"^:(\S+) ")
_JUMP = re.compile(r"^-A (\S+) -j (" + re.escape(CHAIN_PREFIX) + r"\S+)$")
COUNTERS = re.compile(r" ?\[\d+:\d+\]")  # iptables-save packet:byte counts


def run_tool(argv: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    """Run a firewall tool; a missing tool or a failure becomes a ToolError naming both."""
    tool = argv[0]
    if shutil.which(tool) is None:
        package = "nftables" if tool == "nft" else "iptables"
        raise ToolError(f"{tool} is not installed", fix=f"apt-get install {package}")
    try:
        proc = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"{' '.join(argv)} did not finish in {TOOL_TIMEOUT:.0f} s") from None
    if check and proc.returncode != 0:
        why = proc.stderr.strip() or f"exit {proc.returncode}"
        if "Permission denied" in why or "Operation not permitted" in why:
            raise ToolError(
                f"{' '.join(argv)}: {why}", fix="run it as root (sudo offline firewall ...)"
            )
        raise ToolError(f"{' '.join(argv)} failed: {why}")
    return proc.stdout


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


class Backend(Protocol):
    name: str

    def saved(self) -> dict[str, Any]:
        """What :meth:`restore` needs to put our part of the firewall back as it is now."""

    def load(self, policy: Policy) -> None:
        """Replace our rules with ``policy``'s, IPv4 and IPv6 together."""

    def restore(self, saved: dict[str, Any]) -> None:
        """Put our part of the firewall back as :meth:`saved` found it."""

    def ours(self) -> str | None:
        """Our live rules as the tool prints them (no counters), or None when absent."""

    def drops(self) -> dict[str, dict[str, int]]:
        """Drop counters by hook: ``{"output": {"packets": n, "bytes": m}}``."""


# nft


@dataclass
class NftBackend:
    name: str = "nft"

    def ours(self) -> str | None:
        listed = run_tool(["nft", "list", "tables"])
        if f"table inet {TABLE}" not in listed.splitlines():
            return None
        return run_tool(["nft", "-s", "list", "table", "inet", TABLE])

    def saved(self) -> dict[str, Any]:
        return {"table": self.ours()}

    def load(self, policy: Policy) -> None:
        run_tool(["nft", "-f", "-"], stdin=nft_script(policy))

    def restore(self, saved: dict[str, Any]) -> None:
        script = f"table inet {TABLE}\ndelete table inet {TABLE}\n" + (saved.get("table") or "")
        run_tool(["nft", "-f", "-"], stdin=script)

    def drops(self) -> dict[str, dict[str, int]]:
        if self.ours() is None:
            return {}
        listed = json.loads(run_tool(["nft", "-j", "list", "table", "inet", TABLE]))
        found: dict[str, dict[str, int]] = {}
        for item in listed.get("nftables", []):
            rule = item.get("rule")
            if not rule or not str(rule.get("comment", "")).startswith("deepseek-offline:"):
                continue
            for statement in rule.get("expr", []):
                if "counter" in statement:
                    counter = statement["counter"]
                    found[rule["chain"]] = {
                        "packets": counter["packets"],
                        "bytes": counter["bytes"],
                    }
        return found


# iptables


@dataclass
class IptablesBackend:
    name: str = "iptables"

    @staticmethod
    def _tools(version: int) -> tuple[str, str]:
        prefix = "iptables" if version == 4 else "ip6tables"
        return f"{prefix}-save", f"{prefix}-restore"

    def filter_table(self, version: int, counters: bool = False) -> str:
        save, _ = self._tools(version)
        return run_tool([save, *(["-c"] if counters else []), "-t", "filter"])

    def ours(self) -> str | None:
        parts = []
        for version in (4, 6):
            mine = [ln for ln in self.filter_table(version).splitlines() if CHAIN_PREFIX in ln]
            if mine:
                parts.append(f"# IPv{version}\n" + "\n".join(COUNTERS.sub("", ln) for ln in mine))
        return "\n".join(parts) + "\n" if parts else None

    def saved(self) -> dict[str, Any]:
        state: dict[str, Any] = {str(v): self.filter_table(v) for v in (4, 6)}
        state["nft_tables"] = nft_tables() if have("nft") else None
        return state

    def load(self, policy: Policy) -> None:
        before = self.saved()
        _, restore4 = self._tools(4)
        run_tool([restore4, "--noflush"], stdin=iptables_rules(policy, 4, links(before["4"])))
        _, restore6 = self._tools(6)
        try:
            run_tool([restore6, "--noflush"], stdin=iptables_rules(policy, 6, links(before["6"])))
        except ToolError:
            self.restore(before)  # IPv4 and IPv6 go in together or not at all
            raise

    def restore(self, saved: dict[str, Any]) -> None:
        for version in (4, 6):
            _, restore = self._tools(version)
            prior = saved[str(version)]
            current = links(self.filter_table(version))
            if any(name.startswith(CHAIN_PREFIX) for name in links(prior) if "->" not in name):
                run_tool([restore, "-T", "filter"], stdin=prior)  # ours were there: exact copy
                continue
            jumps = sorted(n for n in current if "->" in n)
            chains = sorted(n for n in current if "->" not in n and n.startswith(CHAIN_PREFIX))
            if jumps or chains:
                run_tool([restore, "--noflush"], stdin=iptables_removal(jumps, chains))
        if saved.get("nft_tables") is not None:
            drop_empty_tables(set(saved["nft_tables"]))

    def drops(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for version in (4, 6):
            for line in self.filter_table(version, counters=True).splitlines():
                if match := _COUNTED.match(line):
                    packets, size, _, hook = match.groups()
                    total = found.setdefault(hook, {"packets": 0, "bytes": 0})
                    total["packets"] += int(packets)
                    total["bytes"] += int(size)
        return found


def links(save: str) -> set[str]:
    """Chains of an iptables-save filter dump, plus ``PARENT->DSO-*`` for each jump to ours."""
    found: set[str] = set()
    for line in (raw.strip() for raw in save.splitlines()):
        if match := _CHAIN.match(line):
            found.add(match.group(1))
        elif match := _JUMP.match(COUNTERS.sub("", line).strip()):
            found.add(f"{match.group(1)}->{match.group(2)}")
    return found


def nft_tables() -> list[str]:
    """``family name`` of every nft table (iptables-nft keeps its tables here too)."""
    listed = run_tool(["nft", "list", "tables"])
    return [line.removeprefix("table ").strip() for line in listed.splitlines() if line.strip()]


def drop_empty_tables(keep: set[str]) -> None:
    """Delete iptables-nft filter tables that iptables created for us and that are empty again.

    Without this a rollback from an empty baseline would leave ``table ip filter`` behind.
    """
    for table in set(nft_tables()) - keep:
        family, _, name = table.partition(" ")
        if name != "filter" or family not in ("ip", "ip6"):
            continue
        listed = json.loads(run_tool(["nft", "-j", "list", "table", family, name]))
        items = listed.get("nftables", [])
        busy = any("rule" in i or "set" in i for i in items) or any(
            "chain" in i
            and (i["chain"].get("policy", "accept") != "accept" or "hook" not in i["chain"])
            for i in items
        )
        if not busy:
            run_tool(["nft", "delete", "table", family, name])


def make_backend(name: str | None) -> Backend:
    """``nft``, ``iptables``, or the best one this host has (nft when it works)."""
    if name in (None, "auto"):
        name = "nft" if have("nft") else "iptables"
    if name == "nft":
        return NftBackend()
    if name == "iptables":
        return IptablesBackend()
    raise ToolError(f"unknown firewall backend {name!r}", fix="use --backend nft or iptables")


# The whole ruleset, for proofs: hashes, drift, exact rollback


def snapshot() -> str:
    """Every rule on the host in canonical text: nft (incl. iptables-nft) and legacy iptables.

    Counters and comments are left out, and empty legacy tables (that only exist because
    something looked at them) too, so two snapshots are equal exactly when the rules are.
    """
    parts = []
    if have("nft"):
        parts.append("# nft\n" + run_tool(["nft", "-s", "list", "ruleset"]))
    for tool in ("iptables-legacy-save", "ip6tables-legacy-save"):
        if have(tool):
            parts.append(f"# {tool}\n" + legacy_rules(run_tool([tool])))
    return "\n".join(parts)


def legacy_rules(save: str) -> str:
    """An iptables-save dump without comments, counters, and tables that hold nothing."""
    tables: list[list[str]] = []
    for line in save.splitlines():
        line = COUNTERS.sub("", line).strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            tables.append([line])
        elif tables:
            tables[-1].append(line)
    return "".join("\n".join(t) + "\n" for t in tables if not _empty_table(t))


def _empty_table(lines: list[str]) -> bool:
    for line in lines[1:]:
        if line.startswith("-") or (
            line.startswith(":") and line.split()[1] not in ("ACCEPT", "-")
        ):
            return False
        if line.startswith(":") and line.split()[1] == "-":
            return False  # a user chain, even empty, is state
    return True


def same_rules(a: str, b: str) -> bool:
    """True when two listings of rules differ only in counters, comments and blank lines."""

    def canon(text: str) -> list[str]:
        return [
            COUNTERS.sub("", ln).strip()
            for ln in text.splitlines()
            if ln.strip() and not ln.startswith("#")
        ]

    return canon(a) == canon(b)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
