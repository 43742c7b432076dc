"""Doctor checks: the offline posture of the environment (what stops libraries phoning home)."""

from __future__ import annotations

from collections.abc import Callable

from offline.airgap import ACCEPTED, LABEL_STUDIO_ACCEPTED
from offline.doctor.context import Context
from offline.doctor.model import Check, Result, passed, problem, shown_env

_FIX = "set -a; . PREFIX/etc/offline.env; set +a  (install-offline.sh writes it)"
# variable -> values that mean "off / offline": the producers' own table
REQUIRED = ACCEPTED
# Label Studio's telemetry: `offline label server` sets these itself; a host-wide value that
# turns one on would reach any Label Studio started by hand.
LABEL_STUDIO = LABEL_STUDIO_ACCEPTED


def _required(name: str, good: tuple[str, ...]) -> Callable[[Context], Result]:
    def run(context: Context) -> Result:
        value = context.environ.get(name)
        if value is not None and value.strip().lower() in good:
            return passed(f"{name}={shown_env(name, value)}")
        seen = "unset" if value is None else f"{name}={shown_env(name, value)}"
        return problem(
            f"{name} should be {good[0]} on an isolated host ({seen})",
            f"export {name}={good[0]}  — or: {_FIX}",
            value=None if value is None else shown_env(name, value),
        )

    return run


def _label_studio(name: str, good: tuple[str, ...]) -> Callable[[Context], Result]:
    def run(context: Context) -> Result:
        value = context.environ.get(name, "")
        if value.strip().lower() in good:
            return passed(f"{name} is off" if value else f"{name} unset (off)")
        return problem(
            f"{name} is set to {shown_env(name, value)!r}: Label Studio telemetry would be on",
            f"unset {name}  (offline label server turns it off by itself)",
        )

    return run


def checks(context: Context) -> list[Check]:
    found = [
        Check(f"offline.{n}", "offline", f"{n} set", _required(n, good))
        for n, good in REQUIRED.items()
    ]
    found += [
        Check(f"offline.ls-{n}", "offline", f"Label Studio {n} off", _label_studio(n, good))
        for n, good in LABEL_STUDIO.items()
    ]
    return found
