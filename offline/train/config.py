"""Training configs: YAML plus ``key=value`` overrides, validated at once, and the DeepSpeed JSON.

``load_config`` lists every problem in one ConfigError (unknown keys, bad values, rules that tie
fields together, paths that do not exist) so ``offline train validate`` shows them all before
anything runs; ``deepspeed_config`` is what ``offline train plan`` prints and training uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from offline.config import Strict, apply_overrides, config_error, read_yaml, validate
from offline.data.layout import LAYOUT
from offline.errors import ConfigError


class DataConfig(Strict):
    train: str = LAYOUT.split_file("tickets", "train")
    validation: str | None = LAYOUT.split_file("tickets", "validation")
    max_length: int = Field(256, ge=8)
    label_column: str = "label"  # classification
    text_column: str | None = None  # pretrain/classification; None: `text`, else every text field
    labels: list[str] | None = None  # classification label set; None: the labels seen in train
    shuffle: bool = True  # a fresh permutation per epoch from the seed
    # sft/pretrain: examples share rows of max_length (positions restart at each, attention
    # stays inside each); fewer padding tokens per step
    packing: bool = False
    reasoning: bool = True  # sft: train on the assistant's reasoning_content where given


class LoraConfig(Strict):
    enabled: bool = False
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    # all-linear: every linear layer of attention and MLP of the loaded model (not lm_head or a
    # classification head); or names of its layers (q_proj, self_attn.o_proj), each must match
    target_modules: Literal["all-linear"] | list[str] = Field("all-linear", min_length=1)
    # 4 or 8: the frozen base is loaded quantized by bitsandbytes (QLoRA); needs CUDA
    base_bits: Literal[4, 8] | None = None


class CheckpointConfig(Strict):
    dir: str = LAYOUT.checkpoints
    full_every: int = Field(500, ge=1)  # engine, optimizer, scheduler, RNG, data position
    light_every: int = Field(100, ge=1)  # weights only
    keep: int = Field(3, ge=1)


class SpikeGuard(Strict):
    steps: int = Field(3, ge=1)  # consecutive steps above the EMA
    threshold: float = Field(0.15, gt=0)  # relative rise over the EMA
    action: Literal["warn", "stop", "rollback"] = "rollback"
    ema_decay: float = Field(0.9, gt=0, lt=1)
    warmup: int = Field(10, ge=1)  # steps that only feed the EMA before it judges
    lr_scale: float = Field(0.5, gt=0, le=1)  # LR factor after each rollback
    max_retries: int = Field(3, ge=0)  # rollbacks before the run stops


class ThroughputGuard(Strict):
    drop: float = Field(0.5, gt=0, lt=1)  # warn below this fraction of the running median
    window: int = Field(20, ge=3)


class GuardsConfig(Strict):
    spike: SpikeGuard = SpikeGuard()
    throughput: ThroughputGuard = ThroughputGuard()


class TrainConfig(Strict):
    """One training run; every key has a default except the model."""

    model: str
    task: Literal["sft", "classification", "pretrain"] = "sft"
    data: DataConfig = DataConfig()
    output_dir: str = LAYOUT.trained
    log_dir: str = (
        f"{LAYOUT.logs}/train"  # train.jsonl (a line per step and per event) and TensorBoard
    )
    metrics_file: str = LAYOUT.metric("train")
    plot_file: str = LAYOUT.metric("train_loss")
    eval_every: int = Field(50, ge=1)
    eval_batches: int = Field(50, ge=1)  # per evaluation, across all ranks
    # auto: bf16 on an accelerator that has it, else fp32 (CPU runs)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    zero_stage: int = Field(2, ge=0, le=3)
    offload_optimizer: Literal["none", "cpu"] = "none"
    offload_params: Literal["none", "cpu"] = "none"
    micro_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_steps: int = Field(200, ge=1)
    learning_rate: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(20, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    clip_grad_norm: float = Field(1.0, gt=0)
    activation_checkpointing: bool = False
    # causal LM loss from the last hidden states in chunks of this many target tokens, so the
    # full logits of a batch never exist at once; 0: the model's own loss
    loss_chunk_tokens: int = Field(1024, ge=0)
    seed: int = 42
    lora: LoraConfig = LoraConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    guards: GuardsConfig = GuardsConfig()

    @model_validator(mode="after")
    def _rules(self) -> TrainConfig:
        problems = []
        if self.offload_params == "cpu" and self.zero_stage != 3:
            problems.append("offload_params: cpu needs zero_stage: 3")
        if self.offload_optimizer == "cpu" and self.zero_stage == 0:
            problems.append("offload_optimizer: cpu needs zero_stage 1, 2 or 3")
        if self.warmup_steps >= self.max_steps:
            problems.append("warmup_steps must be below max_steps")
        if self.data.packing and self.task == "classification":
            problems.append("data.packing applies to task sft or pretrain, not classification")
        if self.checkpoint.light_every > self.checkpoint.full_every:
            problems.append("checkpoint.light_every must not exceed checkpoint.full_every")
        if self.lora.base_bits is not None and not self.lora.enabled:
            problems.append("lora.base_bits needs lora.enabled: true")
        if self.lora.base_bits is not None and self.zero_stage == 3:
            problems.append(
                "lora.base_bits needs zero_stage 0, 1 or 2 (ZeRO-3 partitions the packed weights)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _path_problems(cfg: TrainConfig, root: Path) -> list[str]:
    problems = []
    if not (root / cfg.model / "config.json").is_file():
        problems.append(
            f"model: {cfg.model} has no config.json (make one: offline train init-model --out"
            f" {cfg.model})"
        )
    for name, value in (("data.train", cfg.data.train), ("data.validation", cfg.data.validation)):
        if value is not None and not (root / value).exists():
            problems.append(f"{name}: {value} does not exist (run `dvc repro` to make the split)")
    return problems


def load_config(
    path: Path, overrides: list[str] | None = None, *, root: Path | None = None
) -> TrainConfig:
    """Read, override and validate a training config; every problem in one ConfigError."""
    data = read_yaml(path, "training config")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data = apply_overrides(data, overrides or [])
    cfg = validate(TrainConfig, data, str(path), fix=f"edit {path} or the key=value overrides")
    problems = _path_problems(cfg, root or path.parent)
    if problems:
        raise config_error(str(path), problems, fix=f"make what each line names, or edit {path}")
    return cfg


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto`` becomes bf16 on a CUDA device that supports it, fp32 elsewhere."""
    if precision != "auto":
        return precision
    if accelerator == "cuda":
        import torch

        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def uses_deepspeed_optimizer(cfg: TrainConfig, accelerator: str) -> bool:
    """DeepSpeed's CPU Adam for optimizer offload on a GPU; torch AdamW everywhere else.

    torch's AdamW needs no compiled op, so CPU runs (tests, the demo) start without a JIT build.
    """
    return cfg.offload_optimizer == "cpu" and accelerator == "cuda"


def deepspeed_config(
    cfg: TrainConfig, world_size: int = 1, accelerator: str = "cpu"
) -> dict[str, Any]:
    """The DeepSpeed JSON for ``cfg`` on ``world_size`` processes of ``accelerator``.

    The learning-rate schedule (linear warmup, cosine decay to ``min_lr_ratio``, scaled down
    after a spike rollback) is the toolkit's own and so is not in the JSON; the optimizer is
    there only when DeepSpeed's own is used (see :func:`uses_deepspeed_optimizer`).
    """
    precision = resolve_precision(cfg.precision, accelerator)
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.offload_optimizer == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": accelerator == "cuda"}
    if cfg.offload_params == "cpu":
        zero["offload_param"] = {"device": "cpu", "pin_memory": accelerator == "cuda"}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.gradient_accumulation_steps * world_size,
        "gradient_clipping": cfg.clip_grad_norm,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "zero_optimization": zero,
        "steps_per_print": 10**9,  # the toolkit logs; DeepSpeed's own print stays quiet
        "wall_clock_breakdown": False,
    }
    if uses_deepspeed_optimizer(cfg, accelerator):
        ds["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": cfg.learning_rate,
                "betas": list(BETAS),
                "eps": EPS,
                "weight_decay": cfg.weight_decay,
            },
        }
    elif cfg.offload_optimizer == "cpu":
        ds["zero_force_ds_cpu_optimizer"] = False  # torch AdamW on the offloaded CPU states
    return ds


BETAS = (0.9, 0.95)
EPS = 1e-8
