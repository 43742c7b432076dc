"""Benchmark the exported artifacts against the eager fp32 model: latency and size, as ratios.

Goal (issue "offline export"): TVM int8 latency <= 0.5x eager fp32, size <= 0.3x, top-1
agreement >= 99 %. One run trains the tiny DeepSeek-V3 LM on the sample conversations
(``offline train``, ``--train-steps``, as ``offline init``'s pipeline does: top-1 agreement
says little about a model whose logits are still noise), exports it with ``offline export``
in fp32 and int8 (TorchScript, pt2, TVM), each gated against the eager model on the held-out
conversations, and prints every artifact's p50 latency at batch 1 and 8 and its size relative
to eager fp32 (whose size is its safetensors file). Eager latencies are measured in each
export run; the ratio uses that run's. TVM is compiled for this machine's CPU (``--cpu``
default).

Run: ``.venv/bin/python benchmarks/edge_bench.py [--seq-len 64] [--runs 20] [--formats tvm]
[--json]``.
It reports, it does not assert.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--runs", type=int, default=20, help="latency runs per batch size")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument(
        "--formats", default="torchscript,pt2,tvm", help="comma-separated, default all three"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "benchmarks"))
    from train_bench import config, workspace

    from offline.deploy.export import export
    from offline.train.loop import train

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        root = workspace(Path(tmp), 2000)
        trained = config(root, "edge", args.train_steps, 0)
        with contextlib.redirect_stdout(sys.stderr):
            train(trained, root)
        model = root / trained.output_dir
        eager_bytes = sum(p.stat().st_size for p in model.glob("*.safetensors"))
        sample = root / "data/split/conversations/test.parquet"
        formats = args.formats.split(",")
        for quantize in ("none", "int8"):
            out = root / f"out-{quantize}"
            with contextlib.redirect_stdout(sys.stderr):
                export(
                    model,
                    out,
                    formats=formats,
                    quantize=quantize,
                    seq_len=args.seq_len,
                    sample=sample,
                    latency_runs=args.runs,
                )
            card = json.loads((out / "export_card.json").read_text())
            eager = card["eager"]["latency_ms"]
            if not rows:
                rows.append({"artifact": "eager fp32", "b1": 1.0, "b8": 1.0, "size": 1.0})
            for art in card["artifacts"]:
                lat = art["latency_ms"]
                rows.append(
                    {
                        "artifact": f"{art['format']} {'fp32' if quantize == 'none' else quantize}",
                        "b1": lat["b1_p50"] / eager["b1_p50"],
                        "b8": lat["b8_p50"] / eager["b8_p50"],
                        "size": art["bytes"] / eager_bytes,
                        "agreement": art["parity"]["top1_agreement"],
                        "b1_ms": lat["b1_p50"],
                        "b8_ms": lat["b8_p50"],
                        "cpu": art.get("cpu", ""),
                    }
                )
        side_by_side = _tvm_int8_vs_fp32(root, args.seq_len) if "tvm" in formats else None
    if args.json:
        print(json.dumps({"artifacts": rows, "tvm_int8_vs_fp32": side_by_side}, indent=2))
        return
    print(
        f"edge bench: tiny DeepSeek-V3 LM ({args.train_steps} training steps), seq_len"
        f" {args.seq_len}, p50 of {args.runs} runs,"
    )
    print("ratios to eager fp32 (latency at batch 1 and 8, size against its safetensors)")
    print(f"  {'artifact':<18}{'b1':>8}{'b8':>8}{'size':>8}{'top-1':>9}")
    for row in rows:
        agree = f"{row['agreement']:.1%}" if "agreement" in row else ""
        cpu = f"  (compiled for {row['cpu']})" if row.get("cpu") else ""
        print(
            f"  {row['artifact']:<18}{row['b1']:>7.2f}x{row['b8']:>7.2f}x{row['size']:>7.2f}x"
            f"{agree:>9}{cpu}"
        )
    print("  goal: TVM int8 latency <= 0.5x, size <= 0.3x, top-1 >= 99%")
    if side_by_side:
        print(
            f"TVM int8 / TVM fp32, interleaved in one process (b1 p50 of {side_by_side['runs']}):"
            f" {side_by_side['int8_ms']:.3f} / {side_by_side['fp32_ms']:.3f} ms"
            f" = {side_by_side['ratio']:.2f}x"
        )


def _tvm_int8_vs_fp32(root: Path, seq_len: int, runs: int = 30) -> dict[str, Any]:
    """The two host TVM libraries timed alternately, so that a noisy machine slows both alike:
    the export cards time each artifact minutes apart."""
    import statistics
    import time

    import numpy as np
    import tvm
    from tvm import relax

    libs = {q: next((root / f"out-{q}").glob("model-*-x86_64.so")) for q in ("none", "int8")}
    vms = {
        q: relax.VirtualMachine(tvm.runtime.load_module(str(p)), tvm.cpu()) for q, p in libs.items()
    }
    ids = tvm.runtime.tensor(np.random.default_rng(0).integers(3, 1000, (1, seq_len)))
    times: dict[str, list[float]] = {q: [] for q in vms}
    for _ in range(runs):
        for q, vm in vms.items():
            vm["main"](ids)
            start = time.perf_counter()
            for _ in range(5):
                vm["main"](ids)
            times[q].append((time.perf_counter() - start) / 5 * 1e3)
    fp32, int8 = statistics.median(times["none"]), statistics.median(times["int8"])
    return {"runs": runs, "fp32_ms": fp32, "int8_ms": int8, "ratio": int8 / fp32}


if __name__ == "__main__":
    main()
