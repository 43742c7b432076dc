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
    from offline.data.sample.files import generate
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


def _smollm2() -> Path:
    """The converted model scripts/fetch-smollm2.sh leaves in its cache (or $SMOLLM2_DIR)."""
    if "SMOLLM2_DIR" in os.environ:
        return Path(os.environ["SMOLLM2_DIR"])
    cache = Path(os.environ.get("SMOLLM2_CACHE", REPO / ".cache/models/smollm2-135m-instruct"))
    found = sorted(p.parent for p in cache.glob("*/config.json"))
    return found[-1] if found else cache


SMOLLM2 = _smollm2()
LORA = {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.0}


def lora_config(root: Path, name: str, steps: int, model: Path, **extra: Any) -> Any:
    """SFT + LoRA (all linear layers) on ``model``, ZeRO 0: one process, no partitioning."""
    return config(root, name, steps, 0, model=str(model), lora=LORA, **extra)


def plain_lora(root: Path, cfg: Any, warmup: int) -> list[float]:
    """transformers + peft by hand on the same batches: useful tokens/s of each timed step."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from offline.train.config import BETAS, EPS
    from offline.train.data import DataOrder, collate, load_dataset, real_tokens

    torch.manual_seed(cfg.seed)
    tok = AutoTokenizer.from_pretrained(cfg.model, local_files_only=True)
    data = load_dataset(
        root / cfg.data.train,
        "sft",
        tok,
        max_length=cfg.data.max_length,
        packing=cfg.data.packing,
    )
    base = AutoModelForCausalLM.from_pretrained(cfg.model, local_files_only=True, dtype="float32")
    base.config.use_cache = False
    lora = cfg.lora
    model = get_peft_model(
        base,
        LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules="all-linear",
        ),
    )
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.learning_rate, betas=BETAS, eps=EPS)
    order = DataOrder(len(data.examples), cfg.seed, cfg.data.shuffle)
    rates = []
    for step in range(1, cfg.max_steps + 1):
        indices, _ = order.take(cfg.micro_batch_size)
        chunk = [data.examples[i] for i in indices]
        batch = collate(chunk, tok.pad_token_id, "sft")
        started = time.perf_counter()
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(out.loss)
        seconds = time.perf_counter() - started
        if step > warmup:
            rates.append(real_tokens(chunk) / seconds)
    return rates


RSS_STEP = """
import json, sys
from pathlib import Path
from offline.train.config import TrainConfig
from offline.train.loop import Trainer

root, cfg = Path(sys.argv[1]), TrainConfig.model_validate_json(sys.argv[2])
trainer = Trainer(cfg, root)
trainer.setup()
weights = sum(p.numel() * p.element_size() for p in trainer.engine.module.parameters())
Path("/proc/self/clear_refs").write_text("5")  # the peak from here on: one step
trainer.train_step()
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"weights_bytes": weights, "step_peak_rss_bytes": peak * 1024}))
"""


def qwen2_rss(root: Path, seq: int) -> dict[str, Any]:
    """Peak RSS of one LoRA step on a random-init model with Qwen2-1.5B's published shape."""
    import subprocess

    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    # DeepSeek-R1-Distill-Qwen-1.5B / Qwen2.5-1.5B: the published config
    shape = Qwen2Config(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        hidden_act="silu",
    )
    out = root / "models/qwen2-1.5b-shape"
    model: Any = Qwen2ForCausalLM(shape)
    model = model.to(torch.bfloat16)  # bf16 on disk: half the bytes to write
    model.save_pretrained(out)
    del model
    AutoTokenizer.from_pretrained(SMOLLM2, local_files_only=True).save_pretrained(out)
    cfg = lora_config(
        root,
        "rss",
        2,
        out,
        data={
            "train": "data/split/conversations/train.parquet",
            "validation": None,
            "max_length": seq,
            "packing": True,
        },
        micro_batch_size=1,
        warmup_steps=0,
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-c", RSS_STEP, str(root), cfg.model_dump_json()],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if run.returncode != 0:
        return {"failed": run.stderr[-2000:]}
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    result["ratio"] = result["step_peak_rss_bytes"] / result["weights_bytes"]
    result["goal"] = 2.5
    return result


def real_model(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """SFT + LoRA on SmolLM2: ours vs transformers + peft, and packing vs padding (ours)."""
    if not (SMOLLM2 / "config.json").is_file():
        return {"skipped": f"no model at {SMOLLM2}: run scripts/fetch-smollm2.sh"}
    total = args.warmup + args.steps
    plain_rates: list[float] = []
    our_rates: list[float] = []
    padded: list[float] = []
    packed: list[float] = []
    data = {"train": "data/split/conversations/train.parquet", "validation": None}
    for r in range(args.rounds):
        same = lora_config(root, f"lp{r}", total, SMOLLM2, data={**data, "max_length": 256})
        plain_rates += plain_lora(root, same, args.warmup)
        ours_cfg = lora_config(root, f"lo{r}", total, SMOLLM2, data={**data, "max_length": 256})
        our_rates += ours(root, ours_cfg, args.warmup)
        # the same tokens per step either way: 8 padded conversations, or rows of 1024
        pad_cfg = lora_config(root, f"pad{r}", total, SMOLLM2, data={**data, "max_length": 1024})
        padded += ours(root, pad_cfg, args.warmup)
        pack_cfg = lora_config(
            root,
            f"pack{r}",
            total,
            SMOLLM2,
            data={**data, "max_length": 1024, "packing": True},
            micro_batch_size=1,
        )
        packed += ours(root, pack_cfg, args.warmup)
    return {
        "plain_tokens_per_s": statistics.median(plain_rates),
        "ours_tokens_per_s": statistics.median(our_rates),
        "ratio": statistics.median(our_rates) / statistics.median(plain_rates),
        "goal": 1.0,
        "padded_tokens_per_s": statistics.median(padded),
        "packed_tokens_per_s": statistics.median(packed),
        "packing_ratio": statistics.median(packed) / statistics.median(padded),
        "packing_goal": 1.5,
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
    parser.add_argument(
        "--real", action="store_true", help="also SFT + LoRA on SmolLM2, packed and padded"
    )
    parser.add_argument(
        "--rss", type=int, default=0, metavar="SEQ", help="also the Qwen2-1.5B-shape LoRA step"
    )
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
        if args.real:
            result["smollm2"] = real_model(root, args)
        if args.rss:
            result["qwen2_rss"] = qwen2_rss(root, args.rss)
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
    if "smollm2" in result:
        m = result["smollm2"]
        if "skipped" in m:
            print(f"  SmolLM2: skipped ({m['skipped']})")
        else:
            print(
                f"SFT + LoRA on SmolLM2-135M-Instruct (all linear layers, r 8, ZeRO 0):\n"
                f"  transformers + peft  {m['plain_tokens_per_s']:>8,.0f} tokens/s\n"
                f"  offline train        {m['ours_tokens_per_s']:>8,.0f} tokens/s\n"
                f"  ratio                {m['ratio']:>8.2f}x  (goal >= 1.0x)\n"
                f"  padded (8 x up to 1024)  {m['padded_tokens_per_s']:>8,.0f} useful tokens/s\n"
                f"  packed (rows of 1024)    {m['packed_tokens_per_s']:>8,.0f} useful tokens/s\n"
                f"  packing ratio            {m['packing_ratio']:>8.2f}x  (goal >= 1.5x)"
            )
    if "qwen2_rss" in result:
        m = result["qwen2_rss"]
        if "failed" in m:
            print(f"  Qwen2-1.5B-shape RSS: failed\n{m['failed']}")
        else:
            print(
                f"One LoRA step, random-init Qwen2-1.5B shape, sequence {args.rss}, CPU fp32:\n"
                f"  weights {m['weights_bytes'] / 2**30:.2f} GiB, step peak RSS"
                f" {m['step_peak_rss_bytes'] / 2**30:.2f} GiB = {m['ratio']:.2f}x (goal <= 2.5x)"
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
