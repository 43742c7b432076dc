"""The TVM CPU schedules and int8 weights: exact on awkward shapes, int8 stored as int8."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from offline.deploy import tvm_build

ROOT = Path(__file__).resolve().parents[2]
HOST = tvm.target.Target(
    {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()}  # as offline export does
)
# x86 with AVX2 and no AVX-512 (Haswell to Zen 3): runs wherever the host has AVX2
AVX2_HOST = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64-v3"})
CORTEX_A76 = tvm.target.Target(
    {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76"}
)


def _host_has(feature: str) -> bool:
    return tvm.target.codegen.target_has_features(feature, HOST)


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
    assert isa({"mcpu": "x86-64-v2"}) is None  # SSE only: int8 weights, fp32 arithmetic
    arm = {"mtriple": "aarch64-linux-gnu"}
    assert isa(arm) is None and isa({**arm, "mcpu": "cortex-a72"}) is None  # Armv8.0
    assert isa({**arm, "mcpu": "cortex-a76"}) == isa({**arm, "mcpu": "neoverse-n1"})
    assert isa({**arm, "mcpu": "cortex-a76"}) == "neon-dotprod"
    assert tvm_build.has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "znver5"}))
    assert not tvm_build.has_vnni(tvm.target.Target({"kind": "llvm", "mcpu": "haswell"}))


SHAPES = [(64, 128, 256), (7, 130, 250), (1, 96, 200), (3, 64, 72)]


@pytest.mark.parametrize("target", [HOST, AVX2_HOST], ids=["host", "avx2"])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_int8_matmul_multiplies_in_integers(
    target: tvm.target.Target, m: int, k: int, n: int
) -> None:
    """Where the CPU has an int8 dot product (VNNI, or AVX2's multiply-adds), the int8 library
    really multiplies int8 by int8: its output is the integer reference (to fp32 rounding),
    which differs from the fp32 product by ~1 %. A decode step (one row) and a few rows take
    their own one-row tiles."""
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((m, k), "float32"), rng.standard_normal((k, n), "float32")
    lowered = tvm_build.pipeline(target, int8=True)(_module((m, k), w))
    names = [gv.name_hint for gv in lowered.get_global_vars()]
    if tvm_build.int8_isa(target) is None:  # e.g. an x86 CPU before AVX2: fp32 arithmetic
        assert "offline_int8_matmul" not in names
        return
    assert "offline_int8_matmul" in names and "offline_int8_quantize" in names
    runs_here = _host_has("avx512vnni") if target is HOST else _host_has("avx2")
    assert runs_here or target is not HOST, "the host's own path runs on the host"
    if not runs_here:
        return
    vm, _ = _build((m, k), w, int8=True, target=target)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, _int8_reference(x, w), rtol=1e-5, atol=1e-4)
    assert np.abs(got - x @ w).max() > 1e-3  # not fp32


def test_int8_matmul_on_aarch64_dot_product_runs_on_the_emulated_device(tmp_path: Path) -> None:
    """For an Armv8.2 CPU (cortex-a76) the library multiplies with ``sdot``; the device's own
    Python and TVM runtime under qemu-aarch64 get the integer reference, dense and experts."""
    from tvm.support import cc as tvm_cc

    rng = np.random.default_rng(6)
    cases = []
    for i, (m, k, n) in enumerate(SHAPES[:3]):
        x, w = rng.standard_normal((m, k), "float32"), rng.standard_normal((k, n), "float32")
        cases.append((f"dense{i}", _module((m, k), w), [x], _int8_reference(x, w)))
    stack = rng.standard_normal((4, 64, 48), "float32")
    x = rng.standard_normal((6, 1, 64), "float32")
    idx = np.array([0, 3, 1, 1, 2, 0], dtype="int64")
    ref = np.stack([_int8_reference(x[b], stack[e]) for b, e in enumerate(idx)])
    cases.append(("experts", _module(x.shape, stack, gather=True), [x, idx], ref))
    for name, mod, args, ref in cases:
        lowered = tvm_build.pipeline(CORTEX_A76, int8=True)(mod)
        kernel = "offline_int8_experts_matmul" if name == "experts" else "offline_int8_matmul"
        assert kernel in [gv.name_hint for gv in lowered.get_global_vars()]
        executable = relax.build(
            mod, target=CORTEX_A76, relax_pipeline=tvm_build.pipeline(CORTEX_A76, int8=True)
        )
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
    if tvm_build.int8_isa(HOST) is None:
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
