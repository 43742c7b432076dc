"""The ranks of a training run: where this process stands among them, and what they share.

Started plainly a process is a world of one, set up here; under DeepSpeed's launcher the
launcher's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...) says where it stands. The
collectives are the small ones the loop decides by (sums of losses and token counts, "did every
rank write its part"), so every rank takes the same decision.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from offline.airgap import go_offline
from offline.errors import NetworkError


def _free_port() -> int:
    """A free loopback port, after checking loopback works (gloo rendezvous needs it).

    An interface-less network namespace (``unshare -n``) has loopback down; without this check
    the process group would wait out its timeout instead of saying why.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        try:
            socket.create_connection(sock.getsockname(), timeout=5).close()
        except OSError as exc:
            raise NetworkError(
                f"cannot connect to 127.0.0.1 ({exc.strerror}): training needs the loopback"
                " interface for its process group",
                fix="bring it up: ip link set lo up",
            ) from None
        return int(sock.getsockname()[1])


def _prepare_environment() -> str:
    """Offline switches, the accelerator, and a world of one unless a launcher set one up."""
    go_offline()
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            LOCAL_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=os.environ.get("MASTER_PORT") or str(_free_port()),
        )
    return os.environ["DS_ACCELERATOR"]


def _release_shared_memory(rank: int, world: int) -> None:
    """DeepSpeed's CPU all-reduce keeps its workspace (67 MB a rank) in a shared-memory file it
    never removes: left behind, every training run, even one killed, would hold that much RAM
    until a reboot. Once every rank has mapped every other rank's file (they do in
    ``init_distributed``; the barrier says all have returned from it), the names are no longer
    needed and each rank removes its own: the mappings stay valid until the process ends."""
    import torch.distributed as dist

    if world > 1 and dist.is_initialized():
        dist.barrier()
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""), rank
    )
    Path("/dev/shm", name).unlink(missing_ok=True)


def collective_placement(backend: str, device: Any) -> tuple[Any, Any]:
    """The device and dtype of a small all-reduced tensor on ``backend``.

    NCCL reduces CUDA tensors only (float64 included), on the engine's device; gloo reduces CPU
    tensors. Other backends (hccl, ccl) get float32 on the device: not all reduce float64.
    Token counts stay exact in float32 up to 2**24 per step.
    """
    import torch

    if backend == "gloo":
        return torch.device("cpu"), torch.float64
    if backend == "nccl":
        return torch.device(device), torch.float64
    return torch.device(device), torch.float32


class World:
    """This rank's place in the run and the collectives every rank takes part in.

    Making one switches the process offline and, without a launcher, makes it a world of one.
    """

    def __init__(self) -> None:
        self.alone = "RANK" not in os.environ  # no launcher: a world of one, set up here
        self.accelerator = _prepare_environment()
        self.rank = int(os.environ["RANK"])
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.size = int(os.environ["WORLD_SIZE"])
        self.device: Any = None  # the engine's, once it has placed the model (NCCL reduces there)

    def join(self) -> None:
        """Start the process group (gloo on CPU), then free DeepSpeed's shared-memory names."""
        import deepspeed

        deepspeed.init_distributed(
            dist_backend="gloo" if self.accelerator == "cpu" else None,
            init_method=self.file_store() if self.alone else None,
            rank=self.rank if self.alone else -1,
            world_size=self.size if self.alone else -1,
        )
        _release_shared_memory(self.rank, self.size)

    def file_store(self) -> str:
        """A world of one meets through a file, not a TCP store: torch's TCP store looks up
        the name of the address it connects to (a reverse DNS query even for 127.0.0.1 where
        /etc/hosts lacks it), which an isolated host must not send."""
        import atexit
        import shutil
        import tempfile

        directory = tempfile.mkdtemp(prefix="offline-train-")
        atexit.register(shutil.rmtree, directory, True)
        return (Path(directory) / "store").as_uri()

    def all_sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the ranks (a collective; every rank gets the sums)."""
        if self.size == 1:
            return [float(v) for v in values]
        import torch
        from deepspeed import comm as dist

        device, dtype = collective_placement(torch.distributed.get_backend(), self.device)
        tensor = torch.tensor(values, dtype=dtype, device=device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def all_ok(self, ok: bool) -> bool:
        """Whether ``ok`` holds on every rank (a collective)."""
        return self.all_sum([0.0 if ok else 1.0])[0] == 0.0

    def barrier(self) -> None:
        if self.size > 1:
            from deepspeed import comm as dist

            dist.barrier()
