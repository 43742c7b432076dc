"""Where the loop's small collectives travel: on the engine's GPU for NCCL, on the CPU for gloo."""

from __future__ import annotations

import pytest
import torch

from offline.train.world import collective_placement


def test_nccl_reduces_on_the_engines_device_in_float64() -> None:
    device, dtype = collective_placement("nccl", torch.device("cuda", 3))
    assert device == torch.device("cuda", 3) and dtype == torch.float64
    assert collective_placement("nccl", "cuda:0")[0] == torch.device("cuda", 0)


@pytest.mark.parametrize("engine_device", ["cpu", "cuda:1"])
def test_gloo_reduces_cpu_tensors_whatever_the_engine_device(engine_device: str) -> None:
    assert collective_placement("gloo", engine_device) == (torch.device("cpu"), torch.float64)


def test_other_backends_get_float32_on_the_device() -> None:
    assert collective_placement("hccl", "cpu") == (torch.device("cpu"), torch.float32)


def test_a_tensor_built_as_placed_reduces_on_a_real_gloo_group(tmp_path: object) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    store = f"file://{tmp_path}/store"
    dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        device, dtype = collective_placement(dist.get_backend(), "cpu")
        tensor = torch.tensor([2.0**53, 1.0], dtype=dtype, device=device)
        dist.all_reduce(tensor)
        assert tensor.tolist() == [2.0**53, 1.0] and tensor.dtype == torch.float64
    finally:
        dist.destroy_process_group()
