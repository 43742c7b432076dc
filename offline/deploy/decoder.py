"""Decoder artifacts: a causal LM exported with its KV cache, for generation off the eager model.

One function covers both halves of generation. ``step(input_ids, start, pads, *past)`` reads
``T`` new tokens of each of ``B`` sequences and returns the logits of each row's last token
and, per layer, the new tokens' keys and values:

- ``input_ids`` (B, T): left padded; row ``b`` has ``pads[b]`` padding tokens, then its tokens
  at positions ``start[b]``, ``start[b] + 1``, ...
- ``past``: per layer the keys and the values already in the cache, (B, heads, C, dim); the
  columns before ``start[b]`` are row ``b``'s earlier tokens, the rest are never looked at.
- returns ``(logits (B, vocab), k_0, v_0, k_1, v_1, ...)``, each (B, heads, T, dim). The caller
  writes them into its cache: the artifact never copies or owns the cache, so the server keeps
  one static cache for every sequence and an edge device one array per layer.

The cache holds what the model's own cache holds (for DeepSeek's latent attention, the
compressed latents), so the function is the model's ``forward`` with a cache that only lends
the past and records the new: every architecture transformers runs with a cache exports the
same way. The pt2 program has dynamic batch, token and key dimensions; a TVM library has two
entries of static shape over a cache of exactly ``context`` columns: ``prefill`` (``T`` =
``chunk``) and ``decode`` (``T`` = 1), batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK = 32  # tokens of the TVM prefill entry (a longer prompt takes several calls)
GEN_PROMPTS = 8  # held-out rows whose greedy continuation gates a decoder artifact
GEN_PROMPT_TOKENS = 24
GEN_TOKENS = 16


class LentCache:
    """What the model sees as its cache during one ``step``: it hands each layer the past and
    the new tokens' keys and values together, and keeps the new ones to return."""

    def __init__(self, past: list[tuple[Any, Any]]) -> None:
        self.past = past
        self.new: list[tuple[Any, Any]] = []
        self.joined: dict[int, tuple[Any, Any]] = {}

    def update(self, keys: Any, values: Any, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
        import torch

        self.new.append((keys, values))
        past_keys, past_values = self.past[layer_idx]
        joined = torch.cat([past_keys, keys], 2), torch.cat([past_values, values], 2)
        self.joined[layer_idx] = joined
        return joined


ATTENTION = "offline_cached"  # the attention implementation the decoders are exported with
_ACTIVE: list[LentCache] = []  # the cache of the step being traced


def cached_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Eager attention, as transformers' ``eager_attention_forward`` computes it, without its
    two copies of the cache per layer and step:

    - grouped-query heads are multiplied as groups against their shared key/value head, not
      against keys and values repeated for every query head;
    - where ``key``/``value`` are what ``LentCache.update`` joined (past, then the new tokens),
      the past and the new parts are multiplied separately and only the scores are joined, so
      the concatenated cache is never made (the exporters drop it as dead code).
    """
    import torch

    batch, heads, tokens, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    q = query.reshape(batch, kv_heads, groups * tokens, dim)
    cache = _ACTIVE[-1] if _ACTIVE else None
    joined = cache.joined.get(getattr(module, "layer_idx", -1)) if cache else None
    if cache is not None and joined is not None and joined[0] is key and joined[1] is value:
        (past_k, past_v), (new_k, new_v) = cache.past[module.layer_idx], cache.new[module.layer_idx]
        parts = [(past_k, past_v), (new_k, new_v)]
    else:
        parts = [(key, value)]
    scores = torch.cat([torch.matmul(q, k.transpose(2, 3)) for k, _ in parts], -1) * scale
    columns = scores.shape[-1]
    scores = scores.reshape(batch, kv_heads, groups, tokens, columns)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, None, :, :columns]
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = probs.reshape(batch, kv_heads, groups * tokens, columns)
    out, at = None, 0
    for k, v in parts:
        width = k.shape[2]
        term = torch.matmul(probs[..., at : at + width], v)
        out = term if out is None else out + term
        at += width
    assert out is not None
    out = out.reshape(batch, heads, tokens, v.shape[-1]).transpose(1, 2).contiguous()
    return out, None


def _attention_for(lm: Any) -> str:
    """``ATTENTION`` where its plain softmax is the model's attention, else transformers' eager
    (logit soft-capping or attention sinks are not in ``cached_attention``)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, cached_attention)
    config = lm.config
    special = getattr(config, "attn_logit_softcapping", None) or any(
        hasattr(m, "sinks") for m in lm.modules()
    )
    return "eager" if special else ATTENTION

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions and the mask are always given

    def __len__(self) -> int:
        return len(self.past)


def step_module(lm: Any) -> Any:
    """``lm`` behind the ``step`` signature of the module docstring, in eager attention (which
    every exporter takes; the mask carries the cache's layout) as ``cached_attention``
    computes it."""
    import torch

    lm.set_attn_implementation(_attention_for(lm))

    class Step(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, start: Any, pads: Any, *past: Any) -> Any:
            batch, tokens = input_ids.shape
            columns = past[0].shape[2]
            t = torch.arange(tokens, device=input_ids.device)
            wanted = start[:, None] + t[None, :] - pads[:, None]
            positions = torch.maximum(wanted, torch.zeros_like(wanted))  # padding: position 0
            earlier = torch.arange(columns, device=input_ids.device)[None, None, :]
            seen = (earlier < start[:, None, None]).expand(batch, tokens, columns)
            query, key = t[None, :, None], t[None, None, :]
            # a padding query looks at itself only, so no row of the softmax is empty
            causal = ((key >= pads[:, None, None]) & (key <= query)) | (key == query)
            allowed = torch.cat([seen, causal], -1)
            dtype = past[0].dtype
            # where(), not masked_fill(~x): TVM's importer mistakes a bool NOT for an int one
            mask = torch.where(
                allowed, torch.zeros((), dtype=dtype), torch.full((), torch.finfo(dtype).min)
            )
            cache = LentCache([(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)])
            _ACTIVE.append(cache)
            try:
                out = self.inner.model(
                    input_ids=input_ids,
                    position_ids=positions,
                    attention_mask=mask[:, None],
                    cache=cache,
                    use_cache=True,
                )
            finally:
                _ACTIVE.pop()
            # the last position by its index: TVM's importer gets a negative slice wrong
            last = out.last_hidden_state[:, tokens - 1]
            new = [x for pair in cache.new for x in pair]
            return (self.inner.lm_head(last), *new)

    return Step(lm).eval()


def cache_shapes(lm: Any) -> list[list[int]]:
    """Per layer ``[key heads, key dim, value heads, value dim]`` of one cached token."""
    import torch
    from transformers import DynamicCache

    probe = DynamicCache(config=lm.config)
    device = next(lm.parameters()).device
    with torch.no_grad():
        lm(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), cache=probe)
    layer: Any
    shapes = []
    for layer in probe.layers:
        k, v = layer.keys, layer.values
        shapes.append([int(k.shape[1]), int(k.shape[3]), int(v.shape[1]), int(v.shape[3])])
    return shapes


def empty_past(shapes: list[list[int]], batch: int, columns: int, dtype: Any = None) -> list[Any]:
    import torch

    out = []
    for kh, kd, vh, vd in shapes:
        out.append(torch.zeros(batch, kh, columns, kd, dtype=dtype or torch.float32))
        out.append(torch.zeros(batch, vh, columns, vd, dtype=dtype or torch.float32))
    return out


# -- export -------------------------------------------------------------------------------------
def export_pt2(lm: Any, shapes: list[list[int]], columns: int, path: Path) -> Path:
    """The step as one torch.export program: batch up to 64, up to 256 tokens, up to
    ``columns`` cached positions."""
    import torch

    from offline.errors import ConfigError

    module = step_module(lm)
    example = (
        torch.zeros(2, 3, dtype=torch.long),
        torch.zeros(2, dtype=torch.long),
        torch.zeros(2, dtype=torch.long),
        *empty_past(shapes, 2, 5),
    )
    batch = torch.export.Dim("batch", min=1, max=64)
    tokens = torch.export.Dim("tokens", min=1, max=256)
    keys = torch.export.Dim("keys", min=1, max=max(columns, 6))
    dynamic = (
        {0: batch, 1: tokens},
        {0: batch},
        {0: batch},
        tuple({0: batch, 2: keys} for _ in example[3:]),
    )
    with torch.no_grad():
        try:
            program = torch.export.export(module, example, dynamic_shapes=dynamic)
        except Exception as exc:  # names the op it cannot capture
            raise ConfigError(
                f"torch.export cannot capture this model's decoder:"
                f" {str(exc).splitlines()[0][:300]}",
                fix="serve it with --backend eager",
            ) from None
    torch.export.save(program, str(path))
    return path


def tvm_module(lm: Any, shapes: list[list[int]], columns: int, chunk: int) -> Any:
    """A Relax module with the ``prefill`` and ``decode`` entries (batch 1, static shapes);
    the two share their weights in the built library."""
    import torch
    import tvm
    from tvm.relax.frontend.torch import from_exported_program

    from offline.deploy.export import _tvm_friendly
    from offline.errors import ConfigError

    module = step_module(lm)
    functions = {}
    for name, tokens in (("prefill", chunk), ("decode", 1)):
        example = (
            torch.zeros(1, tokens, dtype=torch.long),
            torch.zeros(1, dtype=torch.long),
            torch.zeros(1, dtype=torch.long),
            *empty_past(shapes, 1, columns),
        )
        with torch.no_grad():
            program = _tvm_friendly(torch.export.export(module, example))
        try:
            imported = from_exported_program(program)["main"]
        except (AssertionError, NotImplementedError, ValueError) as exc:
            raise ConfigError(
                f"TVM cannot import this model's decoder: {exc}",
                fix="export --format pt2, or serve it with --backend eager",
            ) from None
        functions[name] = imported.with_attr("global_symbol", name)
    return tvm.IRModule(functions)


# -- running ------------------------------------------------------------------------------------
@dataclass
class Runner:
    """A loaded decoder: ``__call__(ids, start, pads, past)`` -> (logits, new keys/values)."""

    fn: Any
    shapes: list[list[int]]
    columns: int  # cached positions it can take
    chunk: int  # most tokens per call
    batched: bool  # many rows per call (pt2); TVM takes one row of a full-width cache
    format: str

    def __call__(self, ids: Any, start: Any, pads: Any, past: list[Any]) -> tuple[Any, list[Any]]:
        out = self.fn(ids, start, pads, past)
        return out[0], list(out[1:])


def load_pt2(path: Path, shapes: list[list[int]], columns: int) -> Runner:
    import torch

    module = torch.export.load(str(path)).module()

    def fn(ids: Any, start: Any, pads: Any, past: list[Any]) -> Any:
        return module(ids, start, pads, *past)

    return Runner(fn, shapes, columns, 256, True, "pt2")


def load_tvm(path: Path, shapes: list[list[int]], columns: int, chunk: int) -> Runner:
    """The library's two entries on torch tensors, with no copy either way (DLPack)."""
    import torch

    from offline.deploy import artifact

    lib = artifact.TvmDecoder(path, chunk)

    def fn(ids: Any, start: Any, pads: Any, past: list[Any]) -> Any:
        out = lib(ids.contiguous(), start, pads, past)
        return [torch.utils.dlpack.from_dlpack(o) for o in out]

    return Runner(fn, shapes, columns, chunk, False, "tvm")


def prefill_then_decode(runner: Runner, prompt: list[int], feed: list[int]) -> list[int]:
    """The decoder's greedy choice after ``prompt`` and after each token of ``feed`` (fed
    whatever it chose): one cache of ``runner.columns`` positions, batch 1."""
    import torch

    past = empty_past(runner.shapes, 1, runner.columns)
    tokens, chosen, pos = [*prompt, *feed], [], 0
    with torch.no_grad():
        while pos < len(tokens):
            count = min(runner.chunk, len(prompt) - pos) if pos < len(prompt) else 1
            width = count if runner.batched or count == 1 else runner.chunk
            ids = torch.zeros(1, width, dtype=torch.long)
            ids[0, width - count :] = torch.tensor(tokens[pos : pos + count])
            view = [p[:, :, : max(pos, 1)] for p in past] if runner.batched else past
            logits, new = runner(ids, torch.tensor([pos]), torch.tensor([width - count]), view)
            for p, n in zip(past, new, strict=True):
                p[:, :, pos : pos + count] = n[:, :, width - count :]
            pos += count
            if pos >= len(prompt):
                chosen.append(int(logits[0].argmax()))
    return chosen


def decode_latency(runner: Runner, position: int, runs: int) -> dict[str, float]:
    """Milliseconds of one decode step at batch 1 with ``position`` tokens in the cache."""
    import statistics
    import time

    import torch

    past = empty_past(runner.shapes, 1, runner.columns)
    view = [p[:, :, :position] for p in past] if runner.batched else past
    ids, start, pads = (
        torch.zeros(1, 1, dtype=torch.long),
        torch.tensor([position]),
        torch.zeros(1, dtype=torch.long),
    )
    times = []
    with torch.no_grad():
        runner(ids, start, pads, view)
        for _ in range(runs):
            began = time.perf_counter()
            runner(ids, start, pads, view)
            times.append((time.perf_counter() - began) * 1000)
    return {f"decode_at_{position}_p50": round(statistics.median(times), 3)}


def export(
    loaded: Any, fmt: str, quantize: str, target: str, out: Path, cpu: str | None, columns: int
) -> tuple[Path, dict[str, Any]]:
    """The decoder artifact of ``fmt`` in ``out``, and what the card records about it."""
    from offline.deploy import export as ex

    lm = (
        ex._quantized_copy(loaded, "torchao").inner
        if fmt == "pt2" and quantize == "int8"
        else loaded.model.inner
    )
    shapes = cache_shapes(loaded.model.inner)
    before = lm.config._attn_implementation
    try:
        if fmt == "pt2":
            chunk = 256
            path = export_pt2(lm, shapes, columns, out / f"decoder-{quantize}.pt2")
        else:
            chunk = CHUNK
            module = tvm_module(lm, shapes, columns, chunk)
            path = ex.build_tvm(
                module, quantize, target, out / f"decoder-{quantize}-{target}.so", cpu
            )
    finally:
        lm.set_attn_implementation(before)
    return path, {"columns": columns, "chunk": chunk, "cache": shapes}


def load(path: Path, fmt: str, info: dict[str, Any]) -> Runner:
    if fmt == "pt2":
        return load_pt2(path, info["cache"], int(info["columns"]))
    return load_tvm(path, info["cache"], int(info["columns"]), int(info["chunk"]))


def generated_sample(loaded: Any, sample: Any) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts from the held-out rows and the eager fp32 model's greedy continuation of each:
    the plain argmax of its logits, through an end of sequence too (no generation_config
    rule such as a repetition penalty or a minimum length changes what the gate compares)."""
    import torch
    from transformers import DynamicCache

    lm = loaded.model.inner
    prompts, continuations = [], []
    for row, length in zip(
        sample.input_ids[:GEN_PROMPTS], sample.lengths[:GEN_PROMPTS], strict=True
    ):
        prompt = row[: max(2, min(int(length), GEN_PROMPT_TOKENS))].tolist()
        cache = DynamicCache(config=lm.config)
        ids, chosen = torch.tensor([prompt]), []
        with torch.no_grad():
            for _ in range(GEN_TOKENS):
                logits = lm(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1).logits
                chosen.append(int(logits[0, -1].argmax()))
                ids = torch.tensor([[chosen[-1]]])
        prompts.append(prompt)
        continuations.append(chosen)
    return prompts, continuations


def generated_parity(
    runner: Runner, prompts: list[list[int]], continuations: list[list[int]]
) -> dict[str, float]:
    """How often the decoder picks the eager model's next token along the eager model's own
    greedy continuation (each step is fed the eager token, so one early difference does not
    count as all the later ones), and how many tokens its own greedy run keeps equal."""
    agree = total = 0
    same_prefix = []
    for prompt, continuation in zip(prompts, continuations, strict=True):
        forced = prefill_then_decode(runner, prompt, continuation[:-1])
        agree += sum(int(a == b) for a, b in zip(forced, continuation, strict=True))
        total += len(continuation)
        kept = 0
        for a, b in zip(forced, continuation, strict=True):
            if a != b:
                break
            kept += 1
        same_prefix.append(kept / len(continuation))
    return {
        "generated_top1_agreement": agree / max(total, 1),
        "generated_exact_prefix": sum(same_prefix) / max(len(same_prefix), 1),
        "generated_tokens": float(total),
    }
