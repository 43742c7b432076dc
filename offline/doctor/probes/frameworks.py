"""Import one framework in the checked interpreter and print what it reports.

``python -P frameworks.py probe BODY MODULE DIST`` imports ``MODULE`` (distribution ``DIST``) the
way ``BODY`` asks about it and prints one marked JSON line: the body's record, ``missing``, or
the ``error`` the import raised and ``where``. Whatever the framework prints goes to stderr.

``python -P frameworks.py host IDLE`` is the ``TorchHost`` of ``offline.doctor.checks.frameworks``:
it imports torch and says whether it could, then forks one ``probe`` child per request line on
stdin and says each child's pid and exit code; it exits at EOF or after IDLE seconds with nothing
to do. A child gets its own process group (set on both sides of the fork, so a kill can never
miss it), stdin from /dev/null, stdout and stderr into the request's files and the framework's
env defaults. Nothing here initialises CUDA: importing torch leaves that to first use, so
forking after it is safe on GPU hosts too.

Standard library only: the checked env may lack the toolkit. A probe lives for one import, so
the cyclic collector is off (it would only rescan torch's objects, up to 0.4 s of CPU) and the
process ends with ``os._exit`` (tearing torch down proves nothing and costs 0.3 to 0.5 s).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.metadata
import importlib.util
import json
import os
import select
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TextIO

MARKER = "@@deepseek-doctor-probe@@ "
POLL_S = 0.02

Record = dict[str, Any]


def records() -> TextIO:
    """The real stdout, for records; fd 1 then points at stderr, for whatever else is printed."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return out


def write(out: TextIO, data: Mapping[str, Any]) -> None:
    out.write(MARKER + json.dumps(data, default=str) + "\n")
    out.flush()


def last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(exc)[-1].strip()


def version(module: object, dist: str) -> str | None:
    found = getattr(module, "__version__", None)
    if found:
        return str(found)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- bodies: what each framework is asked once it imports -------------------------------------


def import_body(module: str, dist: str) -> Record:
    return {"version": version(importlib.import_module(module), dist)}


def torch_body(module: str, dist: str) -> Record:
    import torch

    def bf16(device: str) -> bool | str:
        try:
            a = torch.ones(8, 8, dtype=torch.bfloat16, device=device)
            return bool(((a @ a).float() == 8).all())
        except Exception as exc:
            return last_line(exc)

    cuda = bool(torch.cuda.is_available())
    return {
        "version": version(torch, dist),
        "cuda_build": torch.version.cuda,
        "cuda_available": cuda,
        "devices": torch.cuda.device_count() if cuda else 0,
        "bf16_cpu": bf16("cpu"),
        "bf16_cuda": bf16("cuda") if cuda else None,
    }


def _compatible(builder: Any) -> bool:
    try:
        return bool(builder.is_compatible(verbose=False))
    except Exception:
        return False


def deepspeed_body(module: str, dist: str) -> Record:
    import deepspeed
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops
    from deepspeed.ops.op_builder.all_ops import ALL_OPS

    ops = {
        name: {"prebuilt": bool(installed_ops.get(name)), "compatible": _compatible(builder)}
        for name, builder in sorted(ALL_OPS.items())
    }
    cxx = (os.environ.get("CXX") or "").split()
    here = os.path.dirname(sys.executable)
    return {
        "version": version(deepspeed, dist),
        "accelerator": get_accelerator()._name,
        "ops": ops,
        "cxx": shutil.which(cxx[0]) if cxx else shutil.which("c++") or shutil.which("g++"),
        "ninja": shutil.which("ninja"),
        "ninja_beside_python": shutil.which("ninja", path=here),
    }


def transformers_body(module: str, dist: str) -> Record:
    import transformers

    try:
        # transformers re-exports huggingface_hub's function here, without saying so.
        from transformers.utils.hub import is_offline_mode  # type: ignore[attr-defined]
    except ImportError:
        from huggingface_hub.constants import is_offline_mode
    return {"version": version(transformers, dist), "offline_mode": bool(is_offline_mode())}


def tvm_body(module: str, dist: str) -> Record:
    """An llvm Target parses in any build; runtime.enabled says whether LLVM codegen is built in."""
    import tvm

    target: str | None
    target_error: str | None
    try:
        target, target_error = str(tvm.target.Target("llvm")), None
    except Exception as exc:
        target, target_error = None, last_line(exc)
    llvm: bool | None
    try:
        llvm = bool(tvm.runtime.enabled("llvm"))
    except Exception:
        llvm = None
    return {
        "version": version(tvm, dist),
        "target": target,
        "target_error": target_error,
        "llvm_enabled": llvm,
    }


BODIES: dict[str, Callable[[str, str], Record]] = {
    "import": import_body,
    "torch": torch_body,
    "deepspeed": deepspeed_body,
    "transformers": transformers_body,
    "tvm": tvm_body,
}


def probe(body: str, module: str, dist: str, out: TextIO) -> None:
    """Write ``body``'s record for ``module``, or why there is none."""
    try:
        if importlib.util.find_spec(module) is None:
            write(out, {"missing": True})
        else:
            write(out, BODIES[body](module, dist))
    except BaseException as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        write(out, {"error": last_line(exc), "where": f"{frames[-1].filename}:{frames[-1].lineno}"})


# --- the torch host -----------------------------------------------------------------------------


def child(request: Mapping[str, Any], out: TextIO) -> None:
    """In the forked child: detach from the host's pipes, then probe as a process of its own."""
    os.setpgid(0, 0)
    os.close(out.fileno())
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
    for key, value in request["env"].items():
        os.environ.setdefault(key, value)
    body, module, dist = request["argv"]
    sys.argv = [sys.argv[0], "probe", body, module, dist]
    probe(body, module, dist, records())
    os._exit(0)


def fork(request: Mapping[str, Any], out: TextIO) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            child(request, out)
        except BaseException:
            traceback.print_exc()
        os._exit(1)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    return pid


def reap(children: dict[int, int], out: TextIO) -> None:
    """Say the exit code of every child that has finished."""
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        write(out, {"id": children.pop(pid), "returncode": os.waitstatus_to_exitcode(status)})


def serve(idle: float, out: TextIO) -> None:
    """Fork a child per request line on stdin until EOF, or until idle for ``idle`` seconds."""
    children: dict[int, int] = {}  # pid -> request id
    pending, reading, idle_since = b"", True, time.monotonic()
    while reading or children:
        if reading and select.select([0], [], [], POLL_S)[0]:
            chunk = os.read(0, 1 << 16)
            reading, pending = bool(chunk), pending + chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = fork(request, out)
                children[pid] = request["id"]
                write(out, {"id": request["id"], "pid": pid})
        elif not reading:
            time.sleep(POLL_S)
        reap(children, out)
        if children or pending:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > idle:
            return


def host(idle: float, out: TextIO) -> None:
    try:
        importlib.import_module("torch")
    except BaseException:
        write(out, {"ready": False})
        return
    write(out, {"ready": True})
    serve(idle, out)


def main(argv: list[str] | None = None) -> None:
    gc.disable()
    args = sys.argv[1:] if argv is None else argv
    out = records()
    if args[0] == "host":
        host(float(args[1]), out)
    else:
        probe(args[1], args[2], args[3], out)
    os._exit(0)


if __name__ == "__main__":
    main()
