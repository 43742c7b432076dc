"""Benchmark ``offline train`` against a plain PyTorch AdamW loop: same model, batches, one run.

Goal: ``offline train`` reaches at least 0.9x the plain loop's tokens/s. The plain loop is what a
user would write by hand: forward, backward, gradient clipping, ``torch.optim.AdamW``, the same
warmup-cosine LambdaLR, nothing else. Ours is the real :class:`offline.train.loop.Trainer` with
the workspace's default ZeRO stage (``--zero``), its collectives, guards, JSONL and TensorBoard
logging. Both read the same tokenized sample conversations in the same order (``DataOrder``).

The machine is shared and noisy, so the two alternate in one process (plain, ours, plain, ours
...) for ``--rounds`` rounds; each times ``--steps`` steps after ``--warmup`` untimed ones, and the
ratio compares median step times (tokens/s). Checkpoints and evaluation are left out of both: they
are disk and extra forwards, not loop overhead.

``--mfu`` (CUDA only) trains a ~1B-parameter dense decoder in bf16 with ``offline train`` on
2048-token sequences and prints model FLOPs utilisation against the GPU's dense bf16 peak
(``--peak-tflops``, else a table of known parts). Goal: at least 50 %.

Run: ``.venv/bin/python benchmarks/train_bench.py [--rounds 3] [--steps 30] [--zero 2] [--json]``.
It reports, it does not assert.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# dense bf16 peak, TFLOP/s (vendor datasheets, without sparsity)
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def workspace(root: Path, rows: int) -> Path:
    """Sample data cleaned and split, and the tiny model, as ``offline init``'s pipeline makes."""
    import yaml

    from offline.data.clean import clean
    from offline.data.params import default_params, dump_params
    from offline.data.sample import generate
    from offline.data.split import split
    from offline.train.model_init import init_model

    generate(root / "data/raw", rows=rows, seed=1)
    params = default_params()
    params.clean.steps = ["normalize", "pii", "exact_dedup"]
    (root / "params.yaml").write_text(yaml.safe_dump(dump_params(params)))
    clean(root)
    split(root)
    init_model(root / "models/tiny", tokenizer_from=root / "data/clean")
    return root


def config(root: Path, name: str, steps: int, zero: int, **extra: Any) -> Any:
    from offline.train.config import TrainConfig

    data = {
        "model": "models/tiny",
        "task": "sft",
        "data": {"train": "data/split/conversations/train.parquet", "validation": None},
        "zero_stage": zero,
        "micro_batch_size": 8,
        "max_steps": steps,
        "warmup_steps": 2,
        "eval_every": 10**6,
        "output_dir": f"bench/{name}/model",
        "log_dir": f"bench/{name}/logs",
        "metrics_file": f"bench/{name}/train.json",
        "plot_file": f"bench/{name}/loss.json",
        "checkpoint": {"dir": f"bench/{name}/ckpt", "full_every": 10**6, "light_every": 10**6},
    }
    data.update(extra)
    return TrainConfig.model_validate(data)


def ours(root: Path, cfg: Any, warmup: int) -> list[float]:
    """tokens/s of each timed step of a real ``offline train`` run."""
    from offline.train.loop import train

    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed prints its op builds
        train(cfg, root)
    log = root / cfg.log_dir / "train.jsonl"
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    return [s["tokens_per_s"] for s in steps if "event" not in s and s["step"] > warmup]


def plain(root: Path, cfg: Any, warmup: int) -> list[float]:
    """The same steps in a hand-written loop: tokens/s of each timed step."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from offline.train.config import BETAS, EPS
    from offline.train.data import DataOrder, collate, load_dataset
    from offline.train.loop import WarmupCosine

    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(root / cfg.model, local_files_only=True)
    data = load_dataset(root / cfg.data.train, cfg.task, tok, max_length=cfg.data.max_length)
    model = AutoModelForCausalLM.from_pretrained(
        root / cfg.model, local_files_only=True, dtype=dtype
    ).to(device)
    model.config.use_cache = False
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0}],
        lr=cfg.learning_rate,
        betas=BETAS,
        eps=EPS,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, WarmupCosine(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    )
    order = DataOrder(len(data.examples), cfg.seed, cfg.data.shuffle)
    rates = []
    for step in range(1, cfg.max_steps + 1):
        indices, _ = order.take(cfg.micro_batch_size)
        batch = collate([data.examples[i] for i in indices], tok.pad_token_id, cfg.task)
        batch = {k: v.to(device) for k, v in batch.items()}
        started = time.perf_counter()
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        float(out.loss)  # wait for the step, as ours does when it logs the loss
        seconds = time.perf_counter() - started
        if step > warmup:
            rates.append(float(batch["attention_mask"].sum()) / seconds)
    return rates


def mfu(root: Path, steps: int, peak: float | None) -> dict[str, Any]:
    """~1B dense decoder, bf16, 2048-token sequences, through ``offline train`` on one GPU."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this host"}
    name = torch.cuda.get_device_name()
    peak = peak or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if peak is None:
        return {"skipped": f"unknown peak for {name}; pass --peak-tflops"}
    tok = AutoTokenizer.from_pretrained(root / "models/tiny", local_files_only=True)
    seq, layers, hidden = 2048, 16, 2048
    cfg1b = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=5632,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=seq,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(cfg1b)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(root / "models/dense-1b")
    tok.save_pretrained(root / "models/dense-1b")
    del model
    # long documents: the sample text joined until each is well over 2048 tokens
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = pq.read_table(root / "data/split/tickets/train.parquet").column("text").to_pylist()
    docs, current = [], ""
    for text in texts * 20:
        current += text + "\n"
        if len(current) > 4 * seq * 4:
            docs.append(current)
            current = ""
    pq.write_table(pa.table({"text": docs}), root / "data/long.parquet")
    cfg = config(
        root,
        "mfu",
        steps,
        2,
        model="models/dense-1b",
        task="pretrain",
        data={"train": "data/long.parquet", "validation": None, "max_length": seq},
        micro_batch_size=8,
        precision="bf16",
    )
    rates = ours(root, cfg, warmup=5)
    tokens_per_s = statistics.median(rates)
    # 6N per token for the matmuls with weights, plus attention scores and values
    flops_per_token = 6 * n_params + 12 * layers * hidden * seq
    achieved = tokens_per_s * flops_per_token / 1e12
    return {
        "device": name,
        "parameters": n_params,
        "tokens_per_s": tokens_per_s,
        "tflops": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak,
        "goal": 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per run")
    parser.add_argument("--zero", type=int, default=2, help="ZeRO stage of our run")
    parser.add_argument("--rows", type=int, default=2000, help="sample rows to generate")
    parser.add_argument("--mfu", action="store_true", help="also the 1B bf16 MFU run (CUDA)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        root = workspace(Path(tmp), args.rows)
        total = args.warmup + args.steps
        plain_rates: list[float] = []
        our_rates: list[float] = []
        for r in range(args.rounds):
            plain_rates += plain(root, config(root, f"plain{r}", total, args.zero), args.warmup)
            our_rates += ours(root, config(root, f"ours{r}", total, args.zero), args.warmup)
        result: dict[str, Any] = {
            "steps_timed": len(our_rates),
            "zero_stage": args.zero,
            "plain_tokens_per_s": statistics.median(plain_rates),
            "ours_tokens_per_s": statistics.median(our_rates),
        }
        result["ratio"] = result["ours_tokens_per_s"] / result["plain_tokens_per_s"]
        result["goal"] = 0.9
        if args.mfu:
            result["mfu"] = mfu(root, 40, args.peak_tflops)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    verdict = "PASS" if result["ratio"] >= 0.9 else "BELOW GOAL"
    print(
        f"offline train vs plain PyTorch AdamW loop (tiny DeepSeek-V3, micro-batch 8,"
        f" ZeRO {args.zero} vs none, {args.rounds} alternating rounds, median of"
        f" {len(our_rates)} steps each)\n"
        f"  plain loop     {result['plain_tokens_per_s']:>10,.0f} tokens/s\n"
        f"  offline train  {result['ours_tokens_per_s']:>10,.0f} tokens/s\n"
        f"  ratio          {result['ratio']:>10.2f}x  (goal >= 0.9x: {verdict})"
    )
    if "mfu" in result:
        m = result["mfu"]
        if "skipped" in m:
            print(f"  MFU: skipped ({m['skipped']})")
        else:
            print(
                f"  MFU ({m['device']}, {m['parameters'] / 1e9:.2f}B dense, bf16, seq 2048):"
                f" {m['tflops']:.0f} of {m['peak_tflops']:.0f} TFLOP/s = {m['mfu']:.1%}"
                f" (goal >= 50%)"
            )


if __name__ == "__main__":
    main()
