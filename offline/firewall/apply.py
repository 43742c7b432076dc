"""Apply, confirm and roll back the egress policy, keeping what was there before.

State lives in one directory (default ``/var/lib/deepseek-offline/firewall``, or
``$DEEPSEEK_OFFLINE_FIREWALL_STATE``), written atomically and under a lock:

``prior.json``
    our part of the firewall before the first apply, and a snapshot of the whole ruleset. Saved
    before anything changes and kept across re-applies, so rollback returns to the state before
    us, also when that state was empty.
``applied.json``
    the policy and the ruleset we loaded (``status`` compares the live rules against it).
``pending.json``
    an apply waiting for ``offline firewall confirm``; a watchdog process rolls back at the
    deadline unless the file is gone by then.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from offline.errors import ConfigError, NotFoundError, ResourceError, ToolError
from offline.firewall.backend import Backend, digest, make_backend, snapshot
from offline.firewall.policy import Policy, load_policy
from offline.fsutil import sha256_bytes

STATE_VAR = "DEEPSEEK_OFFLINE_FIREWALL_STATE"
DEFAULT_STATE = Path("/var/lib/deepseek-offline/firewall")
MAX_CONFIRM_TIMEOUT = 3600


def state_dir(path: Path | None = None) -> Path:
    return path or Path(os.environ.get(STATE_VAR) or DEFAULT_STATE)


EVENTS = "events.jsonl"  # every apply, confirm, rollback and verify: a hash chain (offline.audit)


def record_event(root: Path, record: dict[str, Any]) -> None:
    """One event on the state directory's chained log, signed with the site key if set."""
    from offline.audit.site import append_event, site_key

    append_event(root / EVENTS, {"time": _now(), **record}, site_key())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class State:
    """The firewall state directory; use :func:`locked` to read and change it."""

    root: Path

    def read(self, name: str) -> dict[str, Any] | None:
        path = self.root / f"{name}.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except PermissionError:
            raise ResourceError(
                f"{path}: cannot read the firewall state", fix="run as root, or give --state-dir"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"{path}: unreadable firewall state ({exc})",
                fix=f"inspect it; remove {path} only if you know the firewall's prior state",
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}: unreadable firewall state (not a JSON object)",
                fix=f"inspect it; remove {path} only if you know the firewall's prior state",
            )
        return data

    def write(self, name: str, data: dict[str, Any]) -> None:
        from offline.fsutil import atomic_write_text

        atomic_write_text(self.root / f"{name}.json", json.dumps(data, indent=2) + "\n", 0o600)

    def remove(self, *names: str) -> None:
        for name in names:
            (self.root / f"{name}.json").unlink(missing_ok=True)


@contextmanager
def locked(root: Path) -> Iterator[State]:
    """The state directory, held exclusively (apply, confirm, rollback and the watchdog)."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = (root / ".lock").open("a")
    except PermissionError:
        raise ResourceError(
            f"{root}: cannot write the firewall state", fix="run as root, or give --state-dir"
        ) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield State(root)


@dataclass
class Applied:
    backend: str
    policy: Policy
    ruleset: str
    prior_saved: bool
    confirm_by: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "policy": self.policy.to_json(),
            "ruleset_sha256": digest(self.ruleset),
            "prior_saved": self.prior_saved,
            "confirm_by": self.confirm_by,
            "notes": self.notes,
        }


def apply(
    policy: Policy,
    backend_name: str | None = None,
    confirm_timeout: int = 0,
    root: Path | None = None,
) -> Applied:
    """Save the prior state (first apply only), load the policy atomically, start the watchdog.

    The policy is checked again as :func:`~offline.firewall.policy.make_policy` checks options,
    also when it was built some other way, before anything changes.
    """
    load_policy(policy.to_json(), "the policy to apply")
    if not 0 <= confirm_timeout <= MAX_CONFIRM_TIMEOUT:
        raise ConfigError(
            f"--confirm-timeout {confirm_timeout}: give 0 (off) to {MAX_CONFIRM_TIMEOUT} seconds"
        )
    backend = make_backend(backend_name)
    with locked(state_dir(root)) as state:
        prior = state.read("prior")
        applied = state.read("applied")
        if prior and applied and applied["backend"] != backend.name:
            raise ConfigError(
                f"the firewall is applied with {applied['backend']}, not {backend.name}",
                fix=f"offline firewall rollback first, or use --backend {applied['backend']}",
            )
        keep_prior = prior is not None and backend.ours() is not None
        if not keep_prior:
            state.write("prior", _prior(backend))
        try:
            backend.load(policy)
        except Exception:
            if not keep_prior:  # nothing changed: the next apply saves the prior state afresh
                state.remove("prior")
            raise
        ruleset = backend.ours() or ""
        state.write(
            "applied",
            {
                "backend": backend.name,
                "policy": policy.to_json(),
                "ruleset": ruleset,
                "applied_at": _now(),
            },
        )
        state.remove("rolled_back")
        result = Applied(backend.name, policy, ruleset, not keep_prior, notes=list(policy.notes))
        state.remove("pending")
        if confirm_timeout:
            result.confirm_by = _arm_watchdog(state, confirm_timeout)
        record_event(
            state.root,
            {
                "event": "apply",
                "backend": backend.name,
                "policy": policy.to_json(),
                "ruleset_sha256": sha256_bytes(ruleset.encode()),
                "confirm_by": result.confirm_by,
            },
        )
    return result


def _prior(backend: Backend) -> dict[str, Any]:
    whole = snapshot()
    return {
        "backend": backend.name,
        "saved_at": _now(),
        "saved": backend.saved(),
        "snapshot": whole,
        "snapshot_sha256": digest(whole),
    }


def _arm_watchdog(state: State, seconds: int) -> str:
    token = secrets.token_hex(8)
    deadline = time.time() + seconds
    log = (state.root / "watchdog.log").open("a")
    with log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offline.firewall.apply", str(state.root), token, str(deadline)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives the shell that ran apply (an SSH session)
        )
    confirm_by = datetime.fromtimestamp(deadline, UTC).isoformat(timespec="seconds")
    state.write(
        "pending", {"token": token, "deadline": deadline, "confirm_by": confirm_by, "pid": proc.pid}
    )
    return confirm_by


def confirm(root: Path | None = None) -> dict[str, Any]:
    """Keep the applied rules: cancels the pending rollback. Fails when it already fired."""
    with locked(state_dir(root)) as state:
        pending = state.read("pending")
        if pending is None:
            rolled = state.read("rolled_back")
            if rolled and state.read("applied") is None:
                raise NotFoundError(
                    f"too late: the rules were rolled back at {rolled['at']} ({rolled['why']})",
                    fix="offline firewall apply ... again, and confirm within the timeout",
                )
            raise NotFoundError("nothing to confirm: no apply is waiting for confirmation")
        state.remove("pending")
        record_event(state.root, {"event": "confirm", "confirm_by": pending["confirm_by"]})
    _stop(int(pending.get("pid", 0)))
    return {"confirmed": True, "confirm_by": pending["confirm_by"]}


def _stop(pid: int) -> None:
    if pid > 0:
        with suppress(OSError):  # already gone: it found nothing pending and exited
            os.kill(pid, 15)


@dataclass
class RolledBack:
    backend: str
    exact: bool
    before_sha256: str
    after_sha256: str
    differences: list[str]

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def rollback(root: Path | None = None, why: str = "offline firewall rollback") -> RolledBack:
    """Restore our part of the firewall as it was before the first apply, then compare."""
    with locked(state_dir(root)) as state:
        return _rollback(state, why)


def _rollback(state: State, why: str) -> RolledBack:
    prior = state.read("prior")
    if prior is None:
        raise NotFoundError(
            f"no saved firewall state in {state.root}: nothing was applied from here",
            fix="give the --state-dir used with apply",
        )
    backend = make_backend(prior["backend"])
    backend.restore(prior["saved"])
    after = snapshot()
    differences = _diff(prior["snapshot"], after)
    state.remove("pending", "applied", "prior")
    state.write("rolled_back", {"at": _now(), "why": why, "exact": not differences})
    record_event(
        state.root,
        {"event": "rollback", "why": why, "exact": not differences, "differences": differences},
    )
    return RolledBack(
        backend.name, not differences, prior["snapshot_sha256"], digest(after), differences
    )


def _diff(before: str, after: str) -> list[str]:
    import difflib

    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return [ln for ln in lines if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def watchdog(root: Path, token: str, deadline: float) -> int:
    """Wait for the deadline; roll back unless the apply was confirmed (or replaced) by then."""
    while (left := deadline - time.time()) > 0:
        time.sleep(min(left, 1.0))
    with locked(root) as state:
        pending = state.read("pending")
        if pending is None or pending.get("token") != token:
            return 0
        try:
            done = _rollback(state, "not confirmed in time")
        except (ToolError, NotFoundError, ConfigError) as exc:
            print(f"{_now()} rollback failed: {exc}", flush=True)
            return 1
    print(f"{_now()} not confirmed by the deadline: rolled back (exact: {done.exact})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(watchdog(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
