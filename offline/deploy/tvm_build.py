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
"""

from __future__ import annotations

import contextlib
import os
import sys
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


def pipeline(target: Any, *, int8: bool = False) -> Any:
    """The Relax CPU pipeline: constants folded (weight transposes and the like), weights
    optionally stored as int8, then legalised, fused and scheduled with ``rules()``."""
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
            if int8:
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
