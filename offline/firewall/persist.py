"""``offline firewall persist`` and ``status``: the rules survive a reboot, and nothing drifted.

persist writes what the distribution's own boot services load:

- nft: ``/etc/nftables.d/deepseek-offline.nft`` (our table, replaced atomically when loaded), and
  an ``include`` of it in ``/etc/nftables.conf`` (loaded by ``nftables.service``);
- iptables: ``/etc/iptables/rules.v4`` and ``rules.v6`` (loaded by ``netfilter-persistent``).

status compares the live rules with what apply loaded and with what boot would load, and names
what else manages the firewall here (firewalld, ufw, Docker, legacy and nft iptables both holding
rules), since any of them can undo or bypass ours.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline.errors import ConfigError, NotFoundError
from offline.firewall.apply import State, state_dir
from offline.firewall.backend import COUNTERS, Backend, have, run_tool, same_rules
from offline.firewall.policy import CHAIN_PREFIX, TABLE, load_policy
from offline.firewall.verify import live_backend
from offline.fsutil import atomic_write_text

NFT_FILE = Path("etc/nftables.d/deepseek-offline.nft")
NFT_CONF = Path("etc/nftables.conf")
RULES = {4: Path("etc/iptables/rules.v4"), 6: Path("etc/iptables/rules.v6")}
_WANTS = Path("etc/systemd/system")


@dataclass
class Persisted:
    backend: str
    files: list[str]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def persist(root: Path = Path("/")) -> Persisted:
    """Write the live rules where the boot services load them from."""
    backend = live_backend()
    if backend is None:
        raise NotFoundError(
            "no deepseek-offline firewall rules are live: nothing to persist",
            fix="offline firewall apply --allow CIDR ... first",
        )
    if backend.name == "nft":
        return _persist_nft(backend, root)
    return _persist_iptables(root)


def _persist_nft(backend: Backend, root: Path) -> Persisted:
    table = backend.ours() or ""
    script = (
        "#!/usr/sbin/nft -f\n# deepseek-offline egress policy (offline firewall persist)\n"
        f"table inet {TABLE}\ndelete table inet {TABLE}\n{table}"
    )
    atomic_write_text(root / NFT_FILE, script)
    conf = root / NFT_CONF
    include = f'include "/{NFT_FILE}"'
    text = conf.read_text() if conf.is_file() else "#!/usr/sbin/nft -f\n"
    if include not in text.splitlines():
        atomic_write_text(
            conf, text.rstrip("\n") + f"\n\n# deepseek-offline egress policy\n{include}\n"
        )
    notes = []
    if not _enabled(root, "nftables.service"):
        notes.append(f"nftables.service is not enabled: {_ENABLE['nft']}")
    return Persisted("nft", [str(root / NFT_FILE), str(conf)], notes)


def _persist_iptables(root: Path) -> Persisted:
    files = []
    for version, path in RULES.items():
        save = run_tool(["iptables-save" if version == 4 else "ip6tables-save"])
        atomic_write_text(root / path, COUNTERS.sub("", _uncommented(save)))
        files.append(str(root / path))
    notes = []
    if not _enabled(root, "netfilter-persistent.service"):
        notes.append(f"netfilter-persistent is not enabled: {_ENABLE['iptables']}")
    return Persisted("iptables", files, notes)


def _uncommented(save: str) -> str:
    return "".join(line + "\n" for line in save.splitlines() if not line.startswith("#"))


_ENABLE = {
    "nft": "systemctl enable nftables",
    "iptables": "apt-get install iptables-persistent && systemctl enable netfilter-persistent",
}
_UNITS = {"nft": "nftables.service", "iptables": "netfilter-persistent.service"}


def _boot_service_enabled(root: Path, backend: Backend | None) -> bool:
    return backend is None or _enabled(root, _UNITS[backend.name])


def _enabled(root: Path, unit: str) -> bool:
    wants = (root / _WANTS).glob("*.wants")
    return any(os.path.lexists(directory / unit) for directory in wants)


# status


@dataclass
class Status:
    backend: str | None
    live: bool
    matches_applied: bool | None
    persisted: bool
    matches_persisted: bool | None
    pending_confirm_by: str | None
    managers: list[str]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.__dict__}


def status(root: Path = Path("/"), state: Path | None = None) -> Status:
    """Live vs applied vs persisted, confirm pending, and the other firewall managers here."""
    saved = State(state_dir(state))
    applied, pending = saved.read("applied"), saved.read("pending")
    backend = live_backend()
    live = backend.ours() if backend else None
    persisted = _persisted_rules(root, backend.name if backend else (applied or {}).get("backend"))
    problems = []
    if live is None:
        problems.append("no deepseek-offline rules are live: offline firewall apply ...")
    matches_applied = None
    if applied is not None and live is not None:
        matches_applied = same_rules(live, applied["ruleset"])
        if not matches_applied:
            problems.append(
                "the live rules differ from what apply loaded: re-run offline firewall apply"
            )
    matches_persisted = None if persisted is None or live is None else same_rules(live, persisted)
    if persisted is None:
        problems.append("the rules are not restored at boot: offline firewall persist")
    elif matches_persisted is False:
        problems.append(
            "the rules restored at boot differ from the live ones: offline firewall persist"
        )
    if backend and persisted is not None and not _boot_service_enabled(root, backend):
        problems.append(f"nothing loads the persisted rules at boot: {_ENABLE[backend.name]}")
    problems += _policy_problems(applied, saved.root)
    if pending:
        problems.append(
            f"apply not confirmed; rolls back at {pending['confirm_by']}: offline firewall confirm"
        )
    managers = other_managers(root)
    problems += [m for m in managers if m.startswith("iptables-legacy and iptables-nft")]
    return Status(
        backend=backend.name if backend else None,
        live=live is not None,
        matches_applied=matches_applied,
        persisted=persisted is not None,
        matches_persisted=matches_persisted,
        pending_confirm_by=pending["confirm_by"] if pending else None,
        managers=managers,
        problems=problems,
    )


def _policy_problems(applied: dict[str, Any] | None, root: Path) -> list[str]:
    """The applied policy, checked again as the options were: state files can be edited."""
    if applied is None:
        return []
    try:
        load_policy(applied.get("policy"), str(root / "applied.json"))
    except ConfigError as exc:
        return [f"{exc.message}: {exc.fix}"]
    return []


def _persisted_rules(root: Path, backend: str | None) -> str | None:
    """Our rules as boot would load them, in the form ``Backend.ours`` prints, or None."""
    if backend == "nft":
        path = root / NFT_FILE
        conf = root / NFT_CONF
        if (
            not path.is_file()
            or not conf.is_file()
            or f'include "/{NFT_FILE}"' not in conf.read_text()
        ):
            return None
        text = path.read_text()
        marker = f"delete table inet {TABLE}\n"
        return text.split(marker, 1)[1] if marker in text else None
    if backend == "iptables":
        parts = []
        for version, rel in RULES.items():
            path = root / rel
            if not path.is_file():
                return None
            mine = [ln for ln in path.read_text().splitlines() if CHAIN_PREFIX in ln]
            if mine:
                parts.append(f"# IPv{version}\n" + "\n".join(mine))
        return "\n".join(parts) + "\n" if parts else None
    return None


def other_managers(root: Path = Path("/")) -> list[str]:
    """Other things that manage netfilter here, each a short sentence."""
    found = []
    if (root / "run/firewalld").exists() or _enabled(root, "firewalld.service"):
        found.append("firewalld is present: its reloads keep our table, but check its zones")
    ufw = root / "etc/ufw/ufw.conf"
    if ufw.is_file() and re.search(r"^ENABLED=yes", ufw.read_text(), re.MULTILINE):
        found.append("ufw is enabled: it manages iptables too")
    if (root / "run/docker.sock").exists() or _enabled(root, "docker.service"):
        found.append("Docker is present: apply with --containers so containers are held too")
    if mixed := _mixed_iptables():
        found.append(mixed)
    return found


def _mixed_iptables() -> str | None:
    counts = {}
    for variant in ("legacy", "nft"):
        tool = f"iptables-{variant}-save"
        if have(tool):
            counts[variant] = sum(ln.startswith("-A ") for ln in run_tool([tool]).splitlines())
    if counts.get("legacy") and counts.get("nft"):
        return (
            f"iptables-legacy and iptables-nft both hold rules ({counts['legacy']} and "
            f"{counts['nft']}): packets pass both; move the legacy rules to one variant"
        )
    return None
