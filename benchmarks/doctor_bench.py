"""Benchmark: wall time of a full ``deepseek-doctor`` run (goal ≤ 3 s on 2 cores, no GPU).

Runs the real command against an installed bundle (default: the one ``make demo`` installs; or,
with ``--no-bundle``, against this env alone) with the install's offline settings, a few times.
In the same run, interleaved with it, it times the two reports a user would otherwise read:
DeepSpeed's ``ds_report`` and ``python -m torch.utils.collect_env``. It prints the doctor's
median against the goal and against the peers' (their sum per round, so a noisy round costs
both sides), plus the slowest checks of the median run so a regression points at its cause.
Prints PASS/MISS for each goal; never fails (shared machines are noisy).

Run: ``.venv/bin/python benchmarks/doctor_bench.py [--bundle PREFIX/bundle | --no-bundle]
[--repeats 3]``
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
GOAL_RATIO = 1.0  # the doctor against ds_report + collect_env together


def _offline_env(bundle: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if bundle is None:
        return env
    settings = bundle.resolve().parent / "etc" / "offline.env"
    if settings.is_file():
        for line in settings.read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key] = value
    return env


def run_once(bundle: Path | None) -> tuple[float, dict[str, object]]:
    doctor = Path(sys.executable).with_name("deepseek-doctor")
    argv = [str(doctor), "--json"] + (["--bundle", str(bundle)] if bundle else [])
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=_offline_env(bundle))
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"deepseek-doctor could not run:\n{proc.stderr}")
    return seconds, json.loads(proc.stdout)


PEERS = {
    "ds_report": [str(Path(sys.executable).with_name("ds_report"))],
    "collect_env": [sys.executable, "-m", "torch.utils.collect_env"],
}


def time_peer(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} could not run:\n{proc.stderr[-2000:]}")
    return seconds


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "dist" / "demo-host" / "bundle")
    parser.add_argument("--no-bundle", action="store_true", help="check this env alone")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    bundle: Path | None = None if args.no_bundle else args.bundle
    if bundle is not None and not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{bundle}: no installed bundle; run `make demo` first (or --no-bundle)")
    env = _offline_env(bundle)
    runs, peers = [], []
    for _ in range(args.repeats):
        runs.append(run_once(bundle))
        peers.append({name: time_peer(cmd, env) for name, cmd in PEERS.items()})
    times = [t for t, _ in runs]
    median = statistics.median(times)
    report = runs[times.index(sorted(times)[len(times) // 2])][1]
    checks = report["checks"]
    assert isinstance(checks, list)
    both = statistics.median(sum(p.values()) for p in peers)
    ratio = median / both
    print(f"doctor bench: {os.cpu_count()} CPUs, bundle {bundle or 'none (this env alone)'}")
    print(f"   checks per run        {len(checks)}   summary {report['summary']}")
    print("   doctor runs           " + "  ".join(f"{t:.2f} s" for t in times))
    for name in PEERS:
        print(f"   {name:<21} " + "  ".join(f"{p[name]:.2f} s" for p in peers))
    print(f"   peers median          {both:.2f} s (ds_report + collect_env, per round)")
    goal = f"{median:.2f} s / {GOAL_S:.1f} s = {median / GOAL_S:.2f}"
    print(f"   median / goal         {goal}   {_verdict(median <= GOAL_S)}")
    print(
        f"   doctor / peers        {median:.2f} s / {both:.2f} s = {ratio:.2f}"
        f" (goal <= {GOAL_RATIO:.1f})   {_verdict(ratio <= GOAL_RATIO)}"
    )
    print("   slowest checks:")
    for check in sorted(checks, key=lambda c: -float(c["duration_s"]))[:5]:
        print(f"     {check['duration_s']:6.2f} s  {check['id']}")


if __name__ == "__main__":
    main()
