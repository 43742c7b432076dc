"""The TVM CPU schedules and int8 weights: exact on awkward shapes, int8 stored as int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from offline.deploy import tvm_build

HOST = tvm.target.Target(
    {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}  # as offline export does
)


def _build(
    x_shape: tuple[int, ...],
    weight: np.ndarray,
    *,
    int8: bool,
    gather: bool = False,
    weight_left: bool = False,
    target: tvm.target.Target | None = None,
):
    target = target or tvm.target.Target({"kind": "llvm"})
    executable = relax.build(
        _module(x_shape, weight, gather=gather, weight_left=weight_left),
        target=target,
        relax_pipeline=tvm_build.pipeline(target, int8=int8),
    )
    return relax.VirtualMachine(executable, tvm.cpu()), executable


def _module(
    x_shape: tuple[int, ...], weight: np.ndarray, *, gather: bool = False, weight_left: bool = False
) -> tvm.IRModule:
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
            y = relax.op.matmul(w, x) if weight_left else relax.op.matmul(x, w)
            y = bb.emit_output(bb.emit(y))
        bb.emit_func_output(y)
    return bb.get()


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


# -- int8 arithmetic on VNNI ----------------------------------------------------------------------


def _int8_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` as the VNNI kernels compute it: x per row and w per column in symmetric int8,
    products summed exactly in integers, then scaled back."""
    sx = np.abs(x).max(axis=-1, keepdims=True) / 127
    sw = np.abs(w).max(axis=-2, keepdims=True) / 127
    xq = np.clip(np.rint(x / sx), -127, 127).astype(np.int64)
    wq = np.clip(np.rint(w / sw), -127, 127).astype(np.int64)
    return (xq @ wq).astype(np.float32) * sx * sw


def test_vnni_is_detected_from_the_target_cpu() -> None:
    assert tvm_build.has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "znver5"}))
    assert tvm_build.has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids"}))
    assert not tvm_build.has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))
    arm = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu"})
    assert not tvm_build.has_vnni(arm)


@pytest.mark.parametrize("m,k,n", [(64, 128, 256), (7, 130, 250), (1, 96, 200)])
def test_int8_matmul_multiplies_in_integers_on_vnni(m: int, k: int, n: int) -> None:
    """On a CPU with VNNI the int8 library really multiplies int8 by int8: its output is the
    integer reference (to fp32 rounding), which differs from the fp32 product by ~1 %."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((m, k), "float32"), rng.standard_normal((k, n), "float32")
    lowered = tvm_build.pipeline(HOST, int8=True)(_module((m, k), w))
    names = [gv.name_hint for gv in lowered.get_global_vars()]
    if not tvm_build.has_vnni(HOST):  # e.g. an older x86 CPU: int8 weights, fp32 arithmetic
        assert "offline_int8_matmul" not in names
        return
    assert "offline_int8_matmul" in names and "offline_int8_quantize" in names
    vm, _ = _build((m, k), w, int8=True, target=HOST)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, _int8_reference(x, w), rtol=1e-5, atol=1e-4)
    assert np.abs(got - x @ w).max() > 1e-3  # not fp32


@pytest.mark.parametrize("weight_left", [True, False])
def test_int8_experts_read_their_own_packed_weights(weight_left: bool) -> None:
    """A mixture-of-experts matmul (``take(W, idx) @ x``): each row uses its routed expert's
    int8 weight in place; the fp32 gather of every routed expert is gone from the graph."""
    rng = np.random.default_rng(5)
    rows, experts, k, n = 12, 4, 64, 96
    stack = rng.standard_normal((experts, n, k) if weight_left else (experts, k, n), "float32")
    x_shape = (rows, k, 1) if weight_left else (rows, 1, k)
    x = rng.standard_normal(x_shape, "float32")
    idx = np.array([0, 3, 1, 1, 2, 0, 3, 3, 2, 1, 0, 2], dtype="int64")
    mod = _module(x_shape, stack, gather=True, weight_left=weight_left)
    lowered = tvm_build.pipeline(HOST, int8=True)(mod)
    names = [gv.name_hint for gv in lowered.get_global_vars()]
    if not tvm_build.has_vnni(HOST):
        assert "offline_int8_experts_matmul" not in names
        return
    assert "offline_int8_experts_matmul" in names
    assert not [name for name in names if "take" in name]  # no fp32 copy of the experts
    vm, _ = _build(x_shape, stack, int8=True, gather=True, weight_left=weight_left, target=HOST)
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(idx)).numpy()
    if weight_left:  # y[b] = W[idx[b]] @ x[b]: the same as x[b].T @ W[idx[b]].T
        ref = np.stack([_int8_reference(x[b].T, stack[e].T) for b, e in enumerate(idx)])
        ref = ref.transpose(0, 2, 1)
    else:
        ref = np.stack([_int8_reference(x[b], stack[e]) for b, e in enumerate(idx)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
