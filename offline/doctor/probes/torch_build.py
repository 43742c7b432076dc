"""Print what the installed torch was built for, as one JSON line on stdout.

``python -P torch_build.py``: torch's version, the CUDA it was built with, the GPU architectures
it has kernels for and its NCCL version. Standard library only until torch is imported; when
torch does not import, the traceback on stderr and the exit code say why.
"""

from __future__ import annotations

import json
from typing import Any


def _nccl(torch: Any) -> str | None:
    try:
        found = torch.cuda.nccl.version()
    except Exception:
        return None
    return ".".join(map(str, found)) if isinstance(found, tuple) else str(found)


def build() -> dict[str, Any]:
    import torch

    flags = getattr(torch._C, "_cuda_getArchFlags", lambda: None)()
    return {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "arch_list": flags.split() if flags else [],
        "nccl": _nccl(torch),
    }


def main() -> None:
    print(json.dumps(build()))


if __name__ == "__main__":
    main()
