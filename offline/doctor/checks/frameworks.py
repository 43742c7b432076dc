"""Doctor checks: the frameworks group (ids ``fw.*``).

Each framework is imported in a child process of ``context.python`` running
``probes/frameworks.py``, never in the doctor, so a broken or hanging install costs one check
and nothing else. The child prints one marked JSON line on its real stdout; whatever the
framework prints goes to stderr.

torch, DeepSpeed and TVM (through tvm_ffi) all begin by importing torch, which costs most of
their probes' CPU. Their children are forked from one host process of ``context.python`` that
has imported torch once (``TorchHost``): each child then does what its own import would do,
still in a process of its own with its own timeout. When torch does not import in the host,
each of them runs alone, so a broken torch is reported exactly as without the host.

A missing package is a failure when the bundle's locks carry it (torch also without a
manifest) and a warning otherwise; an import that raises or hangs is always a failure.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from offline.airgap import OFFLINE_ENV
from offline.doctor.context import Context
from offline.doctor.host import canonical, run
from offline.doctor.model import Check, Result, passed, problem, skipped, warning
from offline.doctor.probes.frameworks import MARKER

# The program every probe runs (``probe BODY MODULE DIST``), and the TorchHost's (``host IDLE``).
PROBE = Path(__file__).resolve().parent.parent / "probes" / "frameworks.py"
# The body that only imports the module and reports its version.
_IMPORT_BODY = "import"

# DeepSpeed picks an accelerator by probing devices; without a choice in the environment, cpu.
_DS_ENV = {"DS_ACCELERATOR": "cpu"}
# Telemetry and hub access stay off in every probe, whatever the checked environment says.
_PROBE_ENV = OFFLINE_ENV

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
    body: str  # which body of probes/frameworks.py asks about it
    env: Mapping[str, str] = field(default_factory=dict)  # defaults; context.environ wins
    core: bool = False  # expected even without a bundle manifest
    after_torch: bool = False  # its import begins by importing torch: fork it from a TorchHost


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


def probe_argv(framework: Framework) -> list[str]:
    """The arguments of ``probes/frameworks.py probe`` for ``framework``."""
    return [framework.body, framework.name, framework.dist]


def run_probe(python: str, argv: list[str], env: Mapping[str, str], timeout: float) -> Probe:
    """Run ``python -P PROBE probe ...argv`` in its own session; kill it all at ``timeout``."""
    ran = run([python, "-P", str(PROBE), "probe", *argv], timeout, env)
    if not ran.started:
        raise OSError(ran.err.removeprefix(f"cannot run {python}: "))
    return Probe(parse(ran.out), ran.code, ran.last_error_line, ran.seconds)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


Replies = queue.SimpleQueue[Mapping[str, Any] | None]  # None: the host is gone


@dataclass
class TorchHost:
    """A process of ``python`` that imports torch once and forks probes from there.

    Started by the first probe, it exits when idle and is started again when needed. ``probe``
    returns None where the host cannot serve (torch does not import in it, it could not start,
    it went away before forking the child): the caller then runs the probe alone.
    """

    python: str
    env: Mapping[str, str]
    idle: float = 1.0  # seconds the host waits for another request once its children are done
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _proc: subprocess.Popen[str] | None = field(default=None, init=False, repr=False)
    _replies: dict[int, Replies] = field(default_factory=dict, init=False, repr=False)
    _ids: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False)
    _no_torch: bool = field(default=False, init=False, repr=False)

    def probe(self, framework: Framework, timeout: float) -> Probe | None:
        """Fork ``framework``'s probe; kill it (or a host stuck importing torch) at ``timeout``."""
        started = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="deepseek-doctor-") as tmp:
                return self._probe(framework, Path(tmp), started, started + timeout)
        except OSError:
            return None

    def _probe(
        self, framework: Framework, tmp: Path, started: float, deadline: float
    ) -> Probe | None:
        out, err = tmp / "stdout", tmp / "stderr"
        request = {
            "argv": probe_argv(framework),
            "env": dict(framework.env),
            "stdout": str(out),
            "stderr": str(err),
        }
        sent = self._send(request)
        if sent is None:
            return None
        proc, replies = sent
        pid: int | None = None
        while True:
            try:
                reply = replies.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                self._kill(proc, pid)
                return Probe(None, None, _tail(_read(err)), time.monotonic() - started)
            if reply is None:
                self._kill(proc, pid)
                return None
            if "returncode" not in reply:
                pid = int(reply["pid"])
                continue
            code = reply["returncode"]
            return Probe(parse(_read(out)), code, _tail(_read(err)), time.monotonic() - started)

    def _send(self, request: dict[str, Any]) -> tuple[subprocess.Popen[str], Replies] | None:
        replies: Replies = queue.SimpleQueue()
        with self._lock:
            if self._no_torch:
                return None
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None
            request_id = next(self._ids)
            self._replies[request_id] = replies
            # A few KB; the pipe holds the requests that come while the host imports torch.
            try:
                proc.stdin.write(json.dumps({**request, "id": request_id}) + "\n")
                proc.stdin.flush()
            except OSError:  # it exited just now
                return None
        return proc, replies

    def _start(self) -> None:
        proc = subprocess.Popen(
            [self.python, "-P", str(PROBE), "host", str(self.idle)],
            env=dict(self.env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self._proc, self._replies = proc, {}
        listen = threading.Thread(
            target=self._listen, args=(proc, self._replies), daemon=True, name="torch-host"
        )
        listen.start()

    def _listen(self, proc: subprocess.Popen[str], replies: dict[int, Replies]) -> None:
        """Hand each reply to its request; when the host is gone, tell every request."""
        assert proc.stdout is not None
        for line in proc.stdout:
            data = parse(line)
            if data is None:
                continue
            with self._lock:
                self._no_torch = self._no_torch or data.get("ready") is False
                waiting = replies.get(data.get("id", -1))
            if waiting is not None:
                waiting.put(data)
        proc.wait()
        with self._lock:
            for waiting in replies.values():
                waiting.put(None)

    def _kill(self, proc: subprocess.Popen[str], pid: int | None) -> None:
        """Kill the child's group; without a child yet, the host: it is stuck importing torch."""
        if pid is not None:
            _kill_group(pid)
        elif proc.poll() is None:
            _kill_group(proc.pid)


def torch_host(context: Context) -> TorchHost:
    """The host for ``context``'s interpreter, in the environment every probe gets."""
    return TorchHost(context.python, {**context.environ, **_PROBE_ENV})


def probe_framework(framework: Framework, context: Context, host: TorchHost | None = None) -> Probe:
    """Fork the probe from ``host`` where it can; otherwise (or then) run it alone."""
    started = time.monotonic()
    if host is not None and framework.after_torch:
        served = host.probe(framework, framework.timeout)
        if served is not None:
            return served
    env = {**framework.env, **context.environ, **_PROBE_ENV}
    left = max(framework.timeout - (time.monotonic() - started), 0.0)
    probe = run_probe(context.python, probe_argv(framework), env, left)
    return replace(probe, seconds=time.monotonic() - started)


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


def run_framework(framework: Framework, context: Context, host: TorchHost | None = None) -> Result:
    """Probe ``framework`` in a child of ``context.python`` and judge what it reports."""
    try:
        probe = probe_framework(framework, context, host)
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
    fix = "install an apache-tvm wheel built with LLVM (the one in the bundle is); "
    if data.get("target_error") or not data.get("target"):
        return problem(
            f"tvm {data.get('version')} imports but cannot target llvm: {data.get('target_error')}",
            fix + reinstall_fix(context),
            **data,
        )
    if data.get("llvm_enabled") is False:
        return problem(
            f"tvm {data.get('version')} imports but was built without LLVM: it cannot compile "
            "for CPU targets",
            fix + reinstall_fix(context),
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
    Framework("torch", "torch", "train", 30.0, judge_torch, "torch", core=True, after_torch=True),
    Framework(
        "deepspeed",
        "deepspeed",
        "train",
        45.0,
        judge_deepspeed,
        "deepspeed",
        _DS_ENV,
        after_torch=True,
    ),
    Framework("transformers", "transformers", "train", 30.0, judge_transformers, "transformers"),
    # tvm_ffi imports torch before anything else (when it can), as DeepSpeed does.
    Framework("tvm", "apache-tvm", "deploy", 30.0, judge_tvm, "tvm", after_torch=True),
    Framework("fastapi", "fastapi", "serve", 15.0, judge_import, _IMPORT_BODY),
    Framework("uvicorn", "uvicorn", "serve", 15.0, judge_import, _IMPORT_BODY),
    Framework("dvc", "dvc", "data", 15.0, judge_import, _IMPORT_BODY),
)


def check_for(framework: Framework, context: Context, host: TorchHost | None = None) -> Check:
    """The ``fw.<name>`` check; its deadline sits a little past the probe's own timeout."""
    critical = expected(framework, context)
    return Check(
        id=f"fw.{framework.name}",
        group="frameworks",
        title=f"{framework.dist} imports and works",
        run=partial(run_framework, framework, host=host),
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
    host = torch_host(context)
    return [check_for(f, context, host) for f in FRAMEWORKS] + [cross]
