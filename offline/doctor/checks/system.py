"""Doctor checks: the host itself against the bundle's target (standard library only)."""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from offline.doctor.context import Context
from offline.doctor.model import Check, Result, Severity, passed, problem, skipped

GIB = 1 << 30
MIN_RAM_GIB = 8
MIN_FREE_GIB = 10
MIN_SHM_GIB = 1
MIN_NOFILE = 65536
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k: v.strip().strip('"') for k, v in pairs}


def distro(context: Context) -> Result:
    info = _os_release()
    name = info.get("PRETTY_NAME") or platform.platform()
    return passed(name, id=info.get("ID", ""), version=info.get("VERSION_ID", ""))


def kernel(context: Context) -> Result:
    return passed(f"Linux {platform.release()}", release=platform.release())


def _machine() -> str:
    return _ARCH.get(platform.machine().lower(), platform.machine())


def arch(context: Context) -> Result:
    plats = context.target_platforms
    if not plats:
        return skipped("no bundle given: nothing to compare the architecture with")
    wanted = {m[3] for p in plats if (m := _MANYLINUX.match(p))}
    if _machine() in wanted:
        return passed(f"{_machine()} matches the bundle's {', '.join(plats)}", machine=_machine())
    return problem(
        f"this host is {_machine()}; the bundle is built for {', '.join(plats)}",
        f"build a bundle for manylinux_2_28_{_machine()} on the connected side",
        machine=_machine(),
        platforms=plats,
    )


def glibc(context: Context) -> Result:
    lib, version = platform.libc_ver()
    if lib != "glibc" or not version:
        return problem(
            f"no glibc found ({lib or 'unknown libc'}); manylinux wheels need glibc",
            "use a glibc-based distribution (Debian, Ubuntu, RHEL) for the toolkit",
        )
    have = tuple(int(x) for x in version.split(".")[:2])
    needs = [(int(m[1]), int(m[2])) for p in context.target_platforms if (m := _MANYLINUX.match(p))]
    if not needs:
        return passed(f"glibc {version}", glibc=version)
    need = max(needs)
    if have >= need:
        return passed(f"glibc {version} ≥ {need[0]}.{need[1]} (the bundle's manylinux tag)")
    return problem(
        f"glibc {version} is older than {need[0]}.{need[1]}, which the bundle's wheels need",
        f"build the bundle for manylinux_{have[0]}_{have[1]}_{_machine()} (target.platforms)",
        glibc=version,
    )


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags |= set(line.split(":", 1)[1].split())
    return flags


def cpu_features(context: Context) -> Result:
    flags = _cpu_flags()
    machine = _machine()
    if machine == "x86_64":
        found = sorted(
            f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in flags
        )
        if "avx2" not in flags:
            return problem(
                "the CPU lacks AVX2: torch's CPU kernels and int8 exports run far slower",
                "run training and int8 inference on a CPU with AVX2 (Haswell or later)",
                features=found,
            )
        return passed("CPU features: " + ", ".join(found), features=found)
    if machine == "aarch64":
        arm = [f for f in ("asimd", "sve", "i8mm", "bf16") if f in flags]
        if "asimd" not in flags:
            return problem("the CPU lacks NEON (asimd)", "use an ARMv8-A CPU with NEON")
        return passed("CPU features: " + ", ".join(arm), features=arm)
    return skipped(f"no feature list for {machine}")


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return values


def memory(context: Context) -> Result:
    total = _meminfo().get("MemTotal", 0)
    if total >= MIN_RAM_GIB * GIB:
        return passed(f"{total / GIB:.1f} GiB RAM", bytes=total)
    return problem(
        f"{total / GIB:.1f} GiB RAM; training with CPU offload wants at least {MIN_RAM_GIB} GiB",
        "use a host with more memory, or ZeRO stage 3 with parameter offload and a smaller batch",
        bytes=total,
    )


def _data_dirs(context: Context) -> dict[str, Path]:
    home = Path(context.environ.get("HOME", "/root"))
    dirs = {"cache": Path(context.environ.get("XDG_CACHE_HOME", home / ".cache"))}
    if context.environ.get("HF_HOME"):
        dirs["hf_home"] = Path(context.environ["HF_HOME"])
    if context.bundle:
        dirs["bundle"] = context.bundle
    if context.workspace:
        dirs["workspace"] = context.workspace
    return dirs


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk(context: Context) -> Result:
    free = {name: shutil.disk_usage(_existing(p)).free for name, p in _data_dirs(context).items()}
    low = {n: f for n, f in free.items() if f < MIN_FREE_GIB * GIB}
    shown = {n: f"{f / GIB:.1f} GiB free" for n, f in free.items()}
    if not low:
        return passed(", ".join(f"{n}: {s}" for n, s in shown.items()), **shown)
    names = ", ".join(f"{n} ({free[n] / GIB:.1f} GiB)" for n in low)
    return problem(
        f"little free space for checkpoints and caches: {names}",
        f"free at least {MIN_FREE_GIB} GiB there, or point HF_HOME/the workspace at a larger disk",
        **shown,
    )


def shm(context: Context) -> Result:
    try:
        size = shutil.disk_usage("/dev/shm").total
    except OSError:
        return problem("/dev/shm is missing", "mount tmpfs on /dev/shm (DataLoader workers, NCCL)")
    if size >= MIN_SHM_GIB * GIB:
        return passed(f"/dev/shm {size / GIB:.1f} GiB", bytes=size)
    return problem(
        f"/dev/shm is only {size / GIB:.2f} GiB; DataLoader workers and NCCL need more",
        "mount -o remount,size=8G /dev/shm (or --shm-size in containers)",
        bytes=size,
    )


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def nofile(context: Context) -> Result:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= MIN_NOFILE:
        return passed(f"open files: {_limit(soft)}", soft=_limit(soft), hard=_limit(hard))
    return problem(
        f"open-file limit {soft} is low for data loading and checkpoints",
        f"ulimit -n {MIN_NOFILE} (persist in /etc/security/limits.conf: * - nofile {MIN_NOFILE})",
        soft=_limit(soft),
        hard=_limit(hard),
    )


def memlock(context: Context) -> Result:
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY:
        return passed("locked memory: unlimited")
    return problem(
        f"locked-memory limit is {soft // 1024} KiB; pinned memory and RDMA need it unlimited",
        "ulimit -l unlimited (persist in /etc/security/limits.conf: * - memlock unlimited)",
        soft=_limit(soft),
        hard=_limit(hard),
    )


def clock(context: Context) -> Result:
    now = datetime.now(UTC)
    created = (context.manifest or {}).get("created")
    if now.year < 2024:
        return problem(
            f"the clock says {now:%Y-%m-%d}", "set the time: date -s or an NTP server on the LAN"
        )
    if created:
        built = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if built.timestamp() - time.time() > 24 * 3600:
            return problem(
                f"the clock ({now:%Y-%m-%d %H:%M}Z) is behind the bundle's build time ({created})",
                "set the time: date -s or an NTP server on the LAN (offline firewall --allow-ntp)",
            )
    return passed(f"{now:%Y-%m-%d %H:%M:%S}Z", now=now.strftime("%Y-%m-%dT%H:%M:%SZ"))


def permissions(context: Context) -> Result:
    want_write = {n: p for n, p in _data_dirs(context).items() if n != "bundle"}
    bad = [f"{n} ({p})" for n, p in want_write.items() if not os.access(_existing(p), os.W_OK)]
    if context.bundle and not os.access(context.bundle, os.R_OK | os.X_OK):
        bad.append(f"bundle ({context.bundle}) is not readable")
    if not bad:
        return passed("data, cache and workspace directories are usable")
    return problem(
        "not writable: " + ", ".join(bad),
        "chown the directories to the user who trains, or point HF_HOME/XDG_CACHE_HOME elsewhere",
    )


def checks(context: Context) -> list[Check]:
    warn: Severity = "warning"
    return [
        Check("sys.distro", "system", "distribution", distro, "info"),
        Check("sys.kernel", "system", "kernel", kernel, "info"),
        Check("sys.arch", "system", "architecture vs the bundle's target", arch),
        Check("sys.glibc", "system", "glibc vs the bundle's manylinux tag", glibc),
        Check("sys.cpu-features", "system", "CPU features the artifacts use", cpu_features, warn),
        Check("sys.memory", "system", "RAM", memory, warn),
        Check("sys.disk", "system", "free disk on data, cache and workspace", disk, warn),
        Check("sys.shm", "system", "/dev/shm size", shm, warn),
        Check("sys.ulimit-nofile", "system", "open-file limit", nofile, warn),
        Check("sys.ulimit-memlock", "system", "locked-memory limit", memlock, warn),
        Check("sys.clock", "system", "clock sanity", clock),
        Check("sys.permissions", "system", "directory permissions", permissions),
    ]
