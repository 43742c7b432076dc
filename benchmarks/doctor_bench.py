"""Benchmark: wall time of a full ``deepseek-doctor`` run (goal ≤ 3 s on 2 cores, no GPU).

Runs the real command against an installed bundle (default: the one ``make demo`` installs) with
the install's offline settings, a few times, and prints the median against the goal, plus the
slowest checks of the median run so a regression points at its cause. Prints PASS/MISS; never
fails (shared machines are noisy).

Run: ``.venv/bin/python benchmarks/doctor_bench.py [--bundle PREFIX/bundle] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_S = 3.0


def _offline_env(bundle: Path) -> dict[str, str]:
    env = dict(os.environ)
    settings = bundle.resolve().parent / "etc" / "offline.env"
    if settings.is_file():
        for line in settings.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key] = value
    return env


def run_once(bundle: Path) -> tuple[float, dict[str, object]]:
    doctor = Path(sys.executable).with_name("deepseek-doctor")
    started = time.perf_counter()
    proc = subprocess.run(
        [str(doctor), "--bundle", str(bundle), "--json"],
        capture_output=True,
        text=True,
        env=_offline_env(bundle),
    )
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"deepseek-doctor could not run:\n{proc.stderr}")
    return seconds, json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "dist" / "demo-host" / "bundle")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"{args.bundle}: no installed bundle; run `make demo` first")
    runs = [run_once(args.bundle) for _ in range(args.repeats)]
    times = [t for t, _ in runs]
    median = statistics.median(times)
    report = runs[times.index(sorted(times)[len(times) // 2])][1]
    checks = report["checks"]
    assert isinstance(checks, list)
    print(f"doctor bench: {os.cpu_count()} CPUs, bundle {args.bundle}")
    print(f"   checks per run        {len(checks)}   summary {report['summary']}")
    print("   runs                  " + "  ".join(f"{t:.2f} s" for t in times))
    verdict = "PASS" if median <= GOAL_S else "MISS"
    ratio = median / GOAL_S
    print(f"   median / goal         {median:.2f} s / {GOAL_S:.1f} s = {ratio:.2f}   {verdict}")
    print("   slowest checks:")
    for check in sorted(checks, key=lambda c: -float(c["duration_s"]))[:5]:
        print(f"     {check['duration_s']:6.2f} s  {check['id']}")


if __name__ == "__main__":
    main()
