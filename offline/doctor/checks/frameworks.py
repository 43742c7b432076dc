"""Doctor checks: the frameworks group (ids ``fw.*``).

Each framework is imported in a child process of ``context.python``, never in the doctor, so a
broken or hanging install costs one check and nothing else. The child prints one marked JSON
line on its real stdout; whatever the framework prints goes to stderr.

A missing package is a failure when the bundle's locks carry it (torch also without a
manifest) and a warning otherwise; an import that raises or hangs is always a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from offline.doctor.context import Context
from offline.doctor.model import Check, Result, passed, problem, skipped, warning

MARKER = "@@deepseek-doctor-probe@@ "

# Runs in the checked interpreter; argv: MODULE DIST. Defines emit(), version() and body().
_PRELUDE = f"""\
import importlib, importlib.metadata, importlib.util, json, os, shutil, sys, traceback
_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
MODULE, DIST = sys.argv[1], sys.argv[2]

def emit(**data):
    _out.write({MARKER!r} + json.dumps(data, default=str) + "\\n")
    _out.flush()

def last_line(exc):
    return traceback.format_exception_only(exc)[-1].strip()

def version(module):
    found = getattr(module, "__version__", None)
    if found:
        return str(found)
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
"""

_MAIN = """
try:
    if importlib.util.find_spec(MODULE) is None:
        emit(missing=True)
    else:
        body()
except BaseException as exc:
    frames = traceback.extract_tb(exc.__traceback__)
    emit(error=last_line(exc), where=f"{frames[-1].filename}:{frames[-1].lineno}")
"""

_IMPORT_BODY = """
def body():
    emit(version=version(importlib.import_module(MODULE)))
"""

_TORCH_BODY = """
def body():
    import torch

    def bf16(device):
        try:
            a = torch.ones(8, 8, dtype=torch.bfloat16, device=device)
            return bool(((a @ a).float() == 8).all())
        except Exception as exc:
            return last_line(exc)

    cuda = bool(torch.cuda.is_available())
    emit(version=version(torch), cuda_build=torch.version.cuda, cuda_available=cuda,
         devices=torch.cuda.device_count() if cuda else 0,
         bf16_cpu=bf16("cpu"), bf16_cuda=bf16("cuda") if cuda else None)
"""

_DEEPSPEED_BODY = """
def body():
    import deepspeed
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops
    from deepspeed.ops.op_builder.all_ops import ALL_OPS

    def compatible(builder):
        try:
            return bool(builder.is_compatible(verbose=False))
        except Exception:
            return False

    ops = {name: {"prebuilt": bool(installed_ops.get(name)), "compatible": compatible(b)}
           for name, b in sorted(ALL_OPS.items())}
    cxx = (os.environ.get("CXX") or "").split()
    here = os.path.dirname(sys.executable)
    emit(version=version(deepspeed), accelerator=get_accelerator()._name, ops=ops,
         cxx=shutil.which(cxx[0]) if cxx else shutil.which("c++") or shutil.which("g++"),
         ninja=shutil.which("ninja"), ninja_beside_python=shutil.which("ninja", path=here))
"""

_TRANSFORMERS_BODY = """
def body():
    import transformers
    try:
        from transformers.utils.hub import is_offline_mode
    except ImportError:
        from huggingface_hub.constants import is_offline_mode
    emit(version=version(transformers), offline_mode=bool(is_offline_mode()))
"""

_TVM_BODY = """
def body():
    import tvm
    try:
        target, target_error = str(tvm.target.Target("llvm")), None
    except Exception as exc:
        target, target_error = None, last_line(exc)
    emit(version=version(tvm), target=target, target_error=target_error)
"""

# DeepSpeed picks an accelerator by probing devices; without a choice in the environment, cpu.
_DS_ENV = {"DS_ACCELERATOR": "cpu"}
# Telemetry and hub access stay off in every probe, whatever the checked environment says.
_PROBE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1"}

Judge = Callable[["Framework", Context, Mapping[str, Any]], Result]


@dataclass(frozen=True)
class Probe:
    """What one child process left behind: its JSON record, or why there is none."""

    data: Mapping[str, Any] | None
    returncode: int | None  # None: killed at the timeout
    stderr_tail: str
    seconds: float


@dataclass(frozen=True)
class Framework:
    """One framework to probe: ``fw.<name>`` imports module ``name`` (distribution ``dist``)."""

    name: str
    dist: str
    extra: str  # the deepseek-offline extra that brings it
    timeout: float
    judge: Judge
    body: str
    env: Mapping[str, str] = field(default_factory=dict)  # defaults; context.environ wins
    core: bool = False  # expected even without a bundle manifest


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_packages(context: Context) -> set[str] | None:
    """Canonical names of the packages in the bundle's locks; None without a manifest."""
    if context.manifest is None:
        return None
    envs = context.manifest.get("envs")
    return {
        canonical(pkg["name"])
        for env in (envs if isinstance(envs, list) else [])
        if isinstance(env, dict) and isinstance(env.get("packages"), list)
        for pkg in env["packages"]
        if isinstance(pkg, dict) and isinstance(pkg.get("name"), str)
    }


def expected(framework: Framework, context: Context) -> bool:
    locked = locked_packages(context)
    return framework.core if locked is None else canonical(framework.dist) in locked


def reinstall_fix(context: Context) -> str:
    bundle = context.bundle or "PREFIX/bundle"
    pubkey = context.pubkey or "TRUSTED.pub.pem"
    return f"reinstall from the bundle: scripts/install-offline.sh {bundle} --pubkey {pubkey}"


def script(body: str) -> str:
    """The program a probe runs: prelude, the framework's ``body()``, the guarded call."""
    return _PRELUDE + body + _MAIN


def parse(stdout: str) -> Mapping[str, Any] | None:
    """The last marked JSON object in ``stdout``; None when there is none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                data = json.loads(line[len(MARKER) :])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_probe(python: str, argv: list[str], env: Mapping[str, str], timeout: float) -> Probe:
    """Run ``python -P -c ...argv`` in its own session; kill the whole session at ``timeout``."""
    started = time.monotonic()
    child = subprocess.Popen(
        [python, "-P", "-c", *argv],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=timeout)
        code: int | None = child.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        code = None
    return Probe(parse(out), code, _tail(err), time.monotonic() - started)


def probe_framework(framework: Framework, context: Context) -> Probe:
    env = {**framework.env, **context.environ, **_PROBE_ENV}
    argv = [script(framework.body), framework.name, framework.dist]
    return run_probe(context.python, argv, env, framework.timeout)


def _no_record(framework: Framework, context: Context, probe: Probe) -> Result:
    evidence = {"python": context.python, "seconds": round(probe.seconds, 2)}
    if probe.returncode is None:
        return Result(
            "fail",
            f"importing {framework.name} did not finish within {framework.timeout:g} s",
            evidence | {"timeout_s": framework.timeout},
            f"see where it hangs: {context.python} -X importtime -c 'import {framework.name}'"
            f"; then {reinstall_fix(context)}",
        )
    said = f": {probe.stderr_tail}" if probe.stderr_tail else ""
    return Result(
        "fail",
        f"the {framework.name} probe exited with code {probe.returncode} and no result{said}",
        evidence | {"returncode": probe.returncode},
        reinstall_fix(context),
    )


def _unrunnable(context: Context, exc: OSError) -> Result:
    return Result(
        "fail",
        f"cannot run {context.python}: {exc}",
        {"python": context.python},
        "run the doctor from the env it checks: PREFIX/envs/toolkit/bin/deepseek-doctor",
    )


def _missing(framework: Framework, context: Context) -> Result:
    if expected(framework, context):
        return problem(
            f"{framework.dist} is not installed for {context.python}",
            reinstall_fix(context),
            python=context.python,
            in_bundle=True,
        )
    return problem(
        f"{framework.dist} is not installed (the bundle does not carry it)",
        f"add the deepseek-offline[{framework.extra}] extra to a bundle env, rebuild with "
        "`offline bundle build --spec SPEC --out DIR --key KEY`, carry it over, and "
        + reinstall_fix(context),
        python=context.python,
        in_bundle=False,
    )


def _broken(framework: Framework, context: Context, data: Mapping[str, Any]) -> Result:
    return Result(
        "fail",
        f"import {framework.name} failed: {data.get('error')}",
        {"python": context.python, "where": data.get("where")},
        reinstall_fix(context),
    )


def run_framework(framework: Framework, context: Context) -> Result:
    """Probe ``framework`` in a child of ``context.python`` and judge what it reports."""
    try:
        probe = probe_framework(framework, context)
    except OSError as exc:
        return _unrunnable(context, exc)
    data = probe.data
    if data is None:
        return _no_record(framework, context, probe)
    if data.get("missing") is True:
        return _missing(framework, context)
    if "error" in data:
        return _broken(framework, context, data)
    return framework.judge(framework, context, {**data, "seconds": round(probe.seconds, 2)})


def _verdict(head: str, issues: list[tuple[str, str]], evidence: Mapping[str, Any]) -> Result:
    """Pass with ``head`` when there are no issues; else a warning naming each with its fix."""
    if not issues:
        return passed(head, **evidence)
    message = head + "; " + "; ".join(text for text, _ in issues)
    return warning(message, "; ".join(dict.fromkeys(fix for _, fix in issues)), **evidence)


def judge_import(framework: Framework, context: Context, data: Mapping[str, Any]) -> Result:
    return passed(f"{framework.dist} {data.get('version')} imports", **data)


def _bf16_issue(data: Mapping[str, Any], device: str) -> list[tuple[str, str]]:
    result = data.get(f"bf16_{device}")
    if result is True:
        return []
    why = "gives a wrong result" if result is False else f"fails: {result}"
    fix = "set bf16.enabled to false (fp32 on CPU, fp16 on older GPUs) in the DeepSpeed config"
    return [(f"a bf16 matmul on {device} {why}", fix)]


def judge_torch(framework: Framework, context: Context, data: Mapping[str, Any]) -> Result:
    cuda = data.get("cuda_available") is True
    where = f"CUDA {data.get('cuda_build')}, {data.get('devices')} GPU(s)" if cuda else "CPU only"
    issues = _bf16_issue(data, "cpu") + (_bf16_issue(data, "cuda") if cuda else [])
    if data.get("cuda_build") and not cuda:
        fix = "check the driver with nvidia-smi and run `deepseek-doctor --only accelerators`"
        issues.append((f"this torch is built for CUDA {data['cuda_build']} but sees no GPU", fix))
    tested = "cpu and cuda" if cuda else "cpu"
    head = f"torch {data.get('version')} ({where}); bf16 matmul tested on {tested}"
    return _verdict(head, issues, data)


def _op_summary(ops: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """Op names split into (prebuilt, JIT-compilable, incompatible)."""
    entries = {n: o for n, o in ops.items() if isinstance(o, dict)}
    prebuilt = [n for n, o in entries.items() if o.get("prebuilt") is True]
    rest = [n for n in entries if n not in prebuilt]
    jit = [n for n in rest if entries[n].get("compatible") is True]
    return prebuilt, jit, [n for n in rest if n not in jit]


def _toolchain_issues(data: Mapping[str, Any], jit: list[str]) -> list[tuple[str, str]]:
    if not jit:
        return []
    issues = []
    if not data.get("cxx"):
        fix = "install g++ from the OS media (apt-get install g++)"
        issues.append(("no C++ compiler (c++/g++) for JIT-built ops", fix))
    if not data.get("ninja"):
        beside = data.get("ninja_beside_python")
        fix = (
            f"put {Path(str(beside)).parent} on PATH (activate the env)"
            if beside
            else "install ninja from the OS media (apt-get install ninja-build)"
        )
        issues.append(("ninja is not on PATH; JIT-built ops need it", fix))
    return issues


def judge_deepspeed(framework: Framework, context: Context, data: Mapping[str, Any]) -> Result:
    ops = data.get("ops")
    prebuilt, jit, incompatible = _op_summary(ops if isinstance(ops, dict) else {})
    head = (
        f"deepspeed {data.get('version')} (accelerator {data.get('accelerator')}): "
        f"{len(prebuilt)} ops prebuilt, {len(jit)} JIT-compilable"
        + (f", not compatible here: {', '.join(incompatible)}" if incompatible else "")
    )
    evidence = {**data, "prebuilt": prebuilt, "jit": jit, "incompatible": incompatible}
    issues = _toolchain_issues(data, jit)
    if jit and not issues:
        head += f"; JIT toolchain: {data.get('cxx')}, {data.get('ninja')}"
    return _verdict(head, issues, evidence)


def judge_transformers(framework: Framework, context: Context, data: Mapping[str, Any]) -> Result:
    head = f"transformers {data.get('version')} imports with HF_HUB_OFFLINE=1"
    if data.get("offline_mode") is True:
        return passed(head + " and stays offline", **data)
    fix = "install the transformers and huggingface-hub versions locked in the bundle: "
    return problem(head + " but does not report offline mode", fix + reinstall_fix(context), **data)


def judge_tvm(framework: Framework, context: Context, data: Mapping[str, Any]) -> Result:
    if data.get("target_error") or not data.get("target"):
        return problem(
            f"tvm {data.get('version')} imports but cannot target llvm: {data.get('target_error')}",
            "install an apache-tvm wheel built with LLVM (the one in the bundle is); "
            + reinstall_fix(context),
            **data,
        )
    return passed(f"tvm {data.get('version')} imports; llvm target ok", **data)


def _cross_compiler(context: Context) -> Result:
    if not any("aarch64" in p for p in context.target_platforms):
        return skipped("the bundle targets no aarch64 platform")
    path = context.environ.get("PATH", os.defpath)
    names = ["aarch64-linux-gnu-gcc"] + (["gcc"] if platform.machine() == "aarch64" else [])
    found = next((hit for n in names if (hit := shutil.which(n, path=path))), None)
    if found:
        return passed(f"aarch64 C compiler: {found}", compiler=found)
    return problem(
        "the bundle targets aarch64 but aarch64-linux-gnu-gcc is not on PATH",
        "install the cross compiler from the OS media: apt-get install gcc-aarch64-linux-gnu",
        platforms=context.target_platforms,
    )


FRAMEWORKS: tuple[Framework, ...] = (
    Framework("torch", "torch", "train", 30.0, judge_torch, _TORCH_BODY, core=True),
    Framework("deepspeed", "deepspeed", "train", 45.0, judge_deepspeed, _DEEPSPEED_BODY, _DS_ENV),
    Framework(
        "transformers", "transformers", "train", 30.0, judge_transformers, _TRANSFORMERS_BODY
    ),
    Framework("tvm", "apache-tvm", "deploy", 30.0, judge_tvm, _TVM_BODY),
    Framework("fastapi", "fastapi", "serve", 15.0, judge_import, _IMPORT_BODY),
    Framework("uvicorn", "uvicorn", "serve", 15.0, judge_import, _IMPORT_BODY),
    Framework("dvc", "dvc", "data", 15.0, judge_import, _IMPORT_BODY),
)


def check_for(framework: Framework, context: Context) -> Check:
    """The ``fw.<name>`` check; its deadline sits a little past the probe's own timeout."""
    critical = expected(framework, context)
    return Check(
        id=f"fw.{framework.name}",
        group="frameworks",
        title=f"{framework.dist} imports and works",
        run=partial(run_framework, framework),
        severity="critical" if critical else "warning",
        timeout=framework.timeout + 5.0,
    )


def checks(context: Context) -> list[Check]:
    cross = Check(
        "fw.tvm-aarch64",
        "frameworks",
        "aarch64 cross compiler for TVM edge exports",
        _cross_compiler,
        severity="warning",
        timeout=5.0,
    )
    return [check_for(f, context) for f in FRAMEWORKS] + [cross]
