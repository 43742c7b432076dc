"""The accelerators group against fake nvidia-smi scripts, fake /dev and /proc/modules."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from offline.doctor.checks import accelerators as acc
from offline.doctor.context import Context
from offline.doctor.model import Finding
from offline.doctor.runner import run_checks

FAKES = Path(__file__).parent / "fakes" / "nvidia"
ARCH_CU124 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
INSTALLED_CU124 = {
    "version": "2.5.1+cu124",
    "cuda": "12.4",
    "arch_list": ARCH_CU124,
    "nccl": "2.21.5",
}
NVIDIA_MODULES = "nvidia_uvm 1 0 - Live 0x0\nnvidia_drm 1 0 - Live 0x0\nnvidia 1 0 - Live 0x0\n"
NOUVEAU_MODULES = "nouveau 2334720 0 - Live 0x0\nttm 1 0 - Live 0x0\n"


def host(
    tmp_path: Path,
    scenario: str | None,
    *,
    torch: str | None = "2.5.1+cu124",
    packages: dict[str, str] | None = None,
    gpus: int = 1,
    dev: list[str] | None = None,
    modules: str | None = NVIDIA_MODULES,
    installed: dict[str, Any] | None = None,
) -> Context:
    """A context for a host with fake nvidia-smi ``scenario`` (None: no nvidia-smi at all)."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    pkgs = ({"torch": torch} if torch else {}) | (packages or {})
    if torch and "+cu" in torch:
        pkgs.setdefault("nvidia-nccl-cu12", "2.21.5")
    manifest = {
        "target": {"python": "3.11", "platforms": ["manylinux_2_28_x86_64"]},
        "envs": [{"name": "toolkit", "packages": _packages(pkgs)}],
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    devdir = tmp_path / "dev"
    devdir.mkdir()
    if dev is None:
        dev = [] if scenario is None else ["nvidiactl", "nvidia-uvm", *_nodes(gpus)]
    for name in dev:
        (devdir / name).touch()
    (devdir / "nvidia-caps").mkdir()
    (tmp_path / "empty-bin").mkdir()
    path = f"{FAKES / scenario}:/usr/bin:/bin" if scenario else str(tmp_path / "empty-bin")
    environ = {"PATH": path, acc.DEV_DIR_ENV: str(devdir)}
    if modules is not None:
        (tmp_path / "modules").write_text(modules)
    environ[acc.PROC_MODULES_ENV] = str(tmp_path / "modules")
    if installed is not None:
        environ["FAKE_TORCH_JSON"] = json.dumps(installed)
    return Context(bundle=bundle, environ=environ, python=str(FAKES / "python"))


def _packages(versions: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"name": n, "version": v, "file": f"wheels/{n}-{v}-py3-none-any.whl"}
        for n, v in versions.items()
    ]


def _nodes(gpus: int) -> list[str]:
    return [f"nvidia{i}" for i in range(gpus)]


def run(context: Context) -> dict[str, Finding]:
    findings = run_checks(acc.checks(context), context)
    for finding in findings:
        if finding.status in ("warn", "fail", "error"):
            assert finding.fix, f"{finding.id} ({finding.status}) has no fix"
        json.dumps(finding.to_json())
    return {f.id: f for f in findings}


def statuses(found: dict[str, Finding]) -> dict[str, str]:
    return {i: f.status for i, f in found.items()}


def test_group_has_its_checks() -> None:
    ids = [c.id for c in acc.checks(Context())]
    assert ids == [
        "accel.nvidia-smi",
        "accel.cuda-runtime",
        "accel.compute-capability",
        "accel.ecc",
        "accel.temperature",
        "accel.persistence",
        "accel.nccl",
        "accel.nouveau",
        "accel.device-files",
    ]
    assert all(c.group == "accelerators" for c in acc.checks(Context()))


def test_a100_on_driver_550_runs_a_cu124_torch(tmp_path: Path) -> None:
    found = run(host(tmp_path, "a100-driver550", installed=INSTALLED_CU124))
    assert set(statuses(found).values()) == {"pass"}, statuses(found)
    smi = found["accel.nvidia-smi"]
    assert "NVIDIA A100-SXM4-80GB" in smi.message
    assert smi.evidence["driver"] == "550.54.15"
    assert smi.evidence["cuda"] == "12.4"
    assert smi.evidence["gpus"][0]["compute_cap"] == "8.0"
    assert smi.evidence["gpus"][0]["memory_total_mib"] == 81920
    assert found["accel.cuda-runtime"].evidence["source"] == "bundle manifest"
    assert "sm_80" in found["accel.compute-capability"].message
    assert "2.21.5" in found["accel.nccl"].message


@pytest.mark.parametrize(
    ("torch", "status"),
    [("2.5.1+cu121", "pass"), ("2.5.1+cu124", "warn"), ("2.5.1+cu118", "pass")],
)
def test_eight_h100_on_driver_535(tmp_path: Path, torch: str, status: str) -> None:
    installed = INSTALLED_CU124 | {"version": torch}
    found = run(host(tmp_path, "h100x8-driver535", torch=torch, gpus=8, installed=installed))
    assert found["accel.nvidia-smi"].status == "pass"
    assert "8x NVIDIA H100 80GB HBM3" in found["accel.nvidia-smi"].message
    assert len(found["accel.nvidia-smi"].evidence["gpus"]) == 8
    assert found["accel.cuda-runtime"].status == status
    if status == "warn":
        assert "minor-version compatibility" in found["accel.cuda-runtime"].message
        assert "R550" in (found["accel.cuda-runtime"].fix or "")
    assert found["accel.compute-capability"].status == "pass"
    assert found["accel.device-files"].status == "pass"


def test_driver_470_cannot_run_a_cu124_torch(tmp_path: Path) -> None:
    found = run(host(tmp_path, "v100-driver470", installed=INSTALLED_CU124))
    assert found["accel.nvidia-smi"].status == "pass"
    assert found["accel.nvidia-smi"].evidence["gpus"][0]["compute_cap"] is None
    runtime = found["accel.cuda-runtime"]
    assert runtime.status == "fail"
    assert "supports CUDA up to 11.4" in runtime.message
    assert "needs 12.4" in runtime.message
    assert "R550 or newer" in (runtime.fix or "")
    assert found["accel.compute-capability"].status == "skip"
    assert found["accel.nccl"].status == "warn"
    assert "built for CUDA 12" in found["accel.nccl"].message


def test_a_gpu_newer_than_torch_kernels_fails(tmp_path: Path) -> None:
    found = run(host(tmp_path, "b200-driver570", installed=INSTALLED_CU124))
    assert found["accel.cuda-runtime"].status == "pass"
    arch = found["accel.compute-capability"]
    assert arch.status == "fail"
    assert "GPU 0 (NVIDIA B200) sm_100" in arch.message
    assert "cuda.toml" in (arch.fix or "")


def test_uncorrected_ecc_errors_fail(tmp_path: Path) -> None:
    found = run(host(tmp_path, "ecc-errors", gpus=2, installed=INSTALLED_CU124))
    ecc = found["accel.ecc"]
    assert ecc.status == "fail"
    assert "GPU 1 (NVIDIA A100-SXM4-80GB) has 3 uncorrected ECC error(s)" in ecc.message
    assert "GPU 0" not in ecc.message
    assert "nvidia-smi -r -i 1" in (ecc.fix or "")


def test_a_hot_gpu_warns(tmp_path: Path) -> None:
    found = run(host(tmp_path, "hot-gpu", installed=INSTALLED_CU124))
    hot = found["accel.temperature"]
    assert hot.status == "warn"
    assert "GPU 0 (NVIDIA L40S) is at 91 C" in hot.message
    assert found["accel.ecc"].status == "pass"


def test_persistence_off_warns_and_ecc_not_reported_skips(tmp_path: Path) -> None:
    found = run(host(tmp_path, "persistence-off", installed=INSTALLED_CU124))
    assert found["accel.persistence"].status == "warn"
    assert "nvidia-smi -pm 1" in (found["accel.persistence"].fix or "")
    assert found["accel.ecc"].status == "skip"
    assert found["accel.temperature"].status == "pass"


@pytest.mark.parametrize(
    ("scenario", "expected", "fix"),
    [
        ("no-driver", "cannot talk to the NVIDIA driver", "modprobe nvidia"),
        ("no-devices", "finds no GPU", "lspci"),
        ("version-mismatch", "different versions", "reboot"),
        ("garbage", "cannot read", "reinstall the NVIDIA driver"),
    ],
)
def test_nvidia_smi_errors_fail_with_a_fix(
    tmp_path: Path, scenario: str, expected: str, fix: str
) -> None:
    found = run(host(tmp_path, scenario, installed=INSTALLED_CU124))
    smi = found["accel.nvidia-smi"]
    assert smi.status == "fail"
    assert expected in smi.message
    assert fix in (smi.fix or "")
    for check in ("cuda-runtime", "compute-capability", "ecc", "nccl"):
        assert found[f"accel.{check}"].status == "skip"
        assert "see accel.nvidia-smi" in found[f"accel.{check}"].message


def test_a_hanging_nvidia_smi_fails_within_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acc, "SMI_TIMEOUT_S", 0.5)
    started = time.monotonic()
    found = run(host(tmp_path, "hangs", installed=INSTALLED_CU124))
    assert time.monotonic() - started < 5
    smi = found["accel.nvidia-smi"]
    assert smi.status == "fail"
    assert "did not answer within 0.5 s" in smi.message
    assert "xid" in (smi.fix or "").lower()


def test_cpu_only_host_skips_everything(tmp_path: Path) -> None:
    found = run(host(tmp_path, None, torch="2.13.0+cpu", modules=""))
    assert set(statuses(found).values()) == {"skip"}, statuses(found)
    assert "no NVIDIA GPU" in found["accel.nvidia-smi"].message


def test_cpu_only_host_without_proc_modules_still_skips(tmp_path: Path) -> None:
    found = run(host(tmp_path, None, torch="2.13.0+cpu", modules=None))
    assert set(statuses(found).values()) == {"skip"}, statuses(found)
    assert "cannot read" in found["accel.nouveau"].message


def test_cpu_only_host_with_a_cuda_bundle_warns(tmp_path: Path) -> None:
    found = run(host(tmp_path, None, torch="2.5.1+cu124", modules=""))
    smi = found["accel.nvidia-smi"]
    assert smi.status == "warn"
    assert "CUDA 12.4 build" in smi.message
    assert "bundle/bundle.toml" in (smi.fix or "")
    others = {s for i, s in statuses(found).items() if i != "accel.nvidia-smi"}
    assert others == {"skip"}


def test_cpu_torch_on_a_gpu_host_warns(tmp_path: Path) -> None:
    installed = {"version": "2.13.0+cpu", "cuda": None, "arch_list": [], "nccl": None}
    found = run(host(tmp_path, "a100-driver550", torch="2.13.0+cpu", installed=installed))
    runtime = found["accel.cuda-runtime"]
    assert runtime.status == "warn"
    assert "not a CUDA build" in runtime.message
    assert "bundle/cuda.toml" in (runtime.fix or "")
    assert found["accel.compute-capability"].status == "skip"
    assert found["accel.nccl"].status == "skip"


def test_untagged_torch_takes_its_cuda_from_the_runtime_wheel(tmp_path: Path) -> None:
    packages = {"nvidia-cuda-runtime-cu12": "12.8.90", "nvidia_nccl_cu12": "2.26.2"}
    context = host(
        tmp_path, "a100-driver550", torch="2.13.0", packages=packages, installed=INSTALLED_CU124
    )
    found = run(context)
    runtime = found["accel.cuda-runtime"]
    assert runtime.status == "warn"
    assert runtime.evidence["torch_cuda"] == "12.8"
    assert "R570" in (runtime.fix or "")
    assert "NCCL 2.26.2 (bundle manifest)" in found["accel.nccl"].message


def test_without_torch_in_the_bundle_the_installed_torch_is_asked(tmp_path: Path) -> None:
    installed = INSTALLED_CU124 | {"version": "2.5.1+cu121", "cuda": "12.1"}
    found = run(host(tmp_path, "a100-driver550", torch=None, installed=installed))
    runtime = found["accel.cuda-runtime"]
    assert runtime.status == "pass"
    assert runtime.evidence["source"].startswith("installed torch")
    assert found["accel.nccl"].status == "pass"


def test_without_any_torch_the_torch_checks_skip(tmp_path: Path) -> None:
    found = run(host(tmp_path, "a100-driver550", torch=None))
    assert "No module named 'torch'" in found["accel.cuda-runtime"].message
    assert found["accel.cuda-runtime"].status == "skip"
    assert found["accel.nvidia-smi"].status == "pass"


def test_torch_without_arch_list_warns(tmp_path: Path) -> None:
    found = run(host(tmp_path, "a100-driver550"))
    arch = found["accel.compute-capability"]
    assert arch.status == "warn"
    assert "No module named 'torch'" in arch.message


def test_nouveau_on_a_gpu_host_fails(tmp_path: Path) -> None:
    found = run(host(tmp_path, "no-driver", modules=NOUVEAU_MODULES))
    nouveau = found["accel.nouveau"]
    assert nouveau.status == "fail"
    assert "blacklist nouveau" in (nouveau.fix or "")


def test_nouveau_on_a_cpu_host_only_warns(tmp_path: Path) -> None:
    found = run(host(tmp_path, None, torch="2.13.0+cpu", modules=NOUVEAU_MODULES))
    assert found["accel.nouveau"].status == "warn"


def test_missing_device_files_fail(tmp_path: Path) -> None:
    context = host(tmp_path, "h100x8-driver535", gpus=8, dev=["nvidiactl", *_nodes(4)])
    files = run(context)["accel.device-files"]
    assert files.status == "fail"
    assert "nvidia-uvm" in files.message
    assert "4 of 8 there" in files.message
    assert "nvidia-modprobe" in (files.fix or "")


def test_device_files_the_user_cannot_open_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acc, "can_use", lambda path: path.name != "nvidia0")
    files = run(host(tmp_path, "a100-driver550", installed=INSTALLED_CU124))["accel.device-files"]
    assert files.status == "fail"
    assert "nvidia0" in files.message
    assert "NVreg_DeviceFileMode" in (files.fix or "") or "usermod" in (files.fix or "")


def test_device_files_without_nvidia_smi_fail(tmp_path: Path) -> None:
    found = run(host(tmp_path, None, dev=["nvidiactl", "nvidia0"]))
    smi = found["accel.nvidia-smi"]
    assert smi.status == "fail"
    assert "not on PATH" in smi.message
    assert found["accel.ecc"].status == "skip"


@pytest.mark.parametrize(
    ("arch", "cap", "ok"),
    [
        (ARCH_CU124, "8.0", True),
        (ARCH_CU124, "8.9", True),
        (ARCH_CU124, "10.0", False),
        (["sm_80", "compute_90"], "12.0", True),
        (["sm_90a"], "9.0", True),
        (["sm_86"], "8.0", False),
        (["sm_100", "sm_120"], "12.0", True),
    ],
)
def test_supports(arch: list[str], cap: str, ok: bool) -> None:
    assert acc.supports(arch, cap) is ok


@pytest.mark.parametrize(
    ("tag", "cuda"), [("cu124", "12.4"), ("cu118", "11.8"), ("cu130", "13.0"), ("cpu", None)]
)
def test_cuda_of_tag(tag: str, cuda: str | None) -> None:
    assert acc.cuda_of_tag(tag) == cuda


def test_parse_gpus_reads_not_available_as_none() -> None:
    gpu = acc.parse_gpus("0, RTX, GPU-1, 550.1, 24564, 1, [N/A], [N/A], [Not Supported], 8.9\n")[0]
    assert (gpu.ecc_uncorrected, gpu.temperature_c, gpu.persistence) == (None, None, None)
    with pytest.raises(ValueError):
        acc.parse_gpus("No devices were found\n")
