"""Doctor checks: the Python environments against the bundle's locks.

Facts about an environment come from one subprocess of its own interpreter running
``probes/python_env.py`` (standard library only, ``-I``), so the doctor works whatever is broken
inside that environment; the env's checks share that one answer through ``context.facts``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline.doctor.context import Context
from offline.doctor.host import canonical, run
from offline.doctor.model import Check, Result, passed, problem, skipped, warning

# Packages that are not in a lock yet are expected in every env.
_ALWAYS = {"pip", "setuptools", "wheel", "deepseek-offline"}
_FACTS_TIMEOUT = 30.0
_DEEP_TIMEOUT = 600.0  # --deep hashes every installed file

PYTHON_ENV = Path(__file__).resolve().parent.parent / "probes" / "python_env.py"


@dataclass(frozen=True)
class _Facts:
    """Facts about one env's interpreter, asked once per context and shared by its checks."""

    python: str
    environ: dict[str, str]
    deep: bool
    context: Context

    def get(self) -> dict[str, Any]:
        found = self.context.facts.get(("python-env", self.python, self.deep), self._load)
        if isinstance(found, str):
            raise RuntimeError(found)
        return found

    def _load(self) -> dict[str, Any] | str:
        """The facts, or why there are none."""
        cmd = [self.python, "-I", str(PYTHON_ENV), "1" if self.deep else "0"]
        timeout = _DEEP_TIMEOUT if self.deep else _FACTS_TIMEOUT
        ran = run(cmd, timeout, self.environ)
        if ran.code is None or ran.code == 127:
            return f"{self.python} could not run: {ran.err or f'no answer in {timeout} s'}"
        if ran.code != 0:
            return f"{self.python} failed: {ran.last_error_line}"
        data: dict[str, Any] = json.loads(ran.out)
        data["dists"] = {canonical(k): v for k, v in data["dists"].items()}
        return data


def _locked(context: Context, env: str) -> dict[str, str]:
    for entry in (context.manifest or {}).get("envs", []):
        if entry.get("name") == env:
            return {canonical(p["name"]): p["version"] for p in entry.get("packages", [])}
    return {}


def _env_pythons(context: Context) -> dict[str, str]:
    """env name -> interpreter: the install prefix's venvs, else this doctor's own env."""
    names = [
        e["name"] for e in (context.manifest or {}).get("envs", []) if e["name"] != "bootstrap"
    ]
    prefix = context.bundle.resolve().parent if context.bundle else None
    found = {
        n: str(prefix / "envs" / n / "bin" / "python")
        for n in names
        if prefix and (prefix / "envs" / n / "bin" / "python").exists()
    }
    if not found:
        found = {names[0] if names else "current": context.python}
    return found


def _version(context: Context, facts: _Facts) -> Result:
    have = facts.get()["version"]
    want = context.target_python
    if want is None:
        return passed(f"Python {have}", version=have)
    if have.startswith(want + "."):
        return passed(f"Python {have} matches the bundle's target {want}", version=have)
    return problem(
        f"{facts.python} is Python {have}; the bundle is built for {want}",
        f"install with --python /path/to/python{want}, or rebuild the bundle for {have}",
        version=have,
    )


def _venv(context: Context, facts: _Facts) -> Result:
    data = facts.get()
    if data["prefix"] != data["base_prefix"]:
        return passed(f"virtual environment {data['prefix']}", prefix=data["prefix"])
    return problem(
        f"{facts.python} is the system interpreter, not a virtual environment",
        "use the venv install-offline.sh made: source PREFIX/envs/toolkit/bin/activate",
        prefix=data["prefix"],
    )


def _remote(value: str) -> bool:
    return any(u.startswith(("http://", "https://")) for u in value.replace("'", " ").split())


def _is_remote_setting(line: str) -> bool:
    key = line.split("=", 1)[0]
    return key.endswith(("index-url", "find-links")) and _remote(line.split("=", 1)[-1])


def _pip_index(context: Context, facts: _Facts) -> Result:
    cmd = [facts.python, "-m", "pip", "config", "list"]
    ran = run(cmd, 15, facts.environ)
    if ran.code is None or ran.code == 127:
        return skipped(f"pip config could not be read: {ran.err or 'no answer in 15 s'}")
    out = ran.out
    remote = [line for line in out.splitlines() if _is_remote_setting(line)]
    remote += [
        f"{k}={v}"
        for k, v in facts.environ.items()
        if k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS") and _remote(v)
    ]
    if not any("index-url" in line for line in out.splitlines()) and not remote:
        return problem(
            "pip has no index configured, so it falls back to the public index",
            "source PREFIX/etc/offline.env (PIP_CONFIG_FILE names the bundle's local index)",
        )
    if remote:
        return problem(
            "pip is configured with a remote index: " + "; ".join(remote),
            "remove it; the bundle's simple/ (file://) is the only index on this host",
            remote=remote,
        )
    return passed("pip uses only the bundle's local index", config=out.strip().splitlines())


def _package(name: str, version: str, facts: _Facts, env: str) -> Callable[[Context], Result]:
    def run(context: Context) -> Result:
        have = facts.get()["dists"].get(name)
        if have == version:
            return passed(f"{name} {version}")
        fix = f"reinstall the env from the bundle: install-offline.sh BUNDLE --env {env} ..."
        if have is None:
            return problem(f"{name} {version} is locked but not installed", fix, locked=version)
        return problem(
            f"{name} {have} is installed; the lock says {version}", fix, locked=version, have=have
        )

    return run


def _extras(locked: dict[str, str], facts: _Facts) -> Callable[[Context], Result]:
    def run(context: Context) -> Result:
        extra = sorted(set(facts.get()["dists"]) - set(locked) - _ALWAYS)
        if not extra:
            return passed("no packages outside the locks")
        return warning(
            f"{len(extra)} installed packages are in no lock: {', '.join(extra[:20])}",
            f"uninstall what the bundle does not carry: {facts.python} -m pip uninstall "
            + " ".join(extra[:20]),
            packages=extra,
        )

    return run


def _records(context: Context, facts: _Facts) -> Result:
    if not context.deep:
        return skipped("installed files are hashed only with --deep")
    bad = facts.get()["record_mismatches"]
    if not bad:
        return passed("every installed file matches its RECORD hash")
    names = ", ".join(sorted(bad))
    return problem(
        f"installed files changed since install in: {names}",
        "reinstall those packages from the bundle (install-offline.sh re-run)",
        changed={k: v[:10] for k, v in bad.items()},
    )


def _bind(fn: Callable[[Context, _Facts], Result], facts: _Facts) -> Callable[[Context], Result]:
    return lambda context: fn(context, facts)


def checks(context: Context) -> list[Check]:
    found: list[Check] = []
    for env, python in _env_pythons(context).items():
        facts = _Facts(python, dict(context.environ), context.deep, context)
        p = f"py.{env}"
        wait = _DEEP_TIMEOUT + 10 if context.deep else _FACTS_TIMEOUT + 10
        found += [
            Check(
                f"{p}.version",
                "python",
                f"{env}: Python version",
                _bind(_version, facts),
                "critical",
                wait,
            ),
            Check(
                f"{p}.venv",
                "python",
                f"{env}: a virtual environment",
                _bind(_venv, facts),
                "warning",
                wait,
            ),
            Check(
                f"{p}.pip-index",
                "python",
                f"{env}: pip's index",
                _bind(_pip_index, facts),
                "warning",
                20,
            ),
            Check(
                f"{p}.record",
                "python",
                f"{env}: RECORD hashes (--deep)",
                _bind(_records, facts),
                "critical",
                wait,
            ),
        ]
        locked = _locked(context, env)
        for name, version in sorted(locked.items()):
            found.append(
                Check(
                    f"{p}.pkg.{name}",
                    "python",
                    f"{env}: {name}=={version}",
                    _package(name, version, facts, env),
                    "critical",
                    wait,
                )
            )
        if locked:
            found.append(
                Check(
                    f"{p}.extra-packages",
                    "python",
                    f"{env}: packages in no lock",
                    _extras(locked, facts),
                    "warning",
                    wait,
                )
            )
    return found
