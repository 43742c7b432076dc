"""Doctor checks: the accelerators group (NVIDIA driver, GPUs, CUDA runtime, NCCL).

Standard library only: torch is never imported here. What torch was built for comes from the
bundle manifest (``torch 2.5.1+cu124``, ``nvidia-nccl-cu12``); where that is not enough, the
installed torch is asked in a subprocess of ``context.python`` running ``probes/torch_build.py``
with a timeout. The checks share one nvidia-smi run and one torch probe (``context.facts``).

A host without ``nvidia-smi`` and without ``/dev/nvidia*`` is CPU-only: the checks skip there, and
``accel.nvidia-smi`` warns when the bundle carries a CUDA torch.

Test and diagnostic hooks, read from ``context.environ``:

- ``PATH``: where ``nvidia-smi`` (and ``nvidia-modprobe``) are looked up;
- ``DEEPSEEK_DOCTOR_PROC_MODULES``: a file to read instead of ``/proc/modules``;
- ``DEEPSEEK_DOCTOR_DEV_DIR``: a directory to search for ``nvidia*`` instead of ``/dev``.
"""

from __future__ import annotations

import csv
import grp
import io
import json
import os
import pwd
import re
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from offline.doctor.context import Context
from offline.doctor.host import Ran, canonical, run
from offline.doctor.model import Check, Result, Severity, passed, problem, skipped, warning

GROUP = "accelerators"
PROC_MODULES = Path("/proc/modules")
DEV_DIR = Path("/dev")
PROC_MODULES_ENV = "DEEPSEEK_DOCTOR_PROC_MODULES"
DEV_DIR_ENV = "DEEPSEEK_DOCTOR_DEV_DIR"
SMI_TIMEOUT_S = 5.0
TORCH_TIMEOUT_S = 30.0
HOT_C = 85
CUDA_SPEC = "bundle/cuda.toml"
CPU_SPEC = "bundle/bundle.toml"
FIELDS = (
    "index",
    "name",
    "uuid",
    "driver_version",
    "memory.total",
    "memory.used",
    "ecc.errors.uncorrected.volatile.total",
    "temperature.gpu",
    "persistence_mode",
    "compute_cap",
)
# The Linux driver branch released with each CUDA toolkit: the oldest that runs it fully.
DRIVER_FOR_CUDA = {
    "11.8": "R520",
    "12.0": "R525",
    "12.1": "R530",
    "12.2": "R535",
    "12.3": "R545",
    "12.4": "R550",
    "12.5": "R555",
    "12.6": "R560",
    "12.8": "R570",
    "12.9": "R575",
    "13.0": "R580",
}
_KNOWN_FAILURES = (
    (
        "couldn't communicate with the NVIDIA driver",
        "nvidia-smi cannot talk to the NVIDIA driver: the kernel module is not loaded",
        "load it: sudo modprobe nvidia; if that fails, install the driver built for the running "
        "kernel (uname -r) from the bundle's OS packages and reboot (see accel.nouveau)",
    ),
    (
        "No devices were found",
        "the NVIDIA driver is loaded but finds no GPU",
        "check the GPUs are on the PCI bus (lspci -d 10de:) and not bound to vfio or nouveau; "
        "in a container, start it with the GPUs (--gpus all or CDI devices)",
    ),
    (
        "Driver/library version mismatch",
        "the NVIDIA kernel module and its user-space library are different versions",
        "reboot to load the upgraded kernel module (or reload it: sudo rmmod nvidia_uvm "
        "nvidia_drm nvidia_modeset nvidia && sudo modprobe nvidia)",
    ),
)
TORCH_BUILD = Path(__file__).resolve().parent.parent / "probes" / "torch_build.py"


# --- facts: nvidia-smi, torch, device files --------------------------------------------------


def run_command(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> Ran:
    """Run ``argv``; on timeout kill its whole process group, so no child keeps the pipes open."""
    return run(argv, timeout, env)


@dataclass(frozen=True)
class Gpu:
    """One GPU as ``nvidia-smi --query-gpu`` reports it; None where it says N/A."""

    index: int
    name: str
    uuid: str
    driver: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    ecc_uncorrected: int | None
    temperature_c: int | None
    persistence: str | None
    compute_cap: str | None

    @property
    def label(self) -> str:
        return f"GPU {self.index} ({self.name})"


@dataclass(frozen=True)
class Smi:
    """What nvidia-smi said: the GPUs, or the failure ``accel.nvidia-smi`` reports."""

    path: str | None = None
    gpus: tuple[Gpu, ...] = ()
    driver: str | None = None
    cuda: str | None = None
    failure: Result | None = None


def _int(cell: str) -> int | None:
    try:
        return int(float(cell))
    except ValueError:
        return None


def _text(cell: str) -> str | None:
    return None if cell.startswith("[") or cell in ("", "N/A") else cell


def _gpu(cells: list[str]) -> Gpu:
    total, used, ecc, temperature = (_int(c) for c in cells[4:8])
    index, name, uuid, driver = int(cells[0]), cells[1], cells[2], cells[3]
    persistence = _text(cells[8])
    compute_cap = cells[9] if re.fullmatch(r"\d+\.\d+", cells[9]) else None
    return Gpu(index, name, uuid, driver, total, used, ecc, temperature, persistence, compute_cap)


def parse_gpus(text: str, with_compute_cap: bool = True) -> tuple[Gpu, ...]:
    """Parse ``--format=csv,noheader,nounits`` rows; ValueError for anything else."""
    width = len(FIELDS) if with_compute_cap else len(FIELDS) - 1
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if len(cells) != width or not cells[0].isdigit():
            raise ValueError(f"unexpected line {','.join(row)[:120]!r}")
        cells += [""] * (len(FIELDS) - width)
        gpus.append(_gpu(cells))
    if not gpus:
        raise ValueError("no GPU lines")
    return tuple(gpus)


def _smi_failure(path: str, ran: Ran) -> Result:
    evidence = {"nvidia_smi": path, "exit_code": ran.code, "output": ran.text[-2000:]}
    if ran.code is None:
        return problem(
            f"nvidia-smi did not answer within {SMI_TIMEOUT_S:g} s",
            "the driver or a GPU is hung: look for Xid errors (sudo dmesg | grep -i xid), "
            "then reboot the host",
            **evidence,
        )
    for needle, message, fix in _KNOWN_FAILURES:
        if needle.lower() in ran.text.lower():
            return problem(f"{message} (nvidia-smi exit {ran.code})", fix, **evidence)
    first = ran.text.splitlines()[0] if ran.text else "no output"
    return problem(
        f"nvidia-smi exited with status {ran.code}: {first}",
        "run nvidia-smi by hand to see the whole error; reinstall the NVIDIA driver if it stays",
        **evidence,
    )


def query_smi(context: Context) -> Smi:
    """Ask the ``nvidia-smi`` on ``context``'s PATH for the GPUs and the driver's CUDA version."""
    path = shutil.which("nvidia-smi", path=context.environ.get("PATH", ""))
    if path is None:
        return Smi()
    fields = list(FIELDS)
    ran = _query(path, fields, context)
    if ran.code != 0 and "not a valid field" in ran.text and "compute_cap" in ran.text:
        fields.remove("compute_cap")  # drivers before R510
        ran = _query(path, fields, context)
    if ran.code != 0:
        return Smi(path, failure=_smi_failure(path, ran))
    try:
        gpus = parse_gpus(ran.out, "compute_cap" in fields)
    except ValueError as exc:
        return Smi(path, failure=_unreadable(path, ran, exc))
    header = run_command([path], context.environ, SMI_TIMEOUT_S)
    cuda = re.search(r"CUDA Version:\s*(\d+\.\d+)", header.out) if header.code == 0 else None
    return Smi(path, gpus, gpus[0].driver, cuda[1] if cuda else None)


def _query(path: str, fields: list[str], context: Context) -> Ran:
    argv = [path, "--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits"]
    return run_command(argv, context.environ, SMI_TIMEOUT_S)


def _unreadable(path: str, ran: Ran, exc: ValueError) -> Result:
    return problem(
        f"nvidia-smi printed output the doctor cannot read: {exc}",
        "run nvidia-smi by hand; if its output is broken too, reinstall the NVIDIA driver",
        nvidia_smi=path,
        output=ran.text[-2000:],
    )


@dataclass(frozen=True)
class TorchBuild:
    """What a torch was built for, and where the doctor learned it."""

    version: str
    cuda: str | None
    source: str
    nccl: str | None = None
    nccl_cuda_major: int | None = None
    arch_list: tuple[str, ...] = ()


def bundle_packages(context: Context) -> dict[str, str]:
    """Package name (normalised) -> version over all of the manifest's envs."""
    found: dict[str, str] = {}
    envs = (context.manifest or {}).get("envs")
    for env in envs if isinstance(envs, list) else []:
        packages = env.get("packages") if isinstance(env, dict) else None
        for pkg in packages if isinstance(packages, list) else []:
            if isinstance(pkg, dict) and pkg.get("name") and pkg.get("version"):
                found.setdefault(canonical(str(pkg["name"])), str(pkg["version"]))
    return found


def cuda_of_tag(local: str) -> str | None:
    """``cu124`` -> ``12.4``, ``cu118`` -> ``11.8``; None for anything else."""
    match = re.fullmatch(r"cu(\d+)(\d)", local)
    return f"{match[1]}.{match[2]}" if match else None


def bundled_torch(context: Context) -> TorchBuild | None:
    """The bundle's torch, when the manifest tells what it was built for."""
    packages = bundle_packages(context)
    version = packages.get("torch")
    if version is None:
        return None
    local = version.partition("+")[2]
    runtime = _prefixed(packages, r"nvidia-cuda-runtime(-cu\d+)?")
    if local == "cpu":
        cuda = None
    elif local:
        cuda = cuda_of_tag(local)
        if cuda is None:
            return None
    elif runtime:
        cuda = ".".join(runtime[1].split(".")[:2])
    else:
        return None
    nccl = _prefixed(packages, r"nvidia-nccl(-cu\d+)?")
    major = int(nccl[0].rpartition("-cu")[2]) if nccl and "-cu" in nccl[0] else None
    return TorchBuild(version, cuda, "bundle manifest", nccl[1] if nccl else None, major)


def _prefixed(packages: Mapping[str, str], pattern: str) -> tuple[str, str] | None:
    return next(((n, v) for n, v in packages.items() if re.fullmatch(pattern, n)), None)


def installed_torch(context: Context) -> TorchBuild | str:
    """Ask ``context.python`` about its torch; a string says why that did not work."""
    argv = [context.python, "-P", str(TORCH_BUILD)]
    ran = run_command(argv, context.environ, TORCH_TIMEOUT_S)
    if ran.code is None:
        return f"{context.python} did not import torch within {TORCH_TIMEOUT_S:g} s"
    lines = ran.out.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if ran.code == 0 and lines else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        last = ran.text.splitlines()[-1] if ran.text else f"exit {ran.code}"
        return f"{context.python} cannot tell about torch: {last}"
    cuda = str(data["cuda"]) if data.get("cuda") else None
    nccl = str(data["nccl"]) if data.get("nccl") else None
    major = int(cuda.split(".")[0]) if cuda and nccl else None
    arch = tuple(str(a) for a in data.get("arch_list") or ())
    source = f"installed torch ({context.python})"
    return TorchBuild(str(data.get("version")), cuda, source, nccl, major, arch)


def dev_dir(context: Context) -> Path:
    return Path(context.environ.get(DEV_DIR_ENV) or DEV_DIR)


def device_files(context: Context) -> list[Path]:
    """The ``nvidia*`` device files (not directories such as nvidia-caps)."""
    try:
        return sorted(p for p in dev_dir(context).glob("nvidia*") if not p.is_dir())
    except OSError:
        return []


def can_use(path: Path) -> bool:
    """Whether this process may open ``path`` for reading and writing."""
    return os.access(path, os.R_OK | os.W_OK)


def nvidia_smi(context: Context) -> Smi:
    """What nvidia-smi says, asked once per context."""
    return context.facts.get("nvidia-smi", lambda: query_smi(context))


def installed_build(context: Context) -> TorchBuild | str:
    """What ``context.python``'s torch says it was built for, asked once per context."""
    return context.facts.get(("installed-torch", context.python), lambda: installed_torch(context))


def torch_build(context: Context) -> TorchBuild | str:
    """The bundle's torch if the manifest says what it was built for, else the installed one."""
    return bundled_torch(context) or installed_build(context)


def cpu_only(context: Context) -> bool:
    return nvidia_smi(context).path is None and not device_files(context)


def _gpus(context: Context) -> Smi | Result:
    """The listed GPUs, or the skip for checks that need them."""
    smi = nvidia_smi(context)
    if smi.path is None and not device_files(context):
        return skipped("no NVIDIA GPU on this host: nvidia-smi is not on PATH, no /dev/nvidia*")
    if smi.path is None or smi.failure is not None:
        return skipped("nvidia-smi did not list the GPUs (see accel.nvidia-smi)")
    return smi


def _cuda_torch(context: Context) -> TorchBuild | Result:
    """The torch in use if it is a CUDA build, or the skip for checks that need one."""
    torch = torch_build(context)
    if isinstance(torch, str):
        return skipped(f"cannot tell what torch was built for: {torch}")
    if torch.cuda is None:
        return skipped(f"torch {torch.version} is not a CUDA build (see accel.cuda-runtime)")
    return torch


# --- checks ----------------------------------------------------------------------------------


def check_nvidia_smi(context: Context) -> Result:
    """nvidia-smi answers and lists the GPUs; a CPU-only host skips."""
    smi = nvidia_smi(context)
    if smi.failure is not None:
        return smi.failure
    if smi.path is None:
        return _no_smi(context)
    kinds = Counter(g.name for g in smi.gpus)
    names = ", ".join(f"{n}x {name}" for name, n in kinds.items())
    return passed(
        f"{len(smi.gpus)} GPU(s): {names}; driver {smi.driver}, CUDA {smi.cuda or 'unknown'}",
        nvidia_smi=smi.path,
        driver=smi.driver,
        cuda=smi.cuda,
        gpus=[asdict(g) for g in smi.gpus],
    )


def _no_smi(context: Context) -> Result:
    files = device_files(context)
    if files:
        return problem(
            f"NVIDIA device files exist ({', '.join(p.name for p in files)}) "
            "but nvidia-smi is not on PATH",
            "install the NVIDIA driver's utilities (nvidia-utils of the driver's version) "
            "or add their directory to PATH",
            device_files=[str(p) for p in files],
        )
    torch = bundled_torch(context)
    if torch is not None and torch.cuda is not None:
        return warning(
            f"no NVIDIA GPU here, but the bundle's torch {torch.version} is a CUDA "
            f"{torch.cuda} build: everything will run on the CPU",
            f"on a CPU host install the CPU bundle ({CPU_SPEC}); on a GPU host install the "
            "NVIDIA driver so that nvidia-smi is on PATH",
            torch=torch.version,
        )
    return skipped("no NVIDIA GPU: nvidia-smi is not on PATH and there is no /dev/nvidia*")


def _driver_fix(need: str, have: str) -> str:
    branch = DRIVER_FOR_CUDA.get(need)
    driver = f"{branch} or newer" if branch else f"one that supports CUDA {need}"
    return (
        f"install an NVIDIA driver {driver} from the bundle's OS packages, or rebuild the bundle "
        f"with a torch built for CUDA {have} or older ({CUDA_SPEC})"
    )


def _cuda_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2])


def check_cuda_runtime(context: Context) -> Result:
    """The driver supports the CUDA runtime the torch in use was built for."""
    smi = _gpus(context)
    if isinstance(smi, Result):
        return smi
    torch = torch_build(context)
    if isinstance(torch, str):
        return skipped(f"cannot tell what torch was built for: {torch}")
    evidence = {"torch": torch.version, "torch_cuda": torch.cuda, "source": torch.source}
    evidence |= {"driver": smi.driver, "driver_cuda": smi.cuda}
    if torch.cuda is None:
        return warning(
            f"torch {torch.version} ({torch.source}) is not a CUDA build: "
            f"the {len(smi.gpus)} GPU(s) here will not be used",
            f"build the CUDA bundle and install it: offline bundle build --spec {CUDA_SPEC} "
            "--out dist/cuda",
            **evidence,
        )
    if smi.cuda is None:
        return warning(
            "nvidia-smi did not say which CUDA version the driver supports",
            f"run nvidia-smi and compare its 'CUDA Version' with torch's CUDA {torch.cuda}",
            **evidence,
        )
    return _compare_cuda(torch.version, torch.cuda, smi.driver or "?", smi.cuda, evidence)


def _compare_cuda(
    torch: str, torch_cuda: str, driver: str, cuda: str, evidence: dict[str, Any]
) -> Result:
    need, have = _cuda_tuple(torch_cuda), _cuda_tuple(cuda)
    told = f"driver {driver} supports CUDA up to {cuda}; torch {torch} needs {torch_cuda}"
    fix = _driver_fix(torch_cuda, cuda)
    if have[0] < need[0]:
        return problem(f"{told}: CUDA cannot start", fix, **evidence)
    if have < need:
        return warning(
            f"{told}: it runs only through minor-version compatibility "
            "(PTX JIT and newer-driver features fail)",
            fix,
            **evidence,
        )
    return passed(f"driver {driver} (CUDA {cuda}) runs torch {torch}", **evidence)


def supports(arch_list: Sequence[str], compute_cap: str) -> bool:
    """Whether kernels in ``arch_list`` run on a GPU of ``compute_cap`` (``"8.6"``).

    ``sm_XY`` code runs on X.Y and later minors of X; ``compute_XY`` PTX is compiled by the driver
    for X.Y and anything newer.
    """
    major, minor = (int(p) for p in compute_cap.split(".")[:2])
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)[a-z]?", arch)
        if match is None:
            continue
        built = (int(match[2]), int(match[3]))
        if match[1] == "sm" and built[0] == major and built[1] <= minor:
            return True
        if match[1] == "compute" and built <= (major, minor):
            return True
    return False


def _sm(compute_cap: str) -> str:
    return "sm_" + compute_cap.replace(".", "")


def check_compute_capability(context: Context) -> Result:
    """torch has kernels for every GPU's compute capability."""
    smi = _gpus(context)
    if isinstance(smi, Result):
        return smi
    torch = _cuda_torch(context)
    if isinstance(torch, Result):
        return torch
    if all(g.compute_cap is None for g in smi.gpus):
        return skipped(f"nvidia-smi of driver {smi.driver} does not report compute capability")
    installed = installed_build(context)
    if isinstance(installed, str) or not installed.arch_list:
        reason = installed if isinstance(installed, str) else f"torch {installed.version} has none"
        return warning(
            f"cannot read torch's CUDA architectures: {reason}",
            f"install the bundle's CUDA torch ({CUDA_SPEC}) into the environment of "
            f"{context.python}, then: {context.python} -c 'import torch; "
            "print(torch.cuda.get_arch_list())'",
        )
    return _compare_arch(smi.gpus, installed)


def _compare_arch(gpus: Sequence[Gpu], torch: TorchBuild) -> Result:
    caps = {str(g.index): g.compute_cap for g in gpus}
    evidence = {"arch_list": list(torch.arch_list), "compute_caps": caps}
    missing = [g for g in gpus if g.compute_cap and not supports(torch.arch_list, g.compute_cap)]
    if missing:
        gpus_text = ", ".join(f"{g.label} {_sm(g.compute_cap or '')}" for g in missing)
        return problem(
            f"torch {torch.version} has no kernels for {gpus_text}; "
            f"it has {' '.join(torch.arch_list)}",
            f"rebuild the bundle with a torch built for these GPUs (a newer CUDA line in "
            f"{CUDA_SPEC}) and install it",
            **evidence,
        )
    shown = sorted({_sm(c) for c in caps.values() if c})
    return passed(f"torch {torch.version} has kernels for {', '.join(shown)}", **evidence)


def check_ecc(context: Context) -> Result:
    """No GPU has uncorrected ECC errors since the driver loaded."""
    smi = _gpus(context)
    if isinstance(smi, Result):
        return smi
    counts = {str(g.index): g.ecc_uncorrected for g in smi.gpus}
    bad = [g for g in smi.gpus if g.ecc_uncorrected]
    if bad:
        which = ",".join(str(g.index) for g in bad)
        return problem(
            "; ".join(f"{g.label} has {g.ecc_uncorrected} uncorrected ECC error(s)" for g in bad),
            f"take GPU {which} out of service, inspect it (nvidia-smi -q -d ECC,ROW_REMAPPER "
            f"-i {which}), reset it (sudo nvidia-smi -r -i {which}) or reboot; "
            "replace it if errors come back",
            uncorrected=counts,
        )
    if all(c is None for c in counts.values()):
        return skipped("these GPUs do not report ECC (unsupported or disabled)")
    return passed("no uncorrected ECC errors", uncorrected=counts)


def check_temperature(context: Context) -> Result:
    """No GPU is running hotter than HOT_C."""
    smi = _gpus(context)
    if isinstance(smi, Result):
        return smi
    temps = {str(g.index): g.temperature_c for g in smi.gpus}
    hot = [g for g in smi.gpus if (g.temperature_c or 0) > HOT_C]
    if hot:
        return problem(
            "; ".join(f"{g.label} is at {g.temperature_c} C" for g in hot)
            + f" (above {HOT_C} C): it will throttle",
            "check the cooling (fans, airflow, inlet temperature) and look for thermal "
            "slowdown: nvidia-smi -q -d TEMPERATURE,PERFORMANCE",
            temperature_c=temps,
        )
    if all(t is None for t in temps.values()):
        return skipped("these GPUs do not report their temperature")
    return passed(f"hottest GPU at {max(t or 0 for t in temps.values())} C", temperature_c=temps)


def check_persistence(context: Context) -> Result:
    """Persistence mode is on, so each CUDA start does not re-initialise the GPUs."""
    smi = _gpus(context)
    if isinstance(smi, Result):
        return smi
    modes = {str(g.index): g.persistence for g in smi.gpus}
    off = [str(g.index) for g in smi.gpus if g.persistence == "Disabled"]
    if off:
        return problem(
            f"persistence mode is off on GPU {', '.join(off)}: every CUDA start pays the "
            "driver's initialisation",
            "sudo nvidia-smi -pm 1 (and enable the nvidia-persistenced service so it survives "
            "a reboot)",
            persistence=modes,
        )
    if all(m is None for m in modes.values()):
        return skipped("these GPUs do not report persistence mode")
    return passed("persistence mode is on", persistence=modes)


def check_nccl(context: Context) -> Result:
    """NCCL, which multi-GPU training talks through, is there and fits the driver."""
    smi = _gpus(context)
    if isinstance(smi, Result):
        return smi
    torch = _cuda_torch(context)
    if isinstance(torch, Result):
        return torch
    if torch.nccl is None:
        installed = installed_build(context)
        torch = installed if isinstance(installed, TorchBuild) else torch
    if torch.nccl is None:
        return problem(
            "neither the bundle nor the installed torch has NCCL: multi-GPU training cannot "
            "communicate",
            f"rebuild the CUDA bundle ({CUDA_SPEC}); torch's CUDA wheels bring nvidia-nccl-cu12",
        )
    evidence = {"nccl": torch.nccl, "source": torch.source, "driver_cuda": smi.cuda}
    driver_major = _cuda_tuple(smi.cuda)[0] if smi.cuda else None
    if torch.nccl_cuda_major and driver_major and driver_major < torch.nccl_cuda_major:
        return problem(
            f"NCCL {torch.nccl} is built for CUDA {torch.nccl_cuda_major}; "
            f"driver {smi.driver} supports CUDA up to {smi.cuda}",
            _driver_fix(f"{torch.nccl_cuda_major}.0", smi.cuda or ""),
            **evidence,
        )
    return passed(f"NCCL {torch.nccl} ({torch.source})", **evidence)


def check_nouveau(context: Context) -> Result:
    """The open-source nouveau driver does not hold the GPUs."""
    path = Path(context.environ.get(PROC_MODULES_ENV) or PROC_MODULES)
    try:
        loaded = {line.split()[0] for line in path.read_text().splitlines() if line.strip()}
    except OSError as exc:
        return skipped(f"cannot read {path} ({exc.strerror or exc}): loaded modules unknown")
    nvidia = sorted(m for m in loaded if m.startswith("nvidia"))
    if "nouveau" in loaded:
        return _nouveau_loaded(context, nvidia)
    if cpu_only(context):
        return skipped("no NVIDIA GPU on this host (and nouveau is not loaded)")
    shown = ", ".join(nvidia) or "none listed"
    return passed(f"nouveau is not loaded; NVIDIA modules: {shown}", nvidia_modules=nvidia)


def _nouveau_loaded(context: Context, nvidia: list[str]) -> Result:
    message = "nouveau is loaded: the NVIDIA driver, and CUDA, cannot use the GPUs it holds"
    fix = (
        "blacklist it: printf 'blacklist nouveau\\noptions nouveau modeset=0\\n' | sudo tee "
        "/etc/modprobe.d/blacklist-nouveau.conf && sudo update-initramfs -u; reboot, then "
        "install the NVIDIA driver"
    )
    torch = bundled_torch(context)
    if cpu_only(context) and (torch is None or torch.cuda is None):
        return warning(message, fix, nvidia_modules=nvidia)
    return problem(message, fix, nvidia_modules=nvidia)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _group(path: Path) -> str:
    try:
        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        return "root"


def check_device_files(context: Context) -> Result:
    """/dev/nvidiactl, /dev/nvidia-uvm and one /dev/nvidiaN per GPU exist and are usable."""
    smi = nvidia_smi(context)
    files = device_files(context)
    if smi.path is None and not files:
        return skipped("no NVIDIA GPU on this host: no /dev/nvidia*, no nvidia-smi")
    names = sorted(p.name for p in files)
    missing = _missing_nodes(context, names, len(smi.gpus))
    if missing:
        return problem(
            f"missing NVIDIA device files in {dev_dir(context)}: {', '.join(missing)}",
            "create them: sudo nvidia-modprobe -u -c=0 (or sudo modprobe nvidia-uvm); in a "
            "container, pass the GPUs in (--gpus all or CDI devices)",
            present=names,
        )
    locked = [p for p in files if not can_use(p)]
    if locked:
        return _locked(locked)
    return passed(f"{len(files)} NVIDIA device files usable by {_user()}", files=names)


def _missing_nodes(context: Context, names: list[str], gpus: int) -> list[str]:
    missing = [n for n in ("nvidiactl", "nvidia-uvm") if n not in names]
    if missing == ["nvidia-uvm"] and shutil.which(
        "nvidia-modprobe", path=context.environ.get("PATH", "")
    ):
        missing = []  # CUDA has nvidia-modprobe create it on first use
    nodes = [n for n in names if re.fullmatch(r"nvidia\d+", n)]
    if len(nodes) < gpus:
        missing.append(f"nvidia0..nvidia{gpus - 1} ({len(nodes)} of {gpus} there)")
    return missing


def _locked(paths: list[Path]) -> Result:
    user = _user()
    groups = sorted({_group(p) for p in paths} - {"root"})
    if groups:
        fix = f"sudo usermod -aG {','.join(groups)} {user}, then log in again"
    else:
        fix = (
            "sudo chmod 0666 /dev/nvidia*; to keep it, add 'options nvidia "
            "NVreg_DeviceFileMode=0666' to /etc/modprobe.d/nvidia.conf and reload the driver"
        )
    return problem(
        f"{user} cannot read and write {', '.join(str(p) for p in paths)}",
        fix,
        files=[str(p) for p in paths],
    )


_CHECKS: tuple[tuple[str, str, Callable[[Context], Result], Severity], ...] = (
    ("accel.nvidia-smi", "nvidia-smi answers and lists the GPUs", check_nvidia_smi, "critical"),
    ("accel.cuda-runtime", "the driver runs torch's CUDA", check_cuda_runtime, "critical"),
    (
        "accel.compute-capability",
        "torch has kernels for every GPU",
        check_compute_capability,
        "critical",
    ),
    ("accel.ecc", "no uncorrected ECC errors", check_ecc, "critical"),
    ("accel.temperature", "GPUs are not running hot", check_temperature, "warning"),
    ("accel.persistence", "GPU persistence mode is on", check_persistence, "warning"),
    ("accel.nccl", "NCCL for multi-GPU training", check_nccl, "warning"),
    ("accel.nouveau", "nouveau does not hold the GPUs", check_nouveau, "critical"),
    ("accel.device-files", "/dev/nvidia* exist and are usable", check_device_files, "critical"),
)


def checks(context: Context) -> list[Check]:
    """The accelerators group; its checks share one nvidia-smi run and one torch probe."""
    timeout = 2 * SMI_TIMEOUT_S + TORCH_TIMEOUT_S + 5
    return [Check(id_, GROUP, title, run, sev, timeout) for id_, title, run, sev in _CHECKS]
