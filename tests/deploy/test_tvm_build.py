"""The TVM CPU schedules and int8 weights: exact on awkward shapes, int8 stored as int8."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import relax

from offline.deploy import tvm_build

ROOT = Path(__file__).resolve().parents[2]
HOST = tvm.target.Target(
    {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}  # as offline export does
)
# x86 with AVX2 and no AVX-512 (Haswell to Zen 3): runs wherever the host has AVX2
AVX2_HOST = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})
# x86 with SSSE3 and no AVX (Nehalem to Westmere, many Atoms): 128-bit multiply-adds
SSSE3_HOST = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v2"})
X86_PATHS = pytest.mark.parametrize(
    "target", [HOST, AVX2_HOST, SSSE3_HOST], ids=["host", "avx2", "ssse3"]
)
FEATURE = {"avx512-vnni": "avx512vnni", "avx2": "avx2", "ssse3": "ssse3"}  # what runs a path
CORTEX_A76 = tvm.target.Target(
    {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"}
)


def _host_has(feature: str) -> bool:
    return tvm.target.codegen.target_has_features(feature, HOST)


def _build(
    x_shape: tuple[int, ...],
    weight: np.ndarray,
    *,
    quantize: str = "none",
    gather: bool = False,
    weight_left: bool = False,
    target: tvm.target.Target | None = None,
):
    target = target or tvm.target.Target({"kind": "llvm"})
    executable = relax.build(
        _module(x_shape, weight, gather=gather, weight_left=weight_left),
        target=target,
        relax_pipeline=tvm_build.pipeline(target, quantize=quantize),
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
    vm, _ = _build((m, k), w)
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
    vm, executable = _build((64, 128), w, quantize="int8")
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    ref = x @ w
    # int8 with per-channel scales: about 0.5 % of the output's spread, not exact
    assert np.abs(got - ref).max() < 0.02 * np.abs(ref).max()
    assert not np.allclose(got, ref, atol=1e-5)  # really quantized, not fp32 in disguise
    # the library holds 32 KiB of int8 weights where the fp32 one holds 128 KiB
    _, fp32 = _build((64, 128), w)
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
    vm, _ = _build((6, 1, 32), experts, quantize="int8", gather=True)
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


# -- int8 arithmetic: VNNI, AVX2, aarch64 dot product ----------------------------------------------


def _int8_reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` as the VNNI kernels compute it: x per row and w per column in symmetric int8,
    products summed exactly in integers, then scaled back."""
    sx = np.abs(x).max(axis=-1, keepdims=True) / 127
    sw = np.abs(w).max(axis=-2, keepdims=True) / 127
    xq = np.clip(np.rint(x / sx), -127, 127).astype(np.int64)
    wq = np.clip(np.rint(w / sw), -127, 127).astype(np.int64)
    return (xq @ wq).astype(np.float32) * sx * sw


def test_the_int8_path_is_chosen_from_the_target_cpu() -> None:
    def isa(spec: dict[str, str]) -> str | None:
        found = tvm_build.int8_isa(tvm.target.Target({"kind": "llvm", **spec}))
        return found.name if found else None

    assert isa({"mcpu": "znver5"}) == isa({"mcpu": "sapphirerapids"}) == "avx512-vnni"
    assert isa({"mcpu": "haswell"}) == isa({"mcpu": "znver3"}) == isa({"mcpu": "x86-64-v3"})
    assert isa({"mcpu": "x86-64-v3"}) == "avx2"
    assert isa({"mcpu": "x86-64-v2"}) == isa({"mcpu": "nehalem"}) == "ssse3"  # 128-bit
    assert isa({"mcpu": "x86-64"}) is None  # SSE2 only: int8 weights, fp32 arithmetic
    arm = {"mtriple": "aarch64-linux-gnu"}
    assert isa(arm) is None and isa({**arm, "mcpu": "cortex-a72"}) is None  # Armv8.0
    assert isa({**arm, "mcpu": "cortex-a76"}) == isa({**arm, "mcpu": "neoverse-n1"})
    assert isa({**arm, "mcpu": "cortex-a76"}) == "neon-dotprod"
    assert tvm_build.has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "znver5"}))
    assert not tvm_build.has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))


SHAPES = [(64, 128, 256), (7, 130, 250), (1, 96, 200), (3, 64, 72)]


def _runs_here(target: tvm.target.Target) -> bool:
    isa = tvm_build.int8_isa(target)
    runs = isa is not None and _host_has(FEATURE[isa.name])
    assert runs or target is not HOST, "the host's own path runs on the host"
    return runs


@pytest.mark.slow
@X86_PATHS
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int8_matmul_multiplies_in_integers(
    target: tvm.target.Target, m: int, k: int, n: int
) -> None:
    """Where the CPU has an int8 dot product (VNNI, AVX2's or SSSE3's multiply-adds), the int8
    library really multiplies int8 by int8: its output is the integer reference (to fp32
    rounding), which differs from the fp32 product by ~1 %. A decode step (one row) and a few
    rows take their own one-row tiles."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((m, k), "float32"), rng.standard_normal((k, n), "float32")
    lowered = tvm_build.pipeline(target, quantize="int8")(_module((m, k), w))
    names = [gv.name_hint for gv in lowered.get_global_vars()]
    assert "offline_int8_matmul" in names and "offline_int8_quantize" in names
    if not _runs_here(target):
        return
    vm, _ = _build((m, k), w, quantize="int8", target=target)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, _int8_reference(x, w), rtol=1e-5, atol=1e-4)
    assert np.abs(got - x @ w).max() > 1e-3  # not fp32


def _int4_reference(x: np.ndarray, w: np.ndarray, isa: tvm_build.Int8Isa) -> np.ndarray:
    """``x @ w`` as the int4 kernels compute it: w as its 4-bit codes stand for it, x in int8
    per group of 32 (scale max |x| / 127), the products summed in float64."""
    k, n = w.shape
    decoded = tvm_build.unpack_int4(*tvm_build.pack_int4(w, isa), k, n, isa)
    groups = -(-k // tvm_build.GROUP)
    padded = np.zeros((x.shape[0], groups * tvm_build.GROUP))
    padded[:, :k] = x
    grouped = padded.reshape(x.shape[0], groups, tvm_build.GROUP)
    scale = np.abs(grouped).max(-1, keepdims=True) / 127
    scale = np.where(scale == 0, 1, scale)
    xq = (np.clip(np.rint(grouped / scale), -127, 127) * scale).reshape(x.shape[0], -1)[:, :k]
    return (xq @ decoded.astype(np.float64)).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 100),
    n=st.integers(1, 80),
    spread=st.floats(1e-3, 1e3),
    constant_columns=st.integers(0, 3),
    isa=st.sampled_from([tvm_build.VNNI, tvm_build.AVX2, tvm_build.SSSE3, tvm_build.DOTPROD]),
    seed=st.integers(0, 2**16),
)
def test_int4_codes_stand_for_the_weight_within_half_a_step(
    k: int, n: int, spread: float, constant_columns: int, isa: tvm_build.Int8Isa, seed: int
) -> None:
    """Every weight is within half a quantization step (plus fp16 rounding) of what its code
    stands for, in every layout; a column of one value is exact; the codes use 4 bits."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) * spread).astype(np.float32)
    w[:, :constant_columns] = np.float32(0.5)
    packed, scale, minimum = tvm_build.pack_int4(w, isa)
    assert packed.dtype == np.uint8 and scale.dtype == minimum.dtype == np.float16
    assert packed.size * 2 >= k * n and packed.size <= (k + 32) * (n + isa.width) / 2
    decoded = tvm_build.unpack_int4(packed, scale, minimum, k, n, isa)
    assert decoded.shape == (k, n)
    groups = -(-k // tvm_build.GROUP)
    step = np.repeat(scale.transpose(1, 0, 2).reshape(groups, -1), tvm_build.GROUP, axis=0)
    step = step[:k, :n].astype(np.float32)
    bound = step / 2 + np.abs(w) * 2e-3 + 1e-6  # fp16 scale and minimum
    assert (np.abs(decoded - w) <= bound).all()
    np.testing.assert_array_equal(decoded[:, :constant_columns], w[:, :constant_columns])


@pytest.mark.slow
@X86_PATHS
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int4_matmul_multiplies_codes_in_integers(
    target: tvm.target.Target, m: int, k: int, n: int
) -> None:
    """int4: the dense weight is stored as 4-bit codes (under a third of the int8 library's
    bytes for it) and multiplied in integers against per-group int8 activations: the output
    is the reference to fp32 rounding, on every x86 path and on one and a few rows."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((m, k), "float32"), rng.standard_normal((k, n), "float32")
    lowered = tvm_build.pipeline(target, quantize="int4")(_module((m, k), w))
    names = [gv.name_hint for gv in lowered.get_global_vars()]
    assert "offline_int4_matmul" in names and "offline_int4_quantize" in names
    assert "offline_int8_matmul" not in names
    if not _runs_here(target):
        return
    vm, _ = _build((m, k), w, quantize="int4", target=target)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    isa = tvm_build.int8_isa(target)
    ref = _int4_reference(x, w, isa)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4 * np.abs(ref).max())
    assert np.abs(got - _int8_reference(x, w)).max() > 1e-2  # not the int8 path


def test_int4_without_an_int8_dot_product_is_refused() -> None:
    """An x86 CPU before SSSE3 (or an Armv8.0 core) has no integer multiply-add to run the
    4-bit codes with: the build says so instead of shipping something slower than fp32."""
    mod = _module((2, 64), np.ones((64, 64), "float32"))
    for spec in ({"mcpu": "x86-64"}, {"mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"}):
        target = tvm.target.Target({"kind": "llvm", **spec})
        with pytest.raises(ValueError, match="int4 needs an int8 dot product"):
            tvm_build.pipeline(target, quantize="int4")(mod)


@pytest.mark.slow
def test_int8_and_int4_on_aarch64_dot_product_run_on_the_emulated_device(tmp_path: Path) -> None:
    """For an Armv8.2 CPU (cortex-a76) the libraries multiply with ``sdot``; the device's own
    Python and TVM runtime under qemu-aarch64 get the integer reference: int8 dense and
    experts, and int4 dense."""
    from tvm.support import cc as tvm_cc

    rng = np.random.default_rng(6)
    cases = []
    for i, (m, k, n) in enumerate(SHAPES[:3]):
        x, w = rng.standard_normal((m, k), "float32"), rng.standard_normal((k, n), "float32")
        cases.append((f"dense{i}", "int8", _module((m, k), w), [x], _int8_reference(x, w)))
        ref = _int4_reference(x, w, tvm_build.DOTPROD)
        cases.append((f"int4_dense{i}", "int4", _module((m, k), w), [x], ref))
    stack = rng.standard_normal((4, 64, 48), "float32")
    x = rng.standard_normal((6, 1, 64), "float32")
    idx = np.array([0, 3, 1, 1, 2, 0], dtype="int64")
    ref = np.stack([_int8_reference(x[b], stack[e]) for b, e in enumerate(idx)])
    cases.append(("experts", "int8", _module(x.shape, stack, gather=True), [x, idx], ref))
    for name, quantize, mod, args, ref in cases:
        pipeline = tvm_build.pipeline(CORTEX_A76, quantize=quantize)
        kernel = {"experts": "offline_int8_experts_matmul", "int4": "offline_int4_matmul"}.get(
            name if name == "experts" else quantize, "offline_int8_matmul"
        )
        assert kernel in [gv.name_hint for gv in pipeline(mod).get_global_vars()]
        executable = relax.build(mod, target=CORTEX_A76, relax_pipeline=pipeline)
        lib = tmp_path / f"{name}.so"
        executable.export_library(str(lib), fcompile=tvm_cc.cross_compiler("aarch64-linux-gnu-g++"))
        np.savez(tmp_path / f"{name}.npz", *args, ref=ref)
    script = tmp_path / "check.py"
    script.write_text(
        "import json, sys, numpy as np, tvm\n"
        "from tvm import relax\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    data = np.load(name + '.npz')\n"
        "    args = [tvm.runtime.tensor(data[f'arr_{i}']) for i in range(len(data) - 1)]\n"
        "    vm = relax.VirtualMachine(tvm.runtime.load_module(name + '.so'), tvm.cpu())\n"
        "    got = vm['main'](*args).numpy()\n"
        "    out[name] = float(np.abs(got - data['ref']).max() / np.abs(data['ref']).max())\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts/edge-aarch64.sh"), "python3", str(script)]
        + [name for name, *_ in cases],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = json.loads(proc.stdout.splitlines()[-1])
    assert set(errors) == {name for name, *_ in cases}
    assert max(errors.values()) < 1e-5, errors  # fp32 arithmetic would be ~1 % off


@pytest.mark.slow
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
    lowered = tvm_build.pipeline(HOST, quantize="int8")(mod)
    names = [gv.name_hint for gv in lowered.get_global_vars()]
    if tvm_build.int8_isa(HOST) is None:
        assert "offline_int8_experts_matmul" not in names
        return
    assert "offline_int8_experts_matmul" in names
    assert not [name for name in names if "take" in name]  # no fp32 copy of the experts
    vm, _ = _build(
        x_shape, stack, quantize="int8", gather=True, weight_left=weight_left, target=HOST
    )
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(idx)).numpy()
    if weight_left:  # y[b] = W[idx[b]] @ x[b]: the same as x[b].T @ W[idx[b]].T
        ref = np.stack([_int8_reference(x[b].T, stack[e].T) for b, e in enumerate(idx)])
        ref = ref.transpose(0, 2, 1)
    else:
        ref = np.stack([_int8_reference(x[b], stack[e]) for b, e in enumerate(idx)])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-4)
