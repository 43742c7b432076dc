"""``offline firewall verify``: prove egress is blocked with real packets, and keep the evidence.

Every probe towards the internet must fail: TCP to public IPv4 and IPv6 addresses, DNS questions
to public resolvers over UDP 53, name lookups through the host's resolver, QUIC-shaped UDP to
port 443, ICMP echo. Every ``--expect-reachable HOST:PORT`` must accept a TCP connection (the LAN
services the host needs). The evidence records each probe, the live ruleset's hash, our drop
counters before and after the probes (they rise as the probes are dropped), and the policy apply
loaded, checked again as the options were: the public addresses it reaches (``--allow-public``)
and whether the live rules are still its rules. An applied policy the checks refuse (an edited
state file) fails the verification.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from offline.errors import ConfigError, ResourceError
from offline.firewall.apply import State, state_dir
from offline.firewall.backend import (
    Backend,
    IptablesBackend,
    NftBackend,
    digest,
    same_rules,
    snapshot,
)
from offline.firewall.policy import load_policy
from offline.firewall.probes import (
    Probe,
    ask,
    at_once,
    connect,
    datagram,
    parse_endpoint,
    ping,
    quic_initial,
    resolve,
    shown,
)


@dataclass(frozen=True)
class Targets:
    """Where the probes aim: well-known public services, reachable from any connected host."""

    tcp: tuple[tuple[str, int], ...] = (
        ("1.1.1.1", 443),
        ("8.8.8.8", 53),
        ("2606:4700:4700::1111", 443),
        ("2001:4860:4860::8888", 443),
    )
    resolvers: tuple[str, ...] = ("1.1.1.1", "8.8.8.8", "2606:4700:4700::1111")
    names: tuple[str, ...] = ("pypi.org", "huggingface.co")
    quic: tuple[tuple[str, int], ...] = (("1.1.1.1", 443), ("2606:4700:4700::1111", 443))
    icmp: tuple[str, ...] = ("1.1.1.1", "2606:4700:4700::1111")


@dataclass
class Outcome:
    kind: str
    expect: str  # "blocked" or "reachable"
    probe: Probe

    @property
    def ok(self) -> bool:
        return self.probe.reached == (self.expect == "reachable")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "expect": self.expect, "ok": self.ok, **self.probe.to_json()}


@dataclass
class Verification:
    outcomes: list[Outcome]
    backend: str | None
    ruleset_sha256: str
    drops_before: dict[str, dict[str, int]]
    drops_after: dict[str, dict[str, int]]
    policy: dict[str, Any] | None = None
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def ok(self) -> bool:
        policy_ok = self.policy is None or self.policy["ok"] is not False
        return policy_ok and all(o.ok for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "time": self.time,
            "backend": self.backend,
            "ruleset_sha256": self.ruleset_sha256,
            "drops": {"before": self.drops_before, "after": self.drops_after},
            "policy": self.policy,
            "probes": [o.to_json() for o in self.outcomes],
        }


def parse_reachable(items: Sequence[str]) -> list[tuple[str, int]]:
    """``HOST:PORT`` or ``[V6]:PORT`` for ``--expect-reachable``; all bad items in one error."""
    found, errors = [], []
    for item in items:
        try:
            found.append(_endpoint(item))
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError(
            "--expect-reachable: " + "; ".join(errors),
            fix="give IP:PORT, e.g. 192.168.10.5:5000 or [fd00:10::5]:5000",
        )
    return found


def _endpoint(text: str) -> tuple[str, int]:
    if text.startswith("[") and "]:" in text:
        return parse_endpoint(text, 6)
    if text.count(":") == 1:
        return parse_endpoint(text, 4)
    raise ValueError(f"{text!r} needs a port (IPv6 in brackets: [fd00::5]:5000)")


def live_backend() -> Backend | None:
    """The backend whose rules are live now (nft table first), or None when neither is."""
    for backend in (NftBackend(), IptablesBackend()):
        try:
            if backend.ours() is not None:
                return backend
        except Exception:
            continue
    return None


def verify(
    expect_reachable: Sequence[tuple[str, int]] = (),
    timeout: float = 1.0,
    targets: Targets | None = None,
    root: Path | None = None,
) -> Verification:
    """Run every probe at once (about ``timeout`` seconds in all) and collect the evidence.

    ``root`` is the state directory apply used (see :func:`~offline.firewall.apply.state_dir`).
    """
    aim = targets or Targets()
    backend = live_backend()
    before = backend.drops() if backend else {}
    jobs = _jobs(aim, expect_reachable, timeout)
    outcomes = at_once(lambda job: job(), jobs, timeout + 2.0, lambda job: _late(job, timeout))
    return Verification(
        outcomes=outcomes,
        backend=backend.name if backend else None,
        ruleset_sha256=digest(snapshot()),
        drops_before=before,
        drops_after=backend.drops() if backend else {},
        policy=applied_policy(root, backend.ours() if backend else None),
    )


def applied_policy(root: Path | None, live: str | None) -> dict[str, Any] | None:
    """The policy apply loaded, checked again, as evidence; None when nothing was applied.

    ``ok`` is False when the checks refuse it, None when the state cannot be read (not root).
    """
    state = State(state_dir(root))
    source = str(state.root / "applied.json")
    try:
        applied = state.read("applied")
        if applied is None:
            return None
        policy = load_policy(applied.get("policy"), source)
    except ResourceError as exc:
        return {"source": source, "ok": None, "problem": exc.message}
    except ConfigError as exc:
        return {"source": source, "ok": False, "problem": str(exc)}
    ruleset = str(applied.get("ruleset", ""))
    return {
        "source": source,
        "ok": True,
        "allow_public": policy.allow_public,
        "public": policy.public(),
        "matches_live": None if live is None else same_rules(live, ruleset),
    }


@dataclass(frozen=True)
class _Job:
    kind: str
    expect: str
    label: str
    work: Callable[[], Probe]

    def __call__(self) -> Outcome:
        return Outcome(self.kind, self.expect, self.work())


def _late(job: _Job, timeout: float) -> Outcome:
    return Outcome(job.kind, job.expect, Probe(job.label, "timeout", False, timeout))


def _jobs(aim: Targets, reachable: Sequence[tuple[str, int]], timeout: float) -> list[_Job]:
    quic = quic_initial()
    jobs = [_Job("tcp", "blocked", shown(*t), partial(connect, t, timeout)) for t in aim.tcp]
    jobs += [
        _Job("udp53", "blocked", shown(r, 53), partial(ask, r, aim.names[0], timeout))
        for r in aim.resolvers
    ]
    jobs += [_Job("dns", "blocked", n, partial(resolve, n)) for n in aim.names]
    jobs += [
        _Job("quic", "blocked", f"udp {shown(*t)}", partial(datagram, t, quic, timeout))
        for t in aim.quic
    ]
    jobs += [_Job("icmp", "blocked", f"icmp {h}", partial(ping, h, timeout)) for h in aim.icmp]
    jobs += [_Job("tcp", "reachable", shown(*t), partial(connect, t, timeout)) for t in reachable]
    return jobs
