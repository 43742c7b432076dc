"""The frameworks group: real probes of this venv, and fake broken, hanging and noisy packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from offline.doctor.checks import frameworks as fw
from offline.doctor.context import Context
from offline.doctor.model import Finding
from offline.doctor.registry import select
from offline.doctor.runner import run_checks

LIBTORCH_ERROR = "libtorch_cpu.so: cannot open shared object file"


def fake_site(root: Path, packages: dict[str, str]) -> Path:
    """A directory with ``<name>/__init__.py`` per entry, for PYTHONPATH."""
    for name, source in packages.items():
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(source)
    return root


def with_path(site: Path) -> Context:
    return Context.create(environ={**os.environ, "PYTHONPATH": str(site)})


def with_manifest(tmp_path: Path, names: list[str], platforms: list[str] | None = None) -> Context:
    bundle = tmp_path / "bundle"
    bundle.mkdir(parents=True)
    manifest = {
        "target": {"python": "3.11", "platforms": platforms or ["manylinux_2_28_x86_64"]},
        "envs": [{"name": "toolkit", "packages": [{"name": n, "version": "1"} for n in names]}],
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return Context.create(bundle, environ=dict(os.environ))


def framework(name: str) -> fw.Framework:
    return next(f for f in fw.FRAMEWORKS if f.name == name)


def run(context: Context, *ids: str) -> dict[str, Finding]:
    chosen = select(fw.checks(context), list(ids), [])
    return {f.id: f for f in run_checks(chosen, context)}


def run_one(item: fw.Framework, context: Context) -> Finding:
    return run_checks([fw.check_for(item, context)], context)[0]


@pytest.mark.slow
def test_this_venv_passes_torch_transformers_serve_and_dvc() -> None:
    found = run(
        Context.create(), "fw.torch", "fw.transformers", "fw.fastapi", "fw.uvicorn", "fw.dvc"
    )
    assert {i: f.status for i, f in found.items()} == dict.fromkeys(found, "pass")
    assert len(found) == 5
    torch = found["fw.torch"].evidence
    assert torch["version"].startswith("2.13.0")
    assert torch["bf16_cpu"] is True
    assert found["fw.transformers"].evidence["offline_mode"] is True
    assert found["fw.dvc"].evidence["version"]


def test_a_broken_torch_fails_with_its_error_and_a_fix(tmp_path: Path) -> None:
    site = fake_site(tmp_path, {"torch": f"raise ImportError({LIBTORCH_ERROR!r})\n"})
    finding = run(with_path(site), "fw.torch")["fw.torch"]
    assert finding.status == "fail"
    assert finding.severity == "critical"
    assert f"ImportError: {LIBTORCH_ERROR}" in finding.message
    assert finding.fix is not None and "scripts/install-offline.sh" in finding.fix
    assert str(site / "torch" / "__init__.py") in finding.evidence["where"]


def test_the_doctor_process_never_imports_the_frameworks(tmp_path: Path) -> None:
    site = fake_site(tmp_path, {"torch": f"raise ImportError({LIBTORCH_ERROR!r})\n"})
    program = (
        "import json, os, sys\n"
        "from offline.doctor.checks import frameworks as fw\n"
        "from offline.doctor.context import Context\n"
        "from offline.doctor.registry import select\n"
        "from offline.doctor.runner import run_checks\n"
        "ctx = Context.create(environ={**os.environ, 'PYTHONPATH': sys.argv[1]})\n"
        "found = run_checks(select(fw.checks(ctx), ['fw.torch', 'fw.dvc'], []), ctx)\n"
        "heavy = [m for m in ('torch', 'deepspeed', 'tvm', 'transformers') if m in sys.modules]\n"
        "print(json.dumps({'status': {f.id: f.status for f in found}, 'imported': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(site)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"status": {"fw.dvc": "pass", "fw.torch": "fail"}, "imported": []}


def logs(log: Path, tag: str, *lines: str) -> str:
    """Source that appends ``tag pid`` to ``log`` when imported, then runs ``lines``."""
    record = f"open({str(log)!r}, 'a').write(f'{tag} {{os.getpid()}}\\n')"
    return "\n".join(["import os", record, *lines]) + "\n"


def logged(log: Path) -> list[tuple[str, int]]:
    return [(tag, int(pid)) for tag, pid in (line.split() for line in log.read_text().splitlines())]


def after_torch(name: str, **changes: Any) -> fw.Framework:
    """A framework probed like deepspeed and tvm are: forked from the torch host."""
    item = fw.Framework(name, name, "train", 15.0, fw.judge_import, fw._IMPORT_BODY)
    return replace(item, after_torch=True, **changes)


def run_hosted(context: Context, *items: fw.Framework) -> dict[str, Finding]:
    host = fw.torch_host(context)
    found = run_checks([fw.check_for(item, context, host) for item in items], context)
    return {f.id: f for f in found}


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_probes_after_torch_share_one_torch_import_in_processes_of_their_own(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    site = fake_site(
        tmp_path / "site",
        {
            "torch": logs(log, "torch"),
            "ds_like": logs(log, "ds_like", "import torch"),
            "tvm_like": logs(log, "tvm_like", "import torch"),
        },
    )
    items = [after_torch("torch"), after_torch("ds_like"), after_torch("tvm_like")]
    found = run_hosted(with_path(site), *items)
    assert {i: f.status for i, f in found.items()} == dict.fromkeys(found, "pass")
    assert len(logged(log)) == 3  # torch imported once, in the host
    pids = dict(logged(log))
    assert len({pids["torch"], pids["ds_like"], pids["tvm_like"]}) == 3
    assert gone(pids["torch"]), "the host exits once it is idle"


def test_the_host_gives_framework_env_defaults_and_the_context_wins(tmp_path: Path) -> None:
    both = "import os\n__version__ = os.environ['DOCTOR_T1'] + os.environ['DOCTOR_T2']\n"
    site = fake_site(tmp_path, {"torch": "", "env_like": both})
    context = Context.create(environ={**os.environ, "PYTHONPATH": str(site), "DOCTOR_T2": "-env"})
    item = after_torch("env_like", env={"DOCTOR_T1": "default", "DOCTOR_T2": "-default"})
    finding = run_hosted(context, item)["fw.env_like"]
    assert finding.evidence["version"] == "default-env"


def test_without_torch_in_the_host_each_probe_runs_alone_and_says_why(tmp_path: Path) -> None:
    site = fake_site(
        tmp_path, {"torch": f"raise ImportError({LIBTORCH_ERROR!r})\n", "ds_like": "import torch\n"}
    )
    found = run_hosted(with_path(site), after_torch("torch"), after_torch("ds_like"))
    assert found["fw.torch"].message == f"import torch failed: ImportError: {LIBTORCH_ERROR}"
    assert found["fw.ds_like"].message == f"import ds_like failed: ImportError: {LIBTORCH_ERROR}"
    assert str(site / "torch" / "__init__.py") in found["fw.ds_like"].evidence["where"]


def test_a_probe_that_crashes_in_the_host_costs_that_check_only(tmp_path: Path) -> None:
    crash = "import os, sys, torch\nsys.stderr.write('Illegal instruction\\n')\nos._exit(132)\n"
    site = fake_site(tmp_path, {"torch": "", "crashy": crash, "fine": "import torch\n"})
    found = run_hosted(
        with_path(site), after_torch("torch"), after_torch("crashy"), after_torch("fine")
    )
    assert found["fw.crashy"].status == "fail"
    assert found["fw.crashy"].message == (
        "the crashy probe exited with code 132 and no result: Illegal instruction"
    )
    assert found["fw.torch"].status == found["fw.fine"].status == "pass"


@pytest.mark.slow
def test_a_probe_that_hangs_in_the_host_is_killed_alone(tmp_path: Path) -> None:
    log = tmp_path / "log"
    site = fake_site(
        tmp_path / "site",
        {"torch": logs(log, "torch"), "hangs": logs(log, "hangs", "import time", "time.sleep(60)")},
    )
    started = time.monotonic()
    found = run_hosted(with_path(site), after_torch("hangs", timeout=1.5), after_torch("torch"))
    assert time.monotonic() - started < 5
    assert found["fw.hangs"].status == "fail"
    assert found["fw.hangs"].message == "importing hangs did not finish within 1.5 s"
    assert found["fw.torch"].status == "pass"
    pids = dict(logged(log))
    assert gone(pids["hangs"], within=1.0)
    assert gone(pids["torch"]), "the host exits once it is idle"


@pytest.mark.slow
def test_a_torch_import_that_hangs_in_the_host_fails_each_probe_at_its_timeout(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    hang = logs(log, "torch", "import time", "time.sleep(60)")
    site = fake_site(tmp_path / "site", {"torch": hang, "ds_like": "import torch\n"})
    started = time.monotonic()
    found = run_hosted(
        with_path(site), after_torch("torch", timeout=1.5), after_torch("ds_like", timeout=2.5)
    )
    assert time.monotonic() - started < 6
    assert found["fw.torch"].message == "importing torch did not finish within 1.5 s"
    assert found["fw.ds_like"].message == "importing ds_like did not finish within 2.5 s"
    # The host, then the ds_like probe that ran alone in the time it had left.
    assert [tag for tag, _ in logged(log)] == ["torch", "torch"]
    assert all(gone(pid, within=1.0) for _, pid in logged(log))


def test_only_the_selected_framework_checks_are_probed(tmp_path: Path) -> None:
    log = tmp_path / "log"
    site = fake_site(
        tmp_path / "site",
        {"torch": logs(log, "torch"), "deepspeed": logs(log, "deepspeed"), "tvm": logs(log, "tvm")},
    )
    run(with_path(site), "fw.torch")
    assert [tag for tag, _ in logged(log)] == ["torch"]


@pytest.mark.slow
def test_a_hanging_import_fails_at_the_probe_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    hang = f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    site = fake_site(tmp_path / "site", {"torch": hang})
    started = time.monotonic()
    finding = run_one(replace(framework("torch"), timeout=1.5), with_path(site))
    assert time.monotonic() - started < 5
    assert finding.status == "fail"
    assert finding.message == "importing torch did not finish within 1.5 s"
    assert finding.fix is not None and "-X importtime" in finding.fix
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)


def test_what_a_package_prints_does_not_spoil_the_record(tmp_path: Path) -> None:
    noisy = "print('{\"version\": \"fake\"}')\nprint('@@ not a record')\n__version__ = '9.9'\n"
    site = fake_site(tmp_path, {"dvc": noisy})
    finding = run(with_path(site), "fw.dvc")["fw.dvc"]
    assert finding.status == "pass"
    assert finding.evidence["version"] == "9.9"


def test_a_probe_that_crashes_fails_with_its_exit_code(tmp_path: Path) -> None:
    crash = "import os, sys\nsys.stderr.write('Illegal instruction\\n')\nos._exit(132)\n"
    site = fake_site(tmp_path, {"dvc": crash})
    finding = run(with_path(site), "fw.dvc")["fw.dvc"]
    assert finding.status == "fail"
    assert (
        finding.message == "the dvc probe exited with code 132 and no result: Illegal instruction"
    )
    assert finding.fix is not None and "install-offline.sh" in finding.fix


def test_an_interpreter_that_cannot_run_fails_every_probe(tmp_path: Path) -> None:
    finding = run_one(framework("dvc"), Context(python=str(tmp_path / "python")))
    assert finding.status == "fail"
    assert finding.message.startswith(f"cannot run {tmp_path / 'python'}: ")
    assert finding.fix


def test_a_missing_package_fails_when_the_bundle_carries_it_and_warns_otherwise(
    tmp_path: Path,
) -> None:
    absent = fw.Framework(
        "deepseek_doctor_absent", "deepseek-doctor-absent", "serve", 15.0, fw.judge_import,
        fw._IMPORT_BODY,
    )  # fmt: skip
    carried = run_one(absent, with_manifest(tmp_path / "a", ["Deepseek_Doctor.Absent"]))
    assert (carried.status, carried.severity) == ("fail", "critical")
    assert carried.fix is not None and "install-offline.sh" in carried.fix
    optional = run_one(absent, with_manifest(tmp_path / "b", ["torch"]))
    assert (optional.status, optional.severity) == ("warn", "warning")
    assert optional.fix is not None and "deepseek-offline[serve]" in optional.fix


def test_torch_is_critical_without_a_manifest_and_the_rest_optional() -> None:
    severities = {c.id: c.severity for c in fw.checks(Context.create(environ={}))}
    assert severities["fw.torch"] == "critical"
    assert severities["fw.deepspeed"] == severities["fw.tvm"] == "warning"


def test_each_check_outlives_its_probe() -> None:
    for check in fw.checks(Context()):
        if check.id != "fw.tvm-aarch64":
            assert check.timeout > framework(check.id.removeprefix("fw.")).timeout


def test_the_aarch64_cross_compiler_is_checked_only_for_aarch64_bundles(tmp_path: Path) -> None:
    check = next(c for c in fw.checks(Context()) if c.id == "fw.tvm-aarch64")
    assert check.run(Context()).status == "skip"
    edge = with_manifest(tmp_path, ["apache-tvm"], ["manylinux_2_28_aarch64"])
    bare = replace(edge, environ={"PATH": str(tmp_path)})
    missing = check.run(bare)
    assert missing.status == "problem" and "gcc-aarch64-linux-gnu" in (missing.fix or "")
    gcc = tmp_path / "aarch64-linux-gnu-gcc"
    gcc.write_text("#!/bin/sh\n")
    gcc.chmod(0o755)
    assert check.run(bare).status == "pass"


@pytest.mark.parametrize(
    ("stdout", "record"),
    [
        (f'noise\n{fw.MARKER}{{"a": 1}}\nmore noise\n', {"a": 1}),
        (f"{fw.MARKER}[1, 2]\n", None),
        (f"{fw.MARKER}{{truncated\n", None),
        ('{"a": 1}\n', None),
        ("", None),
    ],
)
def test_parse_takes_only_a_marked_json_object(stdout: str, record: dict[str, int] | None) -> None:
    assert fw.parse(stdout) == record


def test_bf16_that_does_not_work_is_a_warning_with_a_fix() -> None:
    data = {"version": "2.13.0", "cuda_available": False, "bf16_cpu": "RuntimeError: no bf16"}
    result = fw.judge_torch(framework("torch"), Context(), data)
    assert result.status == "warn"
    assert "a bf16 matmul on cpu fails: RuntimeError: no bf16" in result.message
    assert result.fix is not None and "bf16.enabled" in result.fix


def test_jit_ops_without_ninja_on_path_point_at_the_env(tmp_path: Path) -> None:
    ops = {"cpu_adam": {"prebuilt": False, "compatible": True}}
    data = {"version": "0.19", "ops": ops, "cxx": "/usr/bin/c++", "ninja": None,
            "ninja_beside_python": "/opt/x/envs/toolkit/bin/ninja"}  # fmt: skip
    result = fw.judge_deepspeed(framework("deepspeed"), Context(), data)
    assert result.status == "warn"
    assert "ninja is not on PATH" in result.message
    assert result.fix == "put /opt/x/envs/toolkit/bin on PATH (activate the env)"


def test_a_tvm_built_without_llvm_is_a_problem_with_a_fix() -> None:
    data = {"version": "0.27", "target": '{"kind":"llvm"}', "llvm_enabled": False}
    result = fw.judge_tvm(framework("tvm"), Context(), data)
    assert result.status == "problem"
    assert "built without LLVM" in result.message
    assert result.fix is not None and "built with LLVM" in result.fix


@pytest.mark.integration
def test_deepspeed_and_tvm_probes_pass_in_this_venv() -> None:
    # As in an activated env: its bin/ (where pip put ninja) comes first on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    found = run(Context.create(environ={**os.environ, "PATH": path}), "fw.deepspeed", "fw.tvm")
    assert {i: f.status for i, f in found.items()} == {"fw.deepspeed": "pass", "fw.tvm": "pass"}
    ds = found["fw.deepspeed"].evidence
    assert ds["accelerator"] == "cpu"
    assert "cpu_adam" in ds["ops"]
    assert ds["cxx"]
    assert ds["ninja"] or ds["ninja_beside_python"]
    assert "llvm" in found["fw.tvm"].evidence["target"]
    assert found["fw.tvm"].evidence["llvm_enabled"] is True
