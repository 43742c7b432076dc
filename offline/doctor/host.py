"""How the doctor runs things on the host: one subprocess runner and one package-name rule.

Every command a check starts (nvidia-smi, a Python probe, pip, dvc, ssh, openssl, nft) goes
through :func:`run`: stdin closed, output captured as text, its own session, and at the timeout
the whole process group is killed, so no grandchild keeps the pipes open or outlives the doctor.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ran:
    """A finished (or killed) subprocess; ``code`` is None when it ran out of time, 127 when it
    could not be started (``err`` says why)."""

    code: int | None
    out: str
    err: str = ""
    seconds: float = 0.0
    started: bool = True  # False: the program could not be started (``err`` says why)

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def text(self) -> str:
        return (self.out + "\n" + self.err).strip()

    @property
    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.err.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run(
    argv: Sequence[str],
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Ran:
    """Run ``argv`` in its own session; at ``timeout`` kill its whole process group."""
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        return Ran(127, "", f"cannot run {argv[0]}: {exc.strerror or exc}", started=False)
    with proc:
        try:
            out, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            code = None
    return Ran(code, out, err, time.monotonic() - started)


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()
