"""CPU schedules for the TVM export: the default Relax CPU pipeline leaves every kernel as
plain scalar loops on one core, which runs a small transformer slower than eager PyTorch.

No tuning is done here (meta-schedule search takes hours on a small machine). Instead three
fixed rules, in the style of TVM's ``dlight`` GPU rules, cover what a transformer spends its
time in:

- ``Matmul``: every matmul / batch-matmul (and a fused decode or epilogue around it) is tiled
  into a register block of ``rows x 2 vectors``, the tile loops run in parallel, the columns
  are vectorised, and a weight decode (int8 -> fp32) is done once per column tile, not per
  multiply-add.
- dlight's own CPU ``GEMV`` and ``Reduction`` (softmax, norms).
- ``Elementwise``: anything else made only of spatial loops is parallelised and vectorised.

With int8, wherever the CPU has an int8 dot product (``int8_isa``: x86 with AVX-512 VNNI,
x86 with AVX2, aarch64 with the Armv8.2 dot product), the matmuls against constant weights
(dense layers and the gathered expert stacks of a mixture-of-experts layer) do their arithmetic
in integers: the activations are quantized per row, the weights are packed once at build time,
and the products are summed in int32 (``int8_matmuls``: ``vpdpbusd``; ``vpmaddubsw`` +
``vpmaddwd``; ``sdot``). Elsewhere (an Armv8.0 core, x86 before AVX2, embeddings) the weights
are stored as int8 and decoded to fp32 inside the kernel that reads them (``int8_weights``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from dataclasses import dataclass
from typing import Any

ROWS = 4  # rows of the register tile
VECTORS = 2  # vectors of columns in the register tile


def _lanes(target: Any, bits: int) -> int:
    from tvm.target.codegen import llvm_get_vector_width

    width = llvm_get_vector_width(target)
    return max((width if width > 0 else 128) // bits, 4)


def _extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _divisor(extent: int | None, wanted: int) -> int:
    """The largest factor of ``extent`` that is at most ``wanted`` (1 for a symbolic extent)."""
    if extent is None:
        return 1
    for factor in range(min(wanted, extent), 0, -1):
        if extent % factor == 0:
            return factor
    return 1


def rules() -> list[Any]:
    """The schedule rules, most specific first."""
    import tvm
    from tvm import s_tir, tirx
    from tvm.s_tir import dlight as dl
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

    class Matmul(CPUScheduleRule):  # type: ignore[misc]
        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            try:
                return self._apply(func, target)
            except Exception as exc:
                if os.environ.get("OFFLINE_TVM_SCHEDULE_DEBUG"):
                    print("Matmul rule skipped:", str(exc).splitlines()[-1][:300], file=sys.stderr)
                return None

        def _apply(self, func: Any, target: Any) -> Any:
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            sch = s_tir.Schedule(func)
            infos = dl.normalize_prim_func(sch)
            if infos is None:
                return None
            reductions = [i for i, b in enumerate(infos) if not b.is_injective()]
            if len(reductions) != 1:
                return None
            main = infos[reductions[0]]
            kind = main.dom_kind()
            # [batch..] M N K: at least one spatial axis, then reduction axes only
            if not kind or kind[0] != "S" or "S" in kind.lstrip("S").lstrip("R") or "O" in kind:
                return None
            spatial = len(kind) - len(kind.lstrip("S"))
            if spatial == len(kind) or len(main.read_bufs(sch)) < 2:
                return None
            block = main.block_rv
            producers = infos[: reductions[0]]
            consumers = infos[reductions[0] + 1 :]
            # producers are inlined into the matmul's reads, except an int8 decode that writes
            # a shared weight operand (a "head"), which is cached per column tile below
            operands = [r.source for r in sch.get(block).reads]
            heads = [
                info
                for info in producers
                if any(sch.get(info.block_rv).writes[0].source.same_as(b) for b in operands)
            ]
            decodes = []
            for info in producers:
                if info not in heads:
                    try:
                        sch.compute_inline(info.block_rv)
                    except Exception:
                        decodes.append(info)
            for info in consumers:
                with contextlib.suppress(Exception):
                    sch.reverse_compute_inline(info.block_rv)
            loops = sch.get_loops(block)
            if len(loops) != len(kind):
                return None
            if spatial > 1:
                batch, m, n = loops[: spatial - 2], loops[spatial - 2], loops[spatial - 1]
            else:
                batch, m, n = [], None, loops[0]
            reduce = loops[spatial:]
            k = sch.fuse(*reduce) if len(reduce) > 1 else reduce[0]
            dtype = sch.get(block).writes[0].source.dtype
            lanes = _lanes(target, tvm.DataType(dtype).bits if dtype != "bool" else 8)
            m_extent = _extent(sch, m) if m is not None else 1
            for info in heads:
                dtypes = {str(r.source.dtype) for r in sch.get(info.block_rv).reads}
                # a plain decode (no gather: the weight is shared by every row) is worth a cache
                if "int8" in dtypes and "int64" not in dtypes and (m_extent or 0) > ROWS:
                    decodes.append(info)  # decoded once per column tile, reused by every row
                    continue
                try:
                    sch.compute_inline(info.block_rv)
                except Exception:
                    decodes.append(info)
            n_extent = _extent(sch, n)
            vector = _divisor(n_extent, lanes * VECTORS)
            no, ni = sch.split(n, factors=[None, vector])
            rows = _divisor(_extent(sch, m), ROWS) if m is not None else 1
            if m is not None:
                mo, mi = sch.split(m, factors=[None, rows])
                sch.reorder(*batch, no, mo, k, mi, ni)
                outer = sch.fuse(*batch, no) if batch else no
                tile = [outer, mo]
            else:
                sch.reorder(*batch, no, k, ni)
                outer = sch.fuse(*batch, no) if batch else no
                tile = [outer]
            sch.parallel(outer)
            for info in decodes:
                try:
                    sch.compute_at(info.block_rv, outer, preserve_unit_loops=True)
                except Exception:
                    return None
            # loop kinds first: a decomposed update block is no longer a reduction block
            if m is not None:
                sch.unroll(mi)
            if vector > 1:
                sch.vectorize(ni)
            init = sch.decompose_reduction(block, k)
            init_inner = sch.get_loops(init)[-1]
            if vector > 1 and sch.get(init_inner).kind != tirx.ForKind.VECTORIZED:
                sch.vectorize(init_inner)
            placed = set()
            for info in consumers:  # what could not be inlined runs right after its tile
                try:
                    sch.reverse_compute_at(sch.get_sblock(info.name), tile[-1])
                    placed.add(info.name)
                except Exception:
                    pass
            skip = {main.name, *(d.name for d in decodes), *placed}
            _schedule_leftovers(sch, infos, lanes, skip=skip)
            return sch

    class Elementwise(CPUScheduleRule):  # type: ignore[misc]
        def apply(self, func: Any, target: Any, _tunable: bool) -> Any:
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            sch = s_tir.Schedule(func)
            infos = dl.normalize_prim_func(sch)
            if infos is None or not all(b.is_injective() for b in infos):
                return None
            infos = dl.try_inline(sch, infos)
            _schedule_leftovers(sch, infos, _lanes(target, 32), skip=set())
            return sch

    return [Matmul(), dl.cpu.Reduction(), Elementwise()]


def _schedule_leftovers(sch: Any, infos: list[Any], lanes: int, skip: set[str]) -> None:
    """Parallel outer loop and a vectorised inner loop for every spatial block still at the
    root (not inlined, not placed under a tile)."""
    from tvm import tirx

    for info in infos:
        if info.name in skip:
            continue
        try:
            block = sch.get_sblock(info.name)
        except Exception:
            continue
        loops = sch.get_loops(block)
        if not loops or not all(
            iv.iter_type == 0 for iv in sch.get(block).iter_vars
        ):  # DataPar only
            continue
        if any(sch.get(loop).kind != tirx.ForKind.SERIAL for loop in loops):
            continue
        inner = loops[-1]
        extent = _extent(sch, inner)
        if extent is not None and extent > 1:
            factor = _divisor(extent, lanes)
            if factor > 1:
                _, vec = sch.split(inner, factors=[None, factor])
                sch.vectorize(vec)
        loops = sch.get_loops(block)
        if len(loops) > 1:
            sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])


def pipeline(target: Any, *, quantize: str = "none") -> Any:
    """The Relax CPU pipeline: constants folded (weight transposes and the like), weights
    optionally stored as int8 (``quantize="int8"``) or, for the dense layers, as group-wise
    int4 (``"int4"``: needs an int8 dot product, ``int8_isa``), then legalised, fused and
    scheduled with ``rules()``."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
    from tvm.s_tir import dlight as dl

    legalize = [
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]

    @tvm.transform.module_pass(opt_level=0, name="OfflineCPUPipeline")  # type: ignore[untyped-decorator]
    def _pipeline(mod: Any, _ctx: Any) -> Any:
        with target:
            mod = relax.transform.FoldConstant()(mod)
            if quantize in ("int8", "int4"):
                isa = int8_isa(target)
                if isa is not None:
                    mod = int8_matmuls(mod, isa, bits=4 if quantize == "int4" else 8)
                elif quantize == "int4":
                    raise ValueError(f"int4 needs an int8 dot product, which {target} lacks")
                mod = int8_weights(mod)
            mod = fuse_weight_reads(mod)
            seq = tvm.transform.Sequential(
                cpu_generic.library_dispatch_passes(target)
                + legalize
                + [dl.ApplyDefaultSchedule(*rules())]
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline


# -- int8 weights ---------------------------------------------------------------------------------

MIN_QUANTIZED = 4096  # elements: norms, biases and other small tensors stay fp32


def quantize_weight(weight: Any) -> tuple[Any, Any]:
    """Symmetric int8 with one scale per channel, the channel axis (or, for a 3-D expert stack,
    the pair of axes) whose scales reconstruct ``weight`` best.

    Returns the int8 array and the fp32 scales, broadcastable against it.
    """
    import itertools

    import numpy as np

    ndim = weight.ndim
    candidates: list[tuple[int, ...]] = [(axis,) for axis in range(ndim)]
    if ndim >= 3:
        candidates += list(itertools.combinations(range(ndim), 2))
    best = None
    for keep in candidates:
        reduce = tuple(a for a in range(ndim) if a not in keep)
        scale = np.abs(weight).max(axis=reduce, keepdims=True) / 127.0
        scale = np.where(scale == 0, np.float32(1.0), scale).astype(np.float32)
        q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
        error = float(np.square(q.astype(np.float32) * scale - weight).mean())
        if best is None or error < best[0]:
            best = (error, q, scale)
    assert best is not None
    return best[1], best[2]


def int8_weights(mod: Any) -> Any:
    """Every large fp32 constant of ``mod`` stored as int8 plus per-channel scales and decoded
    in the graph (``astype`` then ``multiply``), which the ``Matmul`` rule turns into a decode
    per column tile. Run ``FoldConstant`` before this and never after it: folding would turn
    the decode back into fp32 constants."""
    import numpy as np
    from tvm import relax

    @relax.expr_functor.mutator
    class Decode(relax.PyExprMutator):  # type: ignore[misc]
        def visit_generic_const_(self, op: Any) -> Any:
            data = op.value.numpy() if hasattr(op.value, "numpy") else None
            if data is None:
                return op
            if data.dtype != np.float32 or data.ndim < 2 or data.size < MIN_QUANTIZED:
                return op
            q, scale = quantize_weight(data)
            decoded = relax.op.astype(relax.const(q), "float32")
            return self.builder_.emit(relax.op.multiply(decoded, relax.const(scale)))

    mutator = Decode(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()


# -- int8 arithmetic (x86 VNNI and AVX2, aarch64 dot product) -------------------------------------

PARALLEL_MIN = 1 << 16  # elements: a smaller quantize runs on one thread
TILE_ROWS = 4  # rows of the register tile, when there are that many


@dataclass(frozen=True)
class Int8Isa:
    """One instruction path for int8 x int8 -> int32 multiply-adds.

    Every path sums 4 consecutive k of a column into one int32 lane, so the packed layout
    (``pack_int8``) is the same apart from the width of a vector and the weights' sign.
    """

    name: str
    lanes: int  # int32 lanes of one accumulator vector
    vectors: int  # accumulators per row of the register tile
    unsigned: bool  # weights stored as q + 128 (the operand vpdpbusd takes unsigned)
    instruction: str  # what the bench and the card print

    @property
    def width(self) -> int:
        return self.lanes * self.vectors


VNNI = Int8Isa("avx512-vnni", 16, 2, True, "vpdpbusd (AVX-512 VNNI)")
AVX2 = Int8Isa("avx2", 8, 2, False, "vpmaddubsw + vpmaddwd (AVX2)")
SSSE3 = Int8Isa("ssse3", 4, 2, False, "pmaddubsw + pmaddwd (SSSE3, 128-bit)")
DOTPROD = Int8Isa("neon-dotprod", 4, 4, False, "sdot (Armv8.2 dot product)")


def int8_isa(target: Any) -> Int8Isa | None:
    """The int8 path ``target``'s CPU has, best first; None: int8 weights decoded to fp32."""
    from tvm.target.codegen import target_has_features

    if target.kind.name != "llvm":
        return None
    triple = str(target.attrs.get("mtriple", "x86_64"))

    def has(feature: str) -> bool:
        try:
            return bool(target_has_features(feature, target))
        except Exception:
            return False

    if triple.startswith("aarch64"):
        return DOTPROD if has("dotprod") else None
    if "x86" not in triple:
        return None
    if has("avx512vnni"):
        return VNNI
    if has("avx2"):
        return AVX2
    return SSSE3 if has("ssse3") else None


def has_vnni(target: Any) -> bool:
    """Whether ``target`` is an x86 CPU with AVX-512 VNNI (``vpdpbusd``: 64 u8 x s8 products
    summed into 16 int32 lanes per instruction)."""
    return int8_isa(target) is VNNI


def pack_int8(weight: Any, isa: Int8Isa) -> tuple[Any, Any]:
    """A ``[K, N]`` fp32 weight as int8 with one scale per output column, laid out for
    ``isa``'s 4-way dot product: ``[column tiles, K/4, width columns x 4 k]``, zero-padded to
    whole tiles.

    On VNNI the weight is stored as unsigned bytes (``q + 128``): the extra ``128 * sum(x)``
    of each row is removed with the row sum that ``quantize`` writes. Returns the packed
    weight and the column scales.
    """
    import numpy as np

    k, n = weight.shape
    scale = np.abs(weight).max(axis=0) / 127.0
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    q = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    k4, width = -(-k // 4), isa.width
    tiles = -(-n // width)
    offset = 128 if isa.unsigned else 0
    padded = np.full((k4 * 4, tiles * width), offset, np.int16)  # padding: a zero weight
    padded[:k, :n] = q.astype(np.int16) + offset
    padded = padded.astype(np.uint8 if isa.unsigned else np.int8)
    packed = padded.reshape(k4, 4, tiles, width).transpose(2, 0, 3, 1).reshape(tiles, k4, width * 4)
    scales = np.ones(tiles * width, np.float32)
    scales[:n] = scale
    return np.ascontiguousarray(packed), scales


def pack_vnni(weight: Any) -> tuple[Any, Any]:
    """``pack_int8`` for VNNI."""
    return pack_int8(weight, VNNI)


# x86 paths without vpdpbusd: (sign, u8 x s8 pairs -> int16, int16 pairs -> int32)
X86_INTRINSICS = {
    "avx2": ("llvm.x86.avx2.psign.b", "llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
    "ssse3": (
        "llvm.x86.ssse3.psign.b.128",
        "llvm.x86.ssse3.pmadd.ub.sw.128",
        "llvm.x86.sse2.pmadd.wd",
    ),
}


def _madd_u8(isa: Int8Isa) -> Any:
    """``acc`` + per int32 lane: 4 unsigned bytes of ``u`` . 4 signed bytes of ``s``, on the x86
    paths without VNNI: ``pmaddubsw`` (pairs into int16: at most 2 x 255 x 127, which the
    callers keep below int16's limit) then ``pmaddwd`` by ones (pairs of pairs into int32)."""
    from tvm.script import tirx as T

    if isa.name not in X86_INTRINSICS:
        return None
    _, pairs_intrin, quads_intrin = X86_INTRINSICS[isa.name]
    acc_t, pairs_t = f"int32x{isa.lanes}", f"int16x{isa.lanes * 2}"

    def madd(acc: Any, u: Any, s: Any) -> Any:
        pairs = T.call_llvm_pure_intrin(pairs_t, pairs_intrin, u, s)
        ones = T.broadcast(T.int16(1), isa.lanes * 2)
        return acc + T.call_llvm_pure_intrin(acc_t, quads_intrin, pairs, ones)

    return madd


@functools.cache
def int8_kernels(isa: Int8Isa) -> tuple[Any, Any, Any]:
    """The int8 kernels for ``isa``, one of each whatever the shapes (sizes are read from the
    buffers, so a model's many projections share one copy of the code):

    - ``quantize``: each row of ``x[m, k]`` gets its own scale (max |x| / 127) and is stored as
      int8, zero-padded to a multiple of 4, with 128 x its sum on VNNI (see ``pack_int8``);
    - ``matmul``: those rows times a ``pack_int8`` weight in ``TILE_ROWS x width``-column
      register tiles of int32 accumulators (one row per tile when there are fewer rows: a
      decode step), rescaled to fp32;
    - ``experts_matmul``: row ``b`` times expert ``idx[b]`` of a stack of packed weights, read
      in place (a mixture-of-experts layer, one row per token and routed expert).

    The dot product of 4 k into each int32 lane: ``vpdpbusd`` on VNNI; on AVX2 as llama.cpp
    does it, ``vpmaddubsw`` of |x| and the weights with x's sign (pairs into int16, at most
    2 x 127 x 127: no saturation), then ``vpmaddwd`` by ones (into int32); ``sdot`` on aarch64.
    """
    from tvm.script import tirx as T

    madd_u8 = _madd_u8(isa)
    lanes, width = isa.lanes, isa.width
    nbytes = lanes * 4  # weight bytes of one vector: lanes columns x 4 k
    wdtype = "uint8" if isa.unsigned else "int8"
    wvec = f"{wdtype}x{nbytes}"
    avec = f"int8x{nbytes}"
    acc_t = f"int32x{lanes}"
    offset = 128 if isa.unsigned else 0
    experts_vectors = 4  # one row per task, four accumulators keep the pipeline busy
    attrs = {"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8}

    # fmt: off
    def to_int8(value: Any, scale: Any) -> Any:
        return T.Cast("int8", T.max(T.min(T.Cast("int32", T.nearbyint(value / scale)), 127), -127))

    def dot(acc: Any, weights: Any, a: Any) -> Any:
        """acc + per lane: 4 weight bytes . the 4 activation bytes ``a`` (an int32)."""
        x = T.reinterpret(avec, T.broadcast(a, lanes))
        if isa is VNNI:
            return T.call_llvm_pure_intrin(acc_t, "llvm.x86.avx512.vpdpbusd.512", acc, weights, x)
        if isa in (AVX2, SSSE3):
            sign = X86_INTRINSICS[isa.name][0]
            magnitude = T.call_llvm_pure_intrin(avec, sign, x, x)
            signed = T.call_llvm_pure_intrin(avec, sign, weights, x)
            return madd_u8(acc, magnitude, signed)
        return T.call_llvm_pure_intrin(
            acc_t, "llvm.aarch64.neon.sdot.v4i32.v16i8", acc, weights, x
        )

    @T.macro  # type: ignore[untyped-decorator]
    def quantize_row(
        x: T.Buffer, q: T.Buffer, s: T.Buffer, r: T.Buffer, i: T.int64, k: T.int64, kp: T.int64
    ) -> None:
        body = k // 16 * 16
        peak = T.alloc_buffer((16,), "float32", scope="local")
        for lane in T.vectorized(16):
            peak[lane] = T.float32(0)
        for c in range(k // 16):
            for lane in T.vectorized(16):
                peak[lane] = T.max(peak[lane], T.fabs(x[i, c * 16 + lane]))
        for t in range(k - body):
            peak[0] = T.max(peak[0], T.fabs(x[i, body + t]))
        for lane in range(1, 16):
            peak[0] = T.max(peak[0], peak[lane])
        s[i] = T.if_then_else(peak[0] > T.float32(0), peak[0] / T.float32(127), T.float32(1))
        for c in range(k // 16):
            for lane in T.vectorized(16):
                q[i, c * 16 + lane] = to_int8(x[i, c * 16 + lane], s[i])
        for t in range(kp - body):  # the tail, then zeros up to a multiple of 4
            q[i, body + t] = T.if_then_else(
                body + t < k, to_int8(x[i, T.min(body + t, k - 1)], s[i]), T.int8(0)
            )
        total = T.alloc_buffer((1,), "int32", scope="local")
        total[0] = 0
        for c in range(kp):
            total[0] = total[0] + T.Cast("int32", q[i, c])
        r[i] = total[0] * offset

    @T.prim_func(private=True, s_tir=True)  # type: ignore[untyped-decorator]
    def quantize(var_x: T.handle, var_q: T.handle, var_s: T.handle, var_r: T.handle) -> None:
        T.func_attr(attrs)
        m, k, kp = T.int64(), T.int64(), T.int64()
        x = T.match_buffer(var_x, (m, k), "float32")
        q = T.match_buffer(var_q, (m, kp), "int8")
        s = T.match_buffer(var_s, (m,), "float32")
        r = T.match_buffer(var_r, (m,), "int32")
        with T.sblock("root"):
            if m * k >= PARALLEL_MIN:
                for i in T.parallel(m):
                    quantize_row(x, q, s, r, i, k, kp)
            else:  # waking the thread pool costs more than this
                for i in range(m):
                    quantize_row(x, q, s, r, i, k, kp)

    @T.macro  # type: ignore[untyped-decorator]
    def tile(
        q: T.Buffer, s: T.Buffer, r: T.Buffer, w: T.Buffer, ws: T.Buffer, y: T.Buffer,
        t: T.int64, m: T.int64, n: T.int64, tiles: T.int64, k4: T.int64, rows: T.int64,
    ) -> None:
        i0 = t // tiles * rows  # the tile's first row and column
        j0 = t % tiles * width
        acc = T.alloc_buffer((rows, isa.vectors, lanes), "int32", scope="local")
        for row in T.unroll(rows):
            for v in T.unroll(isa.vectors):
                acc[row, v, T.ramp(0, 1, lanes)] = T.broadcast(0, lanes)
        for kk in range(k4):
            for row in T.unroll(rows):
                i = T.min(i0 + row, m - 1)  # rows past the end repeat the last one
                a = T.reinterpret("int32", q.vload([i, kk * 4], "int8x4"))
                for v in T.unroll(isa.vectors):
                    wv = w.vload([t % tiles, kk, v * nbytes], wvec)
                    acc[row, v, T.ramp(0, 1, lanes)] = dot(acc[row, v, T.ramp(0, 1, lanes)], wv, a)
        for row in T.unroll(rows):
            if i0 + row < m:
                for v in T.unroll(isa.vectors):
                    j = j0 + v * lanes
                    if j + lanes <= n:  # a whole vector
                        for lane in T.vectorized(lanes):
                            y[i0 + row, j + lane] = T.Cast(
                                "float32", acc[row, v, lane] - r[i0 + row]
                            ) * s[i0 + row] * ws[j + lane]
                    else:  # the last columns
                        for lane in range(lanes):
                            if j + lane < n:
                                y[i0 + row, j + lane] = T.Cast(
                                    "float32", acc[row, v, lane] - r[i0 + row]
                                ) * s[i0 + row] * ws[j + lane]

    @T.prim_func(private=True, s_tir=True)  # type: ignore[untyped-decorator]
    def matmul(
        var_q: T.handle, var_s: T.handle, var_r: T.handle,
        var_w: T.handle, var_ws: T.handle, var_y: T.handle,
    ) -> None:
        T.func_attr(attrs)
        m, kp, tiles, k4, n = T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
        q = T.match_buffer(var_q, (m, kp), "int8")
        s = T.match_buffer(var_s, (m,), "float32")
        r = T.match_buffer(var_r, (m,), "int32")
        w = T.match_buffer(var_w, (tiles, k4, width * 4), wdtype)
        ws = T.match_buffer(var_ws, (tiles * width,), "float32")
        y = T.match_buffer(var_y, (m, n), "float32")
        with T.sblock("root"):
            if m < TILE_ROWS:  # a decode step: one row per tile, no repeated rows
                for t in T.parallel(tiles * m):
                    tile(q, s, r, w, ws, y, t, m, n, tiles, k4, 1)
            else:
                for t in T.parallel(tiles * ((m + TILE_ROWS - 1) // TILE_ROWS)):
                    tile(q, s, r, w, ws, y, t, m, n, tiles, k4, TILE_ROWS)

    @T.prim_func(private=True, s_tir=True)  # type: ignore[untyped-decorator]
    def experts_matmul(
        var_q: T.handle, var_s: T.handle, var_r: T.handle, var_idx: T.handle,
        var_w: T.handle, var_ws: T.handle, var_y: T.handle,
    ) -> None:
        T.func_attr(attrs)
        m, kp, experts, tiles, k4 = T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
        n = T.int64()
        q = T.match_buffer(var_q, (m, kp), "int8")
        s = T.match_buffer(var_s, (m,), "float32")
        r = T.match_buffer(var_r, (m,), "int32")
        idx = T.match_buffer(var_idx, (m,), "int64")
        w = T.match_buffer(var_w, (experts, tiles, k4, width * 4), wdtype)
        ws = T.match_buffer(var_ws, (experts, tiles * width), "float32")
        y = T.match_buffer(var_y, (m, n), "float32")
        with T.sblock("root"):
            for b in T.parallel(m):
                e = T.min(T.max(idx[b], T.int64(0)), experts - 1)  # a bad index: no stray read
                for jt in range((tiles * isa.vectors + experts_vectors - 1) // experts_vectors):
                    acc = T.alloc_buffer((1, experts_vectors, lanes), "int32", scope="local")
                    for v in T.unroll(experts_vectors):
                        acc[0, v, T.ramp(0, 1, lanes)] = T.broadcast(0, lanes)
                    for kk in range(k4):
                        a = T.reinterpret("int32", q.vload([b, kk * 4], "int8x4"))
                        for v in T.unroll(experts_vectors):
                            c = jt * experts_vectors + v  # the column vector
                            if c < tiles * isa.vectors:
                                at = c % isa.vectors * nbytes
                                wv = w.vload([e, c // isa.vectors, kk, at], wvec)
                                acc[0, v, T.ramp(0, 1, lanes)] = dot(
                                    acc[0, v, T.ramp(0, 1, lanes)], wv, a
                                )
                    for v in T.unroll(experts_vectors):
                        for lane in range(lanes):
                            j = (jt * experts_vectors + v) * lanes + lane
                            if j < n:
                                total = T.Cast("float32", acc[0, v, lane] - r[b])
                                y[b, j] = total * s[b] * ws[e, j]
    # fmt: on
    return quantize, matmul, experts_matmul


# -- int4 weights, group-wise, with int8 activations -----------------------------------------------

GROUP = 32  # k per group: one scale and one minimum per group and column, as GGUF's Q4_1


def pack_int4(weight: Any, isa: Int8Isa) -> tuple[Any, Any, Any]:
    """A ``[K, N]`` fp32 weight as 4-bit codes, asymmetric per group of ``GROUP`` k and column
    (``w = d * q + m``, q in 0..15, d and m in fp16), laid out for ``isa``'s 4-way dot product:
    two vectors of a tile share each byte, the first in its low nibble and the second in its
    high one, so ``[column tiles, K/4, width columns x 4 k / 2]`` bytes. K is zero-padded to
    whole groups (the activations there are zero too) and N to whole tiles.

    Returns the packed codes and the scales and minimums, ``[column tiles, groups, width]``.
    """
    import numpy as np

    k, n = weight.shape
    groups, width = -(-k // GROUP), isa.width
    tiles = -(-n // width)
    padded = np.full((groups * GROUP, tiles * width), np.nan, np.float32)
    padded[:k, :n] = weight
    padded[:, n:] = 0
    real = padded.reshape(groups, GROUP, tiles * width)
    low, high = np.nanmin(real, axis=1), np.nanmax(real, axis=1)  # the real k only
    grouped = np.nan_to_num(real, nan=0.0)
    minimum = low.astype(np.float16)
    scale = ((high - minimum.astype(np.float32)) / 15).astype(np.float16)
    scale = np.where(scale == 0, np.float16(1), scale)  # a constant group: every code 0
    codes = np.rint(
        (grouped - minimum.astype(np.float32)[:, None]) / scale.astype(np.float32)[:, None]
    )
    codes = np.clip(codes, 0, 15).astype(np.uint8).reshape(groups * GROUP, tiles * width)
    k4, nbytes = groups * GROUP // 4, isa.lanes * 4
    # [k4, 4 k, tiles, vectors, lanes] -> [tiles, k4, vectors, lanes x 4 k]
    split = codes.reshape(k4, 4, tiles, isa.vectors, isa.lanes).transpose(2, 0, 3, 4, 1)
    split = split.reshape(tiles, k4, isa.vectors, nbytes)
    packed = split[:, :, 0::2] | (split[:, :, 1::2] << 4)
    packed = packed.reshape(tiles, k4, isa.vectors // 2 * nbytes)

    def per_tile(a: Any) -> Any:
        return np.ascontiguousarray(a.reshape(groups, tiles, width).transpose(1, 0, 2))

    return np.ascontiguousarray(packed), per_tile(scale), per_tile(minimum)


def unpack_int4(packed: Any, scale: Any, minimum: Any, k: int, n: int, isa: Int8Isa) -> Any:
    """The fp32 ``[k, n]`` weight that ``pack_int4``'s output stands for."""
    import numpy as np

    tiles, k4, _ = packed.shape
    nbytes = isa.lanes * 4
    pairs = packed.reshape(tiles, k4, isa.vectors // 2, nbytes)
    split = np.empty((tiles, k4, isa.vectors, nbytes), np.uint8)
    split[:, :, 0::2], split[:, :, 1::2] = pairs & 15, pairs >> 4
    codes = split.reshape(tiles, k4, isa.vectors, isa.lanes, 4).transpose(1, 4, 0, 2, 3)
    codes = codes.reshape(k4 * 4, tiles * isa.width).astype(np.float32)
    groups = scale.shape[1]

    def per_k(a: Any) -> Any:
        full = a.astype(np.float32).transpose(1, 0, 2).reshape(groups, 1, tiles * isa.width)
        return np.broadcast_to(full, (groups, GROUP, tiles * isa.width)).reshape(k4 * 4, -1)

    return (codes * per_k(scale) + per_k(minimum))[:k, :n]


@functools.cache
def int4_kernels(isa: Int8Isa) -> tuple[Any, Any]:
    """The int4 kernels for ``isa`` (sizes read from the buffers, as ``int8_kernels``):

    - ``quantize``: each group of ``GROUP`` values of each row of ``x[m, k]`` as int8 with its
      own scale (max |x| / 127: a finer grain than int8's per row, as GGUF's Q8_1 blocks) and
      the sum of its codes (for the weights' minimum), zero-padded to whole groups;
    - ``matmul``: those rows times a ``pack_int4`` weight: per group, the 4-bit codes are split
      from their bytes (and, shift) and summed against the activation codes in int32 with
      ``isa``'s dot product (codes are 0..15, so the unsigned operand of ``vpdpbusd`` and
      ``pmaddubsw`` takes them as they are: no sign trick), then added to an fp32 accumulator
      as ``d * s * sum + m * s * sum(codes)``.
    """
    from tvm.script import tirx as T

    madd_u8 = _madd_u8(isa)
    lanes, width, vectors = isa.lanes, isa.width, isa.vectors
    nbytes = lanes * 4
    wvec, avec, acc_t = f"uint8x{nbytes}", f"int8x{nbytes}", f"int32x{lanes}"
    f32, f16 = f"float32x{lanes}", f"float16x{lanes}"
    steps = GROUP // 4  # 4-k dot products per group
    attrs = {"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8}

    def dot(acc: Any, codes: Any, a: Any) -> Any:
        """acc + per lane: 4 codes (0..15, one per byte) . the 4 activation bytes ``a``."""
        x = T.reinterpret(avec, T.broadcast(a, lanes))
        if isa is VNNI:
            return T.call_llvm_pure_intrin(acc_t, "llvm.x86.avx512.vpdpbusd.512", acc, codes, x)
        if madd_u8 is not None:  # pairs: at most 2 x 15 x 127
            return madd_u8(acc, codes, x)
        return T.call_llvm_pure_intrin(
            acc_t, "llvm.aarch64.neon.sdot.v4i32.v16i8", acc, T.reinterpret(avec, codes), x
        )

    # fmt: off
    @T.macro  # type: ignore[untyped-decorator]
    def quantize_row(
        x: T.Buffer, q: T.Buffer, s: T.Buffer, r: T.Buffer, i: T.int64, k: T.int64,
        groups: T.int64,
    ) -> None:
        for g in range(groups):
            peak = T.alloc_buffer((1,), "float32", scope="local")
            peak[0] = T.float32(0)
            for c in range(GROUP):
                if g * GROUP + c < k:
                    peak[0] = T.max(peak[0], T.fabs(x[i, g * GROUP + c]))
            scale = T.if_then_else(peak[0] > T.float32(0), peak[0] / T.float32(127), T.float32(1))
            s[i, g] = scale
            total = T.alloc_buffer((1,), "int32", scope="local")
            total[0] = 0
            for c in range(GROUP):
                code = T.if_then_else(
                    g * GROUP + c < k,
                    T.max(T.min(T.Cast("int32", T.nearbyint(
                        x[i, T.min(g * GROUP + c, k - 1)] / scale)), 127), -127),
                    0,
                )
                q[i, g * GROUP + c] = T.Cast("int8", code)
                total[0] = total[0] + code
            r[i, g] = total[0]

    @T.prim_func(private=True, s_tir=True)  # type: ignore[untyped-decorator]
    def quantize(var_x: T.handle, var_q: T.handle, var_s: T.handle, var_r: T.handle) -> None:
        T.func_attr(attrs)
        m, k, kp, groups = T.int64(), T.int64(), T.int64(), T.int64()
        x = T.match_buffer(var_x, (m, k), "float32")
        q = T.match_buffer(var_q, (m, kp), "int8")
        s = T.match_buffer(var_s, (m, groups), "float32")
        r = T.match_buffer(var_r, (m, groups), "int32")
        with T.sblock("root"):
            if m * k >= PARALLEL_MIN:
                for i in T.parallel(m):
                    quantize_row(x, q, s, r, i, k, groups)
            else:
                for i in range(m):
                    quantize_row(x, q, s, r, i, k, groups)

    @T.macro  # type: ignore[untyped-decorator]
    def tile(
        q: T.Buffer, s: T.Buffer, r: T.Buffer, w: T.Buffer, wd: T.Buffer, wm: T.Buffer,
        y: T.Buffer, t: T.int64, m: T.int64, n: T.int64, tiles: T.int64, groups: T.int64,
        rows: T.int64,
    ) -> None:
        i0 = t // tiles * rows
        tt = t % tiles
        j0 = tt * width
        acc = T.alloc_buffer((rows, vectors, lanes), "float32", scope="local")
        part = T.alloc_buffer((rows, vectors, lanes), "int32", scope="local")
        for row in T.unroll(rows):
            for v in T.unroll(vectors):
                acc[row, v, T.ramp(0, 1, lanes)] = T.broadcast(T.float32(0), lanes)
        for g in range(groups):
            for row in T.unroll(rows):
                for v in T.unroll(vectors):
                    part[row, v, T.ramp(0, 1, lanes)] = T.broadcast(0, lanes)
            for step in T.unroll(steps):
                kk = g * steps + step
                for row in T.unroll(rows):
                    i = T.min(i0 + row, m - 1)
                    a = T.reinterpret("int32", q.vload([i, kk * 4], "int8x4"))
                    for p in T.unroll(vectors // 2):
                        both = w.vload([tt, kk, p * nbytes], wvec)
                        low = T.bitwise_and(both, T.broadcast(T.uint8(15), nbytes))
                        high = T.shift_right(both, T.broadcast(T.uint8(4), nbytes))
                        part[row, 2 * p, T.ramp(0, 1, lanes)] = dot(
                            part[row, 2 * p, T.ramp(0, 1, lanes)], low, a
                        )
                        part[row, 2 * p + 1, T.ramp(0, 1, lanes)] = dot(
                            part[row, 2 * p + 1, T.ramp(0, 1, lanes)], high, a
                        )
            for row in T.unroll(rows):
                i = T.min(i0 + row, m - 1)
                sx = T.broadcast(s[i, g], lanes)
                sr = T.broadcast(s[i, g] * T.Cast("float32", r[i, g]), lanes)
                for v in T.unroll(vectors):
                    d = T.Cast(f32, wd.vload([tt, g, v * lanes], f16))
                    mn = T.Cast(f32, wm.vload([tt, g, v * lanes], f16))
                    acc[row, v, T.ramp(0, 1, lanes)] = (
                        acc[row, v, T.ramp(0, 1, lanes)]
                        + T.Cast(f32, part[row, v, T.ramp(0, 1, lanes)]) * d * sx
                        + mn * sr
                    )
        for row in T.unroll(rows):
            if i0 + row < m:
                for v in T.unroll(vectors):
                    j = j0 + v * lanes
                    if j + lanes <= n:
                        for lane in T.vectorized(lanes):
                            y[i0 + row, j + lane] = acc[row, v, lane]
                    else:
                        for lane in range(lanes):
                            if j + lane < n:
                                y[i0 + row, j + lane] = acc[row, v, lane]

    @T.prim_func(private=True, s_tir=True)  # type: ignore[untyped-decorator]
    def matmul(
        var_q: T.handle, var_s: T.handle, var_r: T.handle,
        var_w: T.handle, var_wd: T.handle, var_wm: T.handle, var_y: T.handle,
    ) -> None:
        T.func_attr(attrs)
        m, kp, groups, tiles, k4 = T.int64(), T.int64(), T.int64(), T.int64(), T.int64()
        n = T.int64()
        q = T.match_buffer(var_q, (m, kp), "int8")
        s = T.match_buffer(var_s, (m, groups), "float32")
        r = T.match_buffer(var_r, (m, groups), "int32")
        w = T.match_buffer(var_w, (tiles, k4, width * 2), "uint8")
        wd = T.match_buffer(var_wd, (tiles, groups, width), "float16")
        wm = T.match_buffer(var_wm, (tiles, groups, width), "float16")
        y = T.match_buffer(var_y, (m, n), "float32")
        with T.sblock("root"):
            if m < TILE_ROWS:
                for t in T.parallel(tiles * m):
                    tile(q, s, r, w, wd, wm, y, t, m, n, tiles, groups, 1)
            else:
                for t in T.parallel(tiles * ((m + TILE_ROWS - 1) // TILE_ROWS)):
                    tile(q, s, r, w, wd, wm, y, t, m, n, tiles, groups, TILE_ROWS)
    # fmt: on
    return quantize, matmul


def int8_matmuls(mod: Any, isa: Int8Isa = VNNI, bits: int = 8) -> Any:
    """Every ``x @ W`` with a large fp32 constant ``W[K, N]`` computed in int8 with ``isa``: the
    weight packed by ``pack_int8``, each row of ``x`` quantized on the fly (per-row scale),
    int32 accumulation, fp32 out. With ``bits=4`` the dense weights are ``pack_int4`` codes
    instead, against activations quantized per group (``int4_kernels``); expert stacks stay
    int8. Run after ``FoldConstant`` (which turns ``x @ W.T`` into a constant ``[K, N]``) and
    before ``int8_weights``, which takes the constants left over."""
    import numpy as np
    import tvm
    from tvm import relax, tirx

    matmul_op = tvm.ir.Op.get("relax.matmul")
    take_op = tvm.ir.Op.get("relax.take")

    @relax.expr_functor.mutator
    class Rewrite(relax.PyExprMutator):  # type: ignore[misc]
        # activations already quantized in this block: (x, bits) -> its bytes and scales;
        # the projections that read the same x (q/kv, gate/up) share one quantize
        quantized: list[tuple[Any, int, Any]]

        def __init__(self, mod: Any) -> None:
            super().__init__(mod)
            self.quantized = []

        def visit_dataflow_block_(self, block: Any) -> Any:
            self.quantized = []
            result = super().visit_dataflow_block_(block)
            self.quantized = []
            return result

        def _quantize(self, x: Any, rows: Any, k: int, grouped: bool = False) -> Any:
            for seen, seen_grouped, q in self.quantized:
                if seen.same_as(x) and seen_grouped == grouped:
                    return q
            bb = self.builder_
            flat = bb.emit(relax.op.reshape(x, [rows, k]))
            if grouped:  # per group of GROUP k, for the int4 weights
                groups = -(-k // GROUP)
                func = bb.add_func(int4_kernels(isa)[0], "offline_int4_quantize")
                outputs = [
                    relax.TensorType([rows, groups * GROUP], "int8"),
                    relax.TensorType([rows, groups], "float32"),
                    relax.TensorType([rows, groups], "int32"),
                ]
            else:
                func = bb.add_func(int8_kernels(isa)[0], "offline_int8_quantize")
                outputs = [
                    relax.TensorType([rows, -(-k // 4) * 4], "int8"),
                    relax.TensorType([rows], "float32"),
                    relax.TensorType([rows], "int32"),
                ]
            q = bb.emit(relax.call_tir(func, [flat], outputs))
            self.quantized.append((x, grouped, q))
            return q

        def _experts(self, call: Any) -> Any:
            """``take(W, idx) @ x`` (or ``x @ take(W, idx)``), one row per (token, expert)."""
            a, b = call.args
            for gathered, x, weight_left in ((a, b, True), (b, a, False)):
                if not isinstance(gathered, relax.Var):
                    continue
                take = self.lookup_binding(gathered)
                if (
                    take is None
                    or not isinstance(take, relax.Call)
                    or not take.op.same_as(take_op)
                    or int(take.attrs.axis) != 0
                    or not isinstance(take.args[0], tvm.ir.expr.Constant)
                ):
                    continue
                data = take.args[0].value.numpy()
                idx, info = take.args[1], x.ty
                if (
                    data.dtype != np.float32
                    or data.ndim != 3
                    or data.size < MIN_QUANTIZED
                    or getattr(info, "dtype", None) != "float32"
                    or getattr(idx.ty, "dtype", None) != "int64"
                    or getattr(idx.ty, "ndim", None) != 1
                    or info.ndim != 3
                    or not isinstance(info.shape, relax.ShapeExpr)
                ):
                    continue
                rows, first, last = info.shape.values
                # weight left: W[e] is [N, K] and x is [rows, K, 1]; right: x [rows, 1, K]
                one, k = (last, first) if weight_left else (first, last)
                stack = data.transpose(0, 2, 1) if weight_left else data
                if not (isinstance(one, tirx.IntImm) and int(one) == 1):
                    continue
                if not isinstance(k, tirx.IntImm) or int(k) != stack.shape[1]:
                    continue
                k, n = stack.shape[1:]
                packs = [pack_int8(expert, isa) for expert in stack]
                bb = self.builder_
                q = self._quantize(x, rows, k)
                y = bb.emit(
                    relax.call_tir(
                        bb.add_func(int8_kernels(isa)[2], "offline_int8_experts_matmul"),
                        [
                            *(relax.TupleGetItem(q, i) for i in range(3)),
                            idx,
                            relax.const(np.stack([p[0] for p in packs])),
                            relax.const(np.stack([p[1] for p in packs])),
                        ],
                        relax.TensorType([rows, n], "float32"),
                    )
                )
                return relax.op.reshape(y, [rows, n, 1] if weight_left else [rows, 1, n])
            return None

        def visit_call_(self, op: Any) -> Any:
            call = super().visit_call_(op)
            if not call.op.same_as(matmul_op) or len(call.args) != 2:
                return call
            experts = self._experts(call)
            if experts is not None:
                return experts
            x, w = call.args
            if not isinstance(w, tvm.ir.expr.Constant) or not hasattr(w.value, "numpy"):
                return call
            data = w.value.numpy()
            info, out = x.ty, call.ty
            if (
                data.dtype != np.float32
                or data.ndim != 2
                or data.size < MIN_QUANTIZED
                or getattr(info, "dtype", None) != "float32"
                or getattr(out, "dtype", None) != "float32"
                or info.shape is None
                or info.ndim < 2
                or not isinstance(info.shape, relax.ShapeExpr)
            ):
                return call
            dims = list(info.shape.values)
            k, n = data.shape
            if not isinstance(dims[-1], tirx.IntImm) or int(dims[-1]) != k:
                return call
            rows = dims[0]
            for dim in dims[1:-1]:
                rows = rows * dim
            bb = self.builder_
            if bits == 4:
                weights = [relax.const(a) for a in pack_int4(data, isa)]
                func = bb.add_func(int4_kernels(isa)[1], "offline_int4_matmul")
            else:
                weights = [relax.const(a) for a in pack_int8(data, isa)]
                func = bb.add_func(int8_kernels(isa)[1], "offline_int8_matmul")
            q = self._quantize(x, rows, k, grouped=bits == 4)
            y = bb.emit(
                relax.call_tir(
                    func,
                    [*(relax.TupleGetItem(q, i) for i in range(3)), *weights],
                    relax.TensorType([rows, n], "float32"),
                )
            )
            return relax.op.reshape(y, [*dims[:-1], n])

    rewrite = Rewrite(mod)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewrite.builder_.update_func(gvar, rewrite.visit_expr(func))
    # the fp32 gathers the expert matmuls no longer read
    return relax.transform.DeadCodeElimination()(rewrite.builder_.get())


def fuse_weight_reads(mod: Any) -> Any:
    """Group each matmul with the gather and int8 decode that produce its weight, so they
    become one kernel. Left to FuseOps, a decode is a kernel of its own that writes the fp32
    weights, and a mixture-of-experts layer gathers a copy of every routed expert's weights
    before multiplying."""
    from tvm import relax
    from tvm.relax.dpl import is_op, wildcard

    decode = is_op("relax.multiply")(is_op("relax.astype")(wildcard()), wildcard())
    weight = decode | wildcard()
    gathered = is_op("relax.take")(weight, wildcard())
    matmul = is_op("relax.matmul")
    patterns = [
        ("offline.gather_matmul", matmul(gathered, wildcard())),
        ("offline.gather_matmul", matmul(wildcard(), gathered)),
        ("offline.decode_matmul", matmul(wildcard(), decode)),
        ("offline.decode_matmul", matmul(decode, wildcard())),
        ("offline.decode_take", is_op("relax.take")(decode, wildcard())),
    ]
    return relax.transform.FuseOpsByPattern(patterns, bind_constants=False)(mod)
