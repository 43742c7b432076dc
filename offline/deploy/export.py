"""``offline export``: a trained model as TorchScript, torch.export (pt2) and TVM artifacts.

Every artifact is a function of one input, ``input_ids`` of shape ``(batch, seq_len)`` (right
padded with the tokenizer's pad token), returning the logits: per token for a causal LM, per
sequence for a classifier. Each is written, loaded back from disk and compared with the fp32
eager model on a held-out sample (the deployment gate) before the export counts as done.

Mixture-of-experts layers are captured with transformers' ``batched_mm`` experts, whose shapes
do not depend on the routing, so a trace or an exported graph stays correct for every input;
the eager model runs the faster ``grouped_mm`` (``experts_implementation``).
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from offline import airgap
from offline.airgap import go_offline
from offline.deploy import artifact, decoder
from offline.errors import ConfigError, GateError, NotFoundError, ToolError
from offline.fsutil import build_dir
from offline.redact import redact

FORMATS = ("torchscript", "pt2", "tvm")
TARGETS = ("x86_64", "aarch64")
QUANTIZE = ("none", "int8", "int4")
DECODER_FORMATS = ("pt2", "tvm")  # a causal LM also gets a decoder with a KV cache in these
# TVM targets: a dict, since TVM rejects -mtriple in target strings
TVM_TARGETS: dict[str, dict[str, str]] = {
    "x86_64": {"kind": "llvm"},
    "aarch64": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"},
}
CROSS_COMPILER = {"aarch64": ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu")}


@dataclass
class Gate:
    max_accuracy_drop: float = 1.0  # points
    # None: checked (at 0.9) only where no accuracy can be measured (a sample without labels)
    min_top1_agreement: float | None = None


@dataclass
class Loaded:
    model: Any  # the wrapper: input_ids -> logits
    tokenizer: Any
    kind: str  # "causal-lm" or "sequence-classification"
    source_digest: str


@dataclass
class Sample:
    input_ids: Any  # (n, seq_len) int64
    lengths: list[int]
    labels: list[int] | None = None  # classification targets


@dataclass
class Artifact:
    format: str
    quantize: str
    target: str
    path: str
    bytes: int
    cpu: str = ""  # TVM: the LLVM CPU the library is compiled for
    arithmetic: str = ""  # how its matmuls multiply (int8: which instruction path)
    latency_ms: dict[str, float] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    gate: str = "not run"
    failed: list[str] = field(default_factory=list)
    # a decoder (offline.deploy.decoder): cache columns, prefill chunk, per-layer cache shapes
    decoder: dict[str, Any] = field(default_factory=dict)


CONTEXT_CAP = 32768  # a longer limit needs --max-context: one sequence's KV cache grows with it


def context_limit(config: Any, tokenizer: Any) -> tuple[int, str]:
    """The longest context the model can take, and what set it: its position limit, a smaller
    tokenizer limit, a sliding window (the KV cache here keeps every position), or the cap."""
    limits = []
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            limits.append((value, name))
            break
    told = getattr(tokenizer, "model_max_length", None)
    if isinstance(told, int) and 0 < told < 10**7:
        limits.append((told, "tokenizer model_max_length"))
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or []
    sliding = "sliding_attention" in types or bool(getattr(config, "use_sliding_window", False))
    if isinstance(window, int) and window > 0 and sliding:
        limits.append((window, "sliding_window"))
    limits.append((CONTEXT_CAP, "the default cap (--max-context raises it)"))
    return min(limits)


def _generation(loaded: Loaded, model_dir: Path, wanted: int | None) -> dict[str, Any]:
    """What the card records for generation: ``max_context`` and generation_config.json's
    stop ids and sampling defaults."""
    if loaded.kind != "causal-lm":
        return {}
    config = loaded.model.inner.config
    limit, why = context_limit(config, loaded.tokenizer)
    if wanted is not None:
        if wanted > limit and why != "the default cap (--max-context raises it)":
            raise ConfigError(
                f"--max-context {wanted} is more than {model_dir} can take ({limit}, its {why})",
                fix=f"use --max-context {limit} or less",
            )
        limit, why = wanted, "--max-context"
    generation: dict[str, Any] = {}
    stop: set[int] = set()
    if (model_dir / "generation_config.json").is_file():
        from transformers import GenerationConfig

        gen = GenerationConfig.from_pretrained(model_dir, local_files_only=True)
        eos = gen.eos_token_id
        stop.update([eos] if isinstance(eos, int) else list(eos or []))
        if gen.do_sample:
            for key in ("temperature", "top_p", "top_k"):
                if getattr(gen, key, None) is not None:
                    generation[key] = getattr(gen, key)
        if gen.repetition_penalty not in (None, 1.0):
            generation["repetition_penalty"] = gen.repetition_penalty
    if loaded.tokenizer.eos_token_id is not None:
        stop.add(int(loaded.tokenizer.eos_token_id))
    generation["stop_ids"] = sorted(stop)
    return {"max_context": limit, "max_context_from": why, "generation": generation}


def _has_experts(config: Any) -> bool:
    return bool(getattr(config, "n_routed_experts", None) or getattr(config, "num_experts", None))


@contextlib.contextmanager
def experts_implementation(model: Any, name: str) -> Iterator[None]:
    """Mixture-of-experts layers computed by transformers' ``name`` experts for a while.

    The eager model runs ``grouped_mm`` (tokens sorted by expert, one matmul per expert): fast,
    and it batches well. On CPU that is a custom operator of transformers', which a TorchScript
    or pt2 file would then need at load time, and TVM cannot import; the artifacts are captured
    with ``batched_mm`` (each token's expert weights gathered), which is plain aten. Neither
    has shapes that depend on the routing, so a trace is right for every input.
    """
    inner = model.inner
    if not _has_experts(inner.config):
        yield
        return
    before = inner.config._experts_implementation
    inner.set_experts_implementation(name)
    try:
        yield
    finally:
        inner.set_experts_implementation(before)


def load(model_dir: Path) -> Loaded:
    """The fp32 eager model behind a logits-only wrapper, and its tokenizer.

    Raises:
        NotFoundError: ``model_dir`` is missing or is not a transformers model directory.
    """
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    if not (model_dir / "config.json").is_file():
        raise NotFoundError(
            f"--model {model_dir} is not a model directory (no config.json)",
            fix="point --model at `offline train`'s output_dir (e.g. models/trained)",
        )
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    classifier = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
    auto: Any = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    # safetensors only: a pickled weight file is never unpickled
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "dtype": torch.float32,
        "use_safetensors": True,
    }
    if _has_experts(config):
        kwargs["experts_implementation"] = "grouped_mm"
    model = auto.from_pretrained(model_dir, **kwargs).eval()
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, use_cache=False).logits  # type: ignore[no-any-return]

    kind = "sequence-classification" if classifier else "causal-lm"
    return Loaded(Logits(model).eval(), tok, kind, artifact.source_digest(model_dir))


def make_sample(
    loaded: Loaded, seq_len: int, path: Path | None, rows: int, label_column: str = "label"
) -> Sample:
    """Held-out rows (text, and labels for a classifier) as padded ids; random ids without one."""
    import torch

    tok = loaded.tokenizer
    texts: list[str]
    labels: list[int] | None = None
    if path is None:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, len(tok), (rows, seq_len), generator=gen)
        return Sample(ids, [seq_len] * rows)
    from offline.train.data import column_texts, read_table

    table = read_table(path).slice(0, rows)
    texts = column_texts(table, None, path)
    if loaded.kind == "sequence-classification" and label_column in table.schema.names:
        label2id = loaded.model.inner.config.label2id
        raw = [str(v) for v in table.column(label_column).to_pylist()]
        unknown = sorted({v for v in raw if v not in label2id})
        if unknown:
            raise ConfigError(
                f"--sample {path}: labels the model does not know: {', '.join(unknown)}",
                fix="use a held-out split of the data the model was trained on",
            )
        labels = [label2id[v] for v in raw]
    enc = tok(texts, truncation=True, max_length=seq_len, padding="max_length")
    lengths = [max(1, sum(mask)) for mask in enc["attention_mask"]]
    return Sample(torch.tensor(enc["input_ids"]), lengths, labels)


def _batches(sample: Sample, size: int) -> list[Any]:
    return [sample.input_ids[i : i + size] for i in range(0, len(sample.input_ids), size)]


def _run_all(fn: Callable[[Any], Any], sample: Sample) -> Any:
    import torch

    with torch.no_grad():
        return torch.cat([fn(b) for b in _batches(sample, 8)])


def parity(reference: Any, logits: Any, sample: Sample, kind: str) -> dict[str, float]:
    """Max logit difference, top-1 agreement and accuracy of ``logits`` against ``reference``.

    A causal LM is judged on the real (unpadded) positions: agreement of the argmax, and
    next-token accuracy against the sample's own next tokens.
    """
    import torch

    if kind == "sequence-classification":
        ref_top, top = reference.argmax(-1), logits.argmax(-1)
        out = {
            "max_abs_diff": float((reference - logits).abs().max()),
            "top1_agreement": float((ref_top == top).float().mean()),
        }
        if sample.labels is not None:
            labels = torch.tensor(sample.labels)
            out["accuracy_eager"] = float((ref_top == labels).float().mean())
            out["accuracy"] = float((top == labels).float().mean())
        return out
    mask = torch.zeros(sample.input_ids.shape, dtype=torch.bool)
    for row, length in enumerate(sample.lengths):
        mask[row, : max(length - 1, 1)] = True
    ref_top, top = reference.argmax(-1)[mask], logits.argmax(-1)[mask]
    following = torch.roll(sample.input_ids, -1, dims=1)[mask]
    return {
        "max_abs_diff": float((reference - logits)[mask].abs().max()),
        "top1_agreement": float((ref_top == top).float().mean()),
        "accuracy_eager": float((ref_top == following).float().mean()),
        "accuracy": float((top == following).float().mean()),
    }


PARITY_SAMPLE = "parity_sample.npz"
PARITY_ROWS = 8


def write_parity_sample(
    path: Path,
    reference: Any,
    sample: Sample,
    kind: str,
    generated: tuple[list[list[int]], list[list[int]]] | None = None,
) -> None:
    """A few held-out rows with the eager fp32 model's answers, for ``run_edge.py --self-test``
    on the device: the ids, their lengths, the top-1 at every position (a classifier: per row)
    and the logits the answer is read from (an LM: at the last real token); with a decoder,
    prompts (padded with -1) and the eager model's greedy continuation of each."""
    import numpy as np

    extra: dict[str, Any] = {}
    if generated is not None:
        prompts, continuations = generated
        width = max(len(p) for p in prompts)
        extra["gen_prompts"] = np.array([p + [-1] * (width - len(p)) for p in prompts])
        extra["gen_tokens"] = np.array(continuations, dtype=np.int64)

    rows = min(PARITY_ROWS, len(sample.lengths))
    ids = sample.input_ids[:rows].numpy()
    lengths = np.array(sample.lengths[:rows], dtype=np.int64)
    ref = reference[:rows].numpy()
    if kind == "sequence-classification":
        answer = ref
    else:
        answer = ref[np.arange(rows), np.maximum(lengths - 1, 0)]
    np.savez_compressed(path, ids=ids, lengths=lengths, top1=ref.argmax(-1), logits=answer, **extra)


def judge(found: dict[str, float], gate: Gate) -> list[str]:
    """The gate's failed figures, each with its value and limit."""
    failed = []
    floor = gate.min_top1_agreement
    if "generated_top1_agreement" in found:  # a decoder, on the eager model's generations
        wanted = 0.9 if floor is None else floor
        if found["generated_top1_agreement"] < wanted:
            failed.append(
                f"generated top-1 agreement {found['generated_top1_agreement']:.2%} < {wanted:.0%}"
            )
        return failed
    if floor is None and "accuracy" not in found:
        floor = 0.9
    if floor is not None and found["top1_agreement"] < floor:
        failed.append(f"top-1 agreement {found['top1_agreement']:.2%} < {floor:.0%}")
    if "accuracy" in found:
        drop = (found["accuracy_eager"] - found["accuracy"]) * 100
        if drop > gate.max_accuracy_drop:
            failed.append(f"accuracy drop {drop:.2f} points > {gate.max_accuracy_drop:g}")
    return failed


def latency(
    fn: Callable[[Any], Any], seq_len: int, vocab: int, batch: int, runs: int
) -> dict[str, float]:
    import torch

    ids = torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(1))
    times = []
    with torch.no_grad():
        fn(ids)
        for _ in range(runs):
            started = time.perf_counter()
            fn(ids)
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        f"b{batch}_p50": round(statistics.median(times), 3),
        f"b{batch}_p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
    }


# -- formats ----------------------------------------------------------------------------------


def _quantized_copy(loaded: Loaded, how: str) -> Any:
    """A deep copy of the wrapper with its Linear layers in dynamic int8 (``how``: ao|torchao)."""
    import copy

    import torch

    model = copy.deepcopy(loaded.model)
    if how == "ao":  # TorchScript: torch.ao's dynamic quantized Linear
        ao: Any = torch.ao.quantization  # untyped
        with warnings.catch_warnings():  # deprecated with TorchScript, still what it runs
            warnings.simplefilter("ignore", DeprecationWarning)
            return ao.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        raise ToolError(
            "pt2 int8 needs torchao", fix="install the deploy extra: pip install torchao"
        ) from None
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def export_torchscript(loaded: Loaded, example: Any, quantize: str, out: Path) -> Path:
    import torch

    model = _quantized_copy(loaded, "ao") if quantize == "int8" else loaded.model
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated
        jit: Any = torch.jit  # untyped
        traced = jit.trace(model, (example,), check_trace=False)
    path = out / f"model-{quantize}.torchscript.pt"
    torch.jit.save(traced, str(path))
    return path


def load_torchscript(path: Path) -> Callable[[Any], Any]:
    import torch

    jit: Any = torch.jit
    module = jit.load(str(path))
    return lambda ids: module(ids)


def _export_program(model: Any, example: Any, dynamic_batch: bool = True) -> Any:
    import torch

    shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic_batch else None
    with torch.no_grad():
        try:
            return torch.export.export(model, (example,), dynamic_shapes=shapes)
        except Exception as exc:  # torch.export's errors name the op it cannot capture
            raise ConfigError(
                f"torch.export cannot capture this model: {str(exc).splitlines()[0][:300]}",
                fix="export --format torchscript instead",
            ) from None


def export_pt2(loaded: Loaded, example: Any, quantize: str, out: Path) -> Path:
    import torch

    model = _quantized_copy(loaded, "torchao") if quantize == "int8" else loaded.model
    program = _export_program(model, example)
    path = out / f"model-{quantize}.pt2"
    torch.export.save(program, str(path))
    return path


def load_pt2(path: Path) -> Callable[[Any], Any]:
    import torch

    module = torch.export.load(str(path)).module()
    return lambda ids: module(ids)


def _tvm_friendly(program: Any) -> Any:
    """Rewrite two graph details TVM's importer rejects, without changing results.

    ``topk(sorted=False)`` becomes sorted (the router sums its experts, order is irrelevant);
    ``cumsum`` of a bool gets an integer accumulator (TVM's codegen cannot add bools).
    """
    import torch

    for node in program.graph.nodes:
        if node.target == torch.ops.aten.topk.default:
            args = list(node.args)
            defaults = {2: -1, 3: True}
            while len(args) < 4:
                args.append(defaults[len(args)])
            node.args = (*args[:4], True)
        elif (
            node.target == torch.ops.aten.cumsum.default
            and node.args[0].meta["val"].dtype == torch.bool
            and "dtype" not in node.kwargs
        ):
            node.kwargs = {**node.kwargs, "dtype": torch.int64}
    return program


def arithmetic(fmt: str, quantize: str, target: str, cpu: str | None) -> str:
    """How an artifact's matmuls multiply: fp32, or for int8 the instruction path it uses."""
    if quantize == "none":
        return "fp32"
    if quantize == "int4":
        import tvm

        from offline.deploy import tvm_build

        isa = tvm_build.int8_isa(tvm.target.Target(tvm_target(target, cpu)))
        assert isa is not None  # build_tvm refuses int4 without one
        return (
            f"int4 weights (groups of {tvm_build.GROUP}) x int8 activations -> int32:"
            f" {isa.instruction}"
        )
    if fmt == "torchscript":
        return "int8 x int8 (torch.ao dynamic quantized Linear)"
    if fmt == "pt2":
        return "torchao int8 dynamic quantization (its CPU graph multiplies in fp32)"
    import tvm

    from offline.deploy import tvm_build

    isa = tvm_build.int8_isa(tvm.target.Target(tvm_target(target, cpu)))
    if isa is None:
        return "int8 weights decoded to fp32 in the kernel (no int8 dot product on this CPU)"
    return f"int8 x int8 -> int32: {isa.instruction}"


def _int4_cpu(target: str, cpu: str | None) -> None:
    """Refuse int4 for a CPU without an int8 dot product, before any model is loaded."""
    import tvm

    from offline.deploy import tvm_build

    spec = tvm.target.Target(tvm_target(target, cpu))
    if tvm_build.int8_isa(spec) is None:
        raise ConfigError(
            f"--quantize int4 needs an int8 dot product, which the {target} CPU"
            f" {spec.attrs.get('mcpu', 'generic')!s} lacks",
            fix="pass --cpu for the device (x86: x86-64-v2 or newer; aarch64: an Armv8.2 core"
            " such as cortex-a76 or neoverse-n1), or use --quantize int8",
        )


def tvm_target(target: str, cpu: str | None = None) -> dict[str, str]:
    """TVM's target for ``--target``/``--cpu``: the host's own CPU by default on x86_64 (the
    schedules are vectorised to its width), plain ARMv8-A with NEON on aarch64."""
    spec = dict(TVM_TARGETS[target])
    if cpu:
        spec["mcpu"] = cpu
    elif target == "x86_64":
        from tvm.target.codegen import llvm_get_system_cpu

        spec["mcpu"] = llvm_get_system_cpu()
    return spec


def export_tvm(
    loaded: Loaded, example: Any, quantize: str, target: str, out: Path, cpu: str | None = None
) -> Path:
    """A Relax VM library, scheduled for the CPU (``offline.deploy.tvm_build``). With int8
    the large weights are stored as int8: where the CPU has an int8 dot product the matmuls
    run in int8 arithmetic, elsewhere the weights are decoded inside the kernels that read
    them. With int4 the dense weights are 4-bit codes per group of 32 (``pack_int4``)."""
    from tvm.relax.frontend.torch import from_exported_program

    # TVM's importer needs static shapes: the library takes one sequence per call
    program = _tvm_friendly(_export_program(loaded.model, example[:1], dynamic_batch=False))
    try:
        mod = from_exported_program(program)
    except (AssertionError, NotImplementedError, ValueError) as exc:
        raise ConfigError(
            f"TVM cannot import this model: {exc}",
            fix="export --format pt2 or torchscript instead",
        ) from None
    return build_tvm(mod, quantize, target, out / f"model-{quantize}-{target}.so", cpu)


def build_tvm(mod: Any, quantize: str, target: str, path: Path, cpu: str | None) -> Path:
    """Compile a Relax module for ``target``/``cpu`` with the CPU schedules into ``path``."""
    import tvm
    from tvm import relax

    from offline.deploy import tvm_build

    spec = tvm.target.Target(tvm_target(target, cpu))
    if cpu:  # TVM takes any name, and LLVM would quietly compile for a generic CPU instead
        from tvm.target.codegen import llvm_get_cpu_archlist

        known = list(llvm_get_cpu_archlist(spec))
        if cpu not in known:
            examples = ", ".join(c for c in known if c.startswith(("x86-64-v", "cortex-a7")))
            raise ConfigError(
                f"--cpu {cpu} is not an LLVM CPU name for {target}",
                fix=f"use one of LLVM's names, e.g. {examples}",
            )
    cc = None
    if target in CROSS_COMPILER:
        cc, package = CROSS_COMPILER[target]
        if shutil.which(cc) is None:
            raise ToolError(
                f"cross compiling for {target} needs {cc}", fix=f"apt-get install {package}"
            )
    pipeline = tvm_build.pipeline(spec, quantize=quantize)
    executable = relax.build(mod, target=spec, relax_pipeline=pipeline)
    # stripped: symbols and debug info are a third of a small model's library
    if cc is None:
        executable.export_library(str(path), options=["-s"])
    else:
        executable.export_library(str(path), fcompile=_cross(cc), options=["-s"])
    return path


def _cross(cc: str) -> Any:
    from tvm.support import cc as tvm_cc

    return tvm_cc.cross_compiler(cc)


def load_tvm(path: Path) -> Callable[[Any], Any]:
    import torch
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())

    def one(row: Any) -> Any:
        out = vm["main"](tvm.runtime.tensor(row.numpy()))
        first = out[0] if not hasattr(out, "numpy") else out
        return torch.from_numpy(first.numpy())

    def run(ids: Any) -> Any:  # compiled for batch 1: a batch is that many calls
        return torch.cat([one(ids[i : i + 1]) for i in range(ids.shape[0])])

    return run


# -- the command ------------------------------------------------------------------------------


def export(
    model_dir: Path,
    out: Path,
    *,
    formats: list[str],
    quantize: str = "none",
    target: str = "x86_64",
    cpu: str | None = None,
    seq_len: int = 64,
    max_context: int | None = None,
    sample: Path | None = None,
    sample_rows: int = 512,
    gate: Gate | None = None,
    latency_runs: int = 20,
) -> list[Artifact]:
    """Export ``model_dir`` in every format of ``formats`` into ``out`` and gate each one.

    The artifacts are written under a temporary name and ``out`` appears only when all pass.

    Raises:
        ConfigError: an unknown format, target or quantization, or an op a format cannot take.
        NotFoundError: no model at ``model_dir``.
        ToolError: a cross compiler or torchao is missing.
        GateError: an artifact failed the gate (the card in ``out`` says which figure).
    """
    import torch

    gate = gate or Gate()
    for name, value, allowed in (
        ("--format", formats, FORMATS),
        ("--target", [target], TARGETS),
        ("--quantize", [quantize], QUANTIZE),
    ):
        bad = [v for v in value if v not in allowed]
        if bad or (not value and name != "--format"):
            raise ConfigError(f"unknown {name} {', '.join(bad)}", fix=f"use {', '.join(allowed)}")
    if quantize == "int4" and formats != ["tvm"]:
        raise ConfigError(
            "--quantize int4 is for TVM only: torch.export and TorchScript have no CPU int4"
            " kernel here (torchao's stores each 4-bit value in a byte and decodes it to fp32,"
            " no smaller or faster than int8)",
            fix="export --format tvm --quantize int4, or --quantize int8 for pt2/TorchScript",
        )
    if target != "x86_64" and formats != ["tvm"]:
        raise ConfigError(
            f"--target {target} is for TVM only", fix="export --format tvm --target aarch64"
        )
    if quantize == "int4":
        _int4_cpu(target, cpu)
    go_offline()
    torch.manual_seed(0)
    loaded = load(model_dir)
    # eager only: no artifact to gate, so no held-out rows to run
    held_out = make_sample(loaded, seq_len, sample, sample_rows if formats else 2)
    reference = _run_all(loaded.model, held_out) if formats else None
    example = held_out.input_ids[:2]
    with build_dir(out) as tmp:
        artifacts = []
        vocab = len(loaded.tokenizer)
        generation = _generation(loaded, model_dir, max_context)
        decoders = loaded.kind == "causal-lm" and any(f in DECODER_FORMATS for f in formats)
        generated = decoder.generated_sample(loaded, held_out) if decoders else None
        eager = Artifact("eager", "none", "x86_64", "", 0)
        for batch in (1, 8):
            eager.latency_ms.update(latency(loaded.model, seq_len, vocab, batch, latency_runs))
        for fmt in formats:
            with experts_implementation(loaded.model, "batched_mm"):
                if fmt == "torchscript":
                    path = export_torchscript(loaded, example, quantize, tmp)
                    runner: Callable[[Any], Any] | None = load_torchscript(path)
                elif fmt == "pt2":
                    path = export_pt2(loaded, example, quantize, tmp)
                    runner = load_pt2(path)
                else:
                    path = export_tvm(loaded, example, quantize, target, tmp, cpu)
                    runner = load_tvm(path) if target == "x86_64" else None
            art = Artifact(fmt, quantize, target, path.name, path.stat().st_size)
            art.arithmetic = arithmetic(fmt, quantize, target, cpu)
            if fmt == "tvm":
                art.cpu = tvm_target(target, cpu).get("mcpu", "generic")
            if runner is not None:
                art.parity = parity(reference, _run_all(runner, held_out), held_out, loaded.kind)
                art.failed = judge(art.parity, gate)
                art.gate = "fail" if art.failed else "pass"
                for batch in (1, 8):
                    art.latency_ms.update(latency(runner, seq_len, vocab, batch, latency_runs))
            else:
                art.gate = (
                    f"not run here ({target} artifact): run_edge.py --self-test on the device"
                )
            artifacts.append(art)
            if decoders and fmt in DECODER_FORMATS:
                assert generated is not None
                columns = int(generation["max_context"]) + 1
                artifacts.append(
                    _decoder(
                        loaded,
                        fmt,
                        quantize,
                        target,
                        tmp,
                        cpu,
                        columns,
                        generated,
                        gate,
                        latency_runs,
                    )
                )
        loaded.tokenizer.save_pretrained(tmp / "tokenizer")
        inner_config = loaded.model.inner.config
        card = {
            "model": str(model_dir),
            "kind": loaded.kind,
            "labels": (
                [inner_config.id2label[i] for i in range(inner_config.num_labels)]
                if loaded.kind == "sequence-classification"
                else None
            ),
            "pad_token_id": loaded.tokenizer.pad_token_id,
            "source_sha256": loaded.source_digest,
            "seq_len": seq_len,
            **generation,
            "sample": str(sample) if sample else "random token ids",
            "sample_rows": len(held_out.lengths),
            "gate": asdict(gate),
            "eager": asdict(eager),
            "artifacts": [asdict(a) for a in artifacts],
        }
        artifact.write_card(tmp, card)
        failed = [a for a in artifacts if a.failed]
        if failed:
            rejected = out.with_name(f"{out.name}.rejected")
            shutil.rmtree(rejected, ignore_errors=True)
            tmp.rename(rejected)
            reasons = "; ".join(f"{a.format} {a.quantize}: {', '.join(a.failed)}" for a in failed)
            raise GateError(
                f"the deployment gate failed: {reasons} (card: {rejected}/EXPORT_CARD.md)",
                fix=f"export without --quantize {quantize} (or with int8 for int4), or loosen"
                " --max-accuracy-drop/--min-agreement",
            )
        if "tvm" in formats:
            write_parity_sample(tmp / PARITY_SAMPLE, reference, held_out, loaded.kind, generated)
        if formats:
            package(tmp, f"edge-{model_dir.resolve().name}-{target}.tar", target)
        else:  # eager only: what `offline serve --backend eager` verifies
            artifact.write_manifest(tmp, target)
    return artifacts


def _decoder(
    loaded: Loaded,
    fmt: str,
    quantize: str,
    target: str,
    out: Path,
    cpu: str | None,
    columns: int,
    generated: tuple[list[list[int]], list[list[int]]],
    gate: Gate,
    latency_runs: int,
) -> Artifact:
    """The decoder artifact of ``fmt``, gated on the eager model's greedy generations."""
    with experts_implementation(loaded.model, "batched_mm"):
        path, info = decoder.export(loaded, fmt, quantize, target, out, cpu, columns)
    art = Artifact(fmt, quantize, target, path.name, path.stat().st_size, decoder=info)
    art.arithmetic = arithmetic(fmt, quantize, target, cpu)
    if fmt == "tvm":
        art.cpu = tvm_target(target, cpu).get("mcpu", "generic")
    if target != "x86_64":
        art.gate = f"not run here ({target} artifact): run_edge.py --self-test on the device"
        return art
    runner = decoder.load(path, fmt, info)
    art.parity = decoder.generated_parity(runner, *generated)
    art.failed = judge(art.parity, gate)
    art.gate = "fail" if art.failed else "pass"
    art.latency_ms = decoder.decode_latency(runner, min(64, columns - 1), latency_runs)
    return art


def _where(a: dict[str, Any]) -> str:
    """The card's target cell: the CPU it is compiled for and its int8 arithmetic."""
    notes = [a["cpu"]] if a.get("cpu") else []
    if a.get("quantize") != "none" and a.get("arithmetic"):
        notes.append(a["arithmetic"])
    return f" ({'; '.join(notes)})" if notes else ""


def shipped_dir(name: str) -> Path:
    """``deploy/`` or ``bundle/`` as shipped (see :func:`offline.airgap.shipped_places`)."""
    found = airgap.find_shipped(name)
    if found is None:
        places = ", ".join(str(place) for _, place in airgap.shipped_places(name))
        raise NotFoundError(
            f"no {name}/ directory in: {places}",
            fix=f"set DEEPSEEK_OFFLINE_{name.upper()}_DIR to the toolkit's {name}/ directory",
        )
    return found


def package(directory: Path, name: str, target: str) -> Path:
    """``directory`` as an edge package: its files, the run script and unit, the runtime
    requirements, and ``manifest.json`` with every file's sha256; one uncompressed tar.
    """
    import tarfile

    edge = shipped_dir("deploy") / "edge"
    for asset in ("run_edge.py", "deepseek-edge.service"):
        shutil.copy(edge / asset, directory / asset)
    shutil.copy(artifact.__file__, directory / "artifact.py")  # how run_edge.py reads the card
    requirements = shipped_dir("bundle") / "requirements" / "edge-aarch64.in"
    (directory / "runtime-requirements.txt").write_text(
        f"# What the device needs ({target}); bundle/edge-aarch64.toml carries the aarch64"
        " wheels across the gap\n" + redact(requirements.read_text())
    )
    files = artifact.write_manifest(directory, target)
    tar_path = directory / name
    with tarfile.open(tar_path, "w") as tar:
        for path in [*files, directory / "manifest.json"]:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(directory).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    return tar_path


def card_markdown(card: dict[str, Any]) -> str:
    eager = card["eager"]["latency_ms"]
    lines = [
        f"# Export card: {card['model']}",
        "",
        f"{card['kind']}, seq_len {card['seq_len']}"
        + (
            f", max_context {card['max_context']} ({card.get('max_context_from', '')})"
            if card.get("max_context")
            else ""
        )
        + f", sample: {card['sample']}"
        f" ({card['sample_rows']} rows), source sha256 {card['source_sha256'][:16]}",
        "",
        "| format | quantize | target | MB | b1 p50 ms | b1 p99 ms | b8 p50 ms | b8 p99 ms |"
        " max diff | top-1 agree | accuracy | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| eager | none | x86_64 | | {eager['b1_p50']} | {eager['b1_p99']} |"
        f" {eager['b8_p50']} | {eager['b8_p99']} | | | | |",
    ]
    decoders = [a for a in card["artifacts"] if a.get("decoder")]
    for a in card["artifacts"]:
        if a.get("decoder"):
            continue
        lat, par = a["latency_ms"], a["parity"]
        acc = par.get("accuracy")
        lines.append(
            f"| {a['format']} | {a['quantize']} | {a['target']}"
            f"{_where(a)} | {a['bytes'] / 1e6:.2f} |"
            f" {lat.get('b1_p50', '')} | {lat.get('b1_p99', '')} | {lat.get('b8_p50', '')} |"
            f" {lat.get('b8_p99', '')} |"
            f" {'' if not par else format(par['max_abs_diff'], '.4g')} |"
            f" {'' if not par else format(par['top1_agreement'], '.2%')} |"
            f" {'' if acc is None else f'{acc:.2%}'} |"
            f" {a['gate']}{': ' + '; '.join(a['failed']) if a['failed'] else ''} |"
        )
    if decoders:
        lines += [
            "",
            "Decoders (KV cache of `columns` positions; judged on the eager model's greedy"
            " generations of held-out prompts):",
            "",
            "TorchScript holds no decoder: for a causal LM it stays a fixed-length function.",
            "",
            "| format | quantize | target | MB | columns | prefill chunk | decode p50 ms |"
            " generated top-1 agree | exact prefix | gate |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    for a in decoders:
        par, info = a["parity"], a["decoder"]
        decode = next(iter(a["latency_ms"].values()), "")
        lines.append(
            f"| {a['format']} | {a['quantize']} | {a['target']}"
            f"{_where(a)} | {a['bytes'] / 1e6:.2f} |"
            f" {info['columns']} | {info['chunk']} | {decode} |"
            f" {'' if not par else format(par['generated_top1_agreement'], '.2%')} |"
            f" {'' if not par else format(par['generated_exact_prefix'], '.2%')} |"
            f" {a['gate']}{': ' + '; '.join(a['failed']) if a['failed'] else ''} |"
        )
    return "\n".join(lines) + "\n"
