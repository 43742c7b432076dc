"""The TVM CPU schedules and int8 weights: exact on awkward shapes, int8 stored as int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from offline.deploy import tvm_build


def _build(x_shape: tuple[int, ...], weight: np.ndarray, *, int8: bool, gather: bool = False):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    params = [x]
    if gather:
        idx = relax.Var("idx", relax.TensorType((x_shape[0],), "int64"))
        params.append(idx)
    with bb.function("main", params):
        with bb.dataflow():
            w = relax.const(weight)
            if gather:  # a mixture-of-experts layer: each row's own expert matrix
                w = bb.emit(relax.op.take(w, idx, axis=0))
            y = bb.emit_output(bb.emit(relax.op.matmul(x, w)))
        bb.emit_func_output(y)
    target = tvm.target.Target({"kind": "llvm"})
    executable = relax.build(
        bb.get(), target=target, relax_pipeline=tvm_build.pipeline(target, int8=int8)
    )
    return relax.VirtualMachine(executable, tvm.cpu()), executable


@pytest.mark.parametrize("m,k,n", [(7, 13, 37), (64, 128, 200), (1, 96, 5)])
def test_scheduled_matmul_matches_numpy_on_awkward_shapes(m: int, k: int, n: int) -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((m, k), "float32"), rng.standard_normal((k, n), "float32")
    vm, _ = _build((m, k), w, int8=False)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, x @ w, rtol=1e-4, atol=1e-4)
    # and the Matmul rule is what scheduled it: a parallel tile loop, not plain loops
    a = tvm.te.placeholder((m, k), name="a")
    b = tvm.te.placeholder((k, n), name="b")
    r = tvm.te.reduce_axis((0, k), name="r")
    c = tvm.te.compute((m, n), lambda i, j: tvm.te.sum(a[i, r] * b[r, j], axis=r))
    func = tvm.te.create_prim_func([a, b, c])
    sch = tvm_build.rules()[0].apply(func, tvm.target.Target({"kind": "llvm"}), False)
    assert sch is not None and "T.parallel" in sch.mod.script()


def test_int8_weights_are_stored_as_int8_and_stay_close(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((64, 128), "float32"), rng.standard_normal((128, 256), "float32")
    vm, executable = _build((64, 128), w, int8=True)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    ref = x @ w
    # int8 with per-channel scales: about 0.5 % of the output's spread, not exact
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()
    assert not np.allclose(got, ref, atol=1e-5)  # really quantized, not fp32 in disguise
    # the library holds 32 KiB of int8 weights where the fp32 one holds 128 KiB
    _, fp32 = _build((64, 128), w, int8=False)
    sizes = {}
    for name, exe in (("int8", executable), ("fp32", fp32)):
        exe.export_library(str(tmp_path / f"{name}.so"), options=["-s"])
        sizes[name] = (tmp_path / f"{name}.so").stat().st_size
    assert sizes["fp32"] - sizes["int8"] > 80_000


def test_gathered_int8_experts_match_numpy() -> None:
    rng = np.random.default_rng(2)
    experts = rng.standard_normal((4, 32, 48), "float32")
    x = rng.standard_normal((6, 1, 32), "float32")
    idx = np.array([0, 3, 1, 1, 2, 0], dtype="int64")
    vm, _ = _build((6, 1, 32), experts, int8=True, gather=True)
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(idx)).numpy()
    ref = np.einsum("bik,bkn->bin", x, experts[idx])
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()


def test_quantize_weight_picks_the_channel_axis_that_fits() -> None:
    rng = np.random.default_rng(3)
    # columns with very different ranges: per-column scales are the right choice
    w = rng.standard_normal((64, 32), "float32") * np.logspace(-2, 1, 32, dtype="float32")
    q, scale = tvm_build.quantize_weight(w)
    assert q.dtype == np.int8 and scale.shape == (1, 32)
    assert np.abs(q.astype(np.float32) * scale - w).max() <= scale.max() / 2 + 1e-6
