"""Build DeepSpeed's JIT ops for this host once, ahead of the first run.

On CPU, DeepSpeed compiles its shared-memory communication op the first time a process group
starts (tens of seconds, needs g++ and the Python headers); the result is cached under
``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``). ``python -m offline.train.ops``
does it up front, so the first training run (or test) does not pay for it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time


def prebuild() -> str:
    """Build (or load from the cache) the ops a CPU run needs; says which and how long."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    started = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):
        from deepspeed.comm.torch import build_shm_op

        op = build_shm_op()
    took = time.monotonic() - started
    if op is None:
        return f"no DeepSpeed CPU op to build on this host ({took:.1f} s)"
    return f"DeepSpeed shared-memory op ready ({took:.1f} s)"


if __name__ == "__main__":
    sys.stdout.write(prebuild() + "\n")
