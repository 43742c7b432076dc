"""Run checks in parallel, each with its own timeout; a crash or hang is that check's error.

Checks run in daemon threads, so one that hangs past its timeout is reported and left behind
without holding up the report or the exit.
"""

from __future__ import annotations

import platform
import queue
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from offline import __version__
from offline.doctor.context import Context
from offline.doctor.model import GROUP_ORDER, STATUSES, Check, Finding, Result
from offline.doctor.registry import all_checks, select
from offline.redact import redact, redact_tree

SCHEMA_VERSION = 1


@dataclass
class Report:
    findings: list[Finding]
    context: Context
    created: str
    duration_s: float
    strict: bool = False
    host: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(f.status == s for f in self.findings) for s in STATUSES}

    @property
    def ok(self) -> bool:
        counts = self.counts
        bad = counts["fail"] + counts["error"] + (counts["warn"] if self.strict else 0)
        return bad == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": "deepseek-doctor",
            "toolkit_version": __version__,
            "created": self.created,
            "duration_s": round(self.duration_s, 3),
            "host": self.host,
            "bundle": str(self.context.bundle) if self.context.bundle else None,
            "strict": self.strict,
            "ok": self.ok,
            "summary": self.counts,
            "checks": [f.to_json() for f in self.findings],
        }


def _finding(check: Check, result: Result, seconds: float) -> Finding:
    status = result.status
    if status == "problem":
        status = "fail" if check.severity == "critical" else "warn"
    return Finding(
        check.id,
        check.group,
        check.severity,
        check.title,
        status,
        result.message,
        result.evidence,
        result.fix,
        seconds,
    )


def _crashed(check: Check, exc: BaseException, seconds: float) -> Finding:
    return Finding(
        check.id,
        check.group,
        check.severity,
        check.title,
        "error",
        f"the check itself failed: {type(exc).__name__}: {exc}",
        {},
        "report this with the output of `deepseek-doctor --only " + check.id + " --json`",
        seconds,
    )


def _shown(finding: Finding) -> Finding:
    """``finding`` fit for a report: no credential in its text or evidence, whoever wrote it."""
    return replace(
        finding,
        title=redact(finding.title),
        message=redact(finding.message),
        evidence=redact_tree(finding.evidence),
        fix=None if finding.fix is None else redact(finding.fix),
    )


def run_checks(checks: list[Check], context: Context, *, workers: int = 16) -> list[Finding]:
    """Run ``checks`` at most ``workers`` at a time; results in group order, then by id.

    Every finding is redacted here (see ``offline.redact``), so no check can print a secret.
    """
    done: queue.Queue[tuple[int, Finding]] = queue.Queue()
    slots = threading.Semaphore(workers)
    started: dict[int, float] = {}
    lock = threading.Lock()

    def work(i: int, check: Check) -> None:
        with slots:
            with lock:
                started[i] = time.monotonic()
            try:
                result = check.run(context)
                finding = _finding(check, result, time.monotonic() - started[i])
            except Exception as exc:  # crash isolation: this check only
                finding = _crashed(check, exc, time.monotonic() - started[i])
            done.put((i, finding))

    for i, check in enumerate(checks):
        threading.Thread(target=work, args=(i, check), daemon=True, name=check.id).start()
    findings: dict[int, Finding] = {}
    while len(findings) < len(checks):
        try:
            i, finding = done.get(timeout=0.05)
            findings.setdefault(i, finding)
        except queue.Empty:
            pass
        now = time.monotonic()
        with lock:
            late = [
                i for i, t in started.items() if i not in findings and now - t > checks[i].timeout
            ]
        for i in late:
            check = checks[i]
            findings[i] = Finding(
                check.id, check.group, check.severity, check.title, "error",
                f"timed out after {check.timeout:.0f} s", {},
                f"run it alone to see where it hangs: deepseek-doctor --only {check.id}",
                now - started[i],
            )  # fmt: skip
    order = {g: n for n, g in enumerate(GROUP_ORDER)}
    return sorted(
        (_shown(findings[i]) for i in range(len(checks))),
        key=lambda f: (order.get(f.group, len(order)), f.id),
    )


def _host() -> dict[str, str]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def diagnose(
    context: Context,
    *,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    strict: bool = False,
) -> Report:
    """Run every selected check against ``context`` and return the report."""
    started = time.monotonic()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    checks = select(all_checks(context), only or [], skip or [])
    findings = run_checks(checks, context)
    return Report(findings, context, created, time.monotonic() - started, strict, _host())
