"""What a check is and what it returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "warn", "fail", "skip", "error"]
Severity = Literal["critical", "warning", "info"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "skip", "error")
GROUP_ORDER = (
    "system",
    "python",
    "accelerators",
    "frameworks",
    "offline",
    "network",
    "bundle",
    "models",
    "cluster",
)
_SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")


@dataclass(frozen=True)
class Result:
    """What one check found. ``problem`` results become fail or warn by the check's severity."""

    status: Status | Literal["problem"]
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    fix: str | None = None


def passed(message: str, **evidence: Any) -> Result:
    return Result("pass", message, evidence)


def problem(message: str, fix: str, **evidence: Any) -> Result:
    """Something is wrong: a failure for a critical check, a warning otherwise."""
    return Result("problem", message, evidence, fix)


def warning(message: str, fix: str | None = None, **evidence: Any) -> Result:
    return Result("warn", message, evidence, fix)


def skipped(message: str, **evidence: Any) -> Result:
    return Result("skip", message, evidence)


@dataclass(frozen=True)
class Check:
    """A registered check: ``run(context)`` returns a Result and must not print."""

    id: str  # "<group>.<name>", e.g. "net.dns-blocked"
    group: str
    title: str
    run: Callable[[Any], Result]
    severity: Severity = "critical"
    timeout: float = 10.0


@dataclass(frozen=True)
class Finding:
    """A check's result as reported: status resolved, timing added."""

    id: str
    group: str
    severity: Severity
    title: str
    status: Status
    message: str
    evidence: Mapping[str, Any]
    fix: str | None
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "severity": self.severity,
            "title": self.title,
            "status": self.status,
            "message": self.message,
            "evidence": dict(self.evidence),
            "fix": self.fix,
            "duration_s": round(self.duration_s, 3),
        }


def is_secret(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in _SECRET_WORDS)


def shown_env(name: str, value: str) -> str:
    """An environment value fit for a report: secrets are never printed."""
    return "<redacted>" if is_secret(name) else value
