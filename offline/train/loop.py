"""``offline train``: the DeepSpeed training loop.

One process per rank. Started plainly (``offline train --config ...``) it is a world of one;
under DeepSpeed's launcher (``deepspeed ... -m offline.train ...``) every rank runs this same
code. Every decision that ends or rewinds the run (NaN loss, spike rollback, a failed
checkpoint write) is taken from values all ranks share, so they never diverge.

A step is one optimizer update: ``gradient_accumulation_steps`` micro-batches per rank. The
data order is a function of the seed and a global sample position (:class:`DataOrder`); a full
checkpoint stores that position, the RNG states of every rank, the guard state and the LR scale,
so ``--resume auto`` continues bit-for-bit where an uninterrupted run would be.

The :class:`Trainer` keeps the step loop and its state; it reads the typed config it is given
and works through three collaborators: the :class:`~offline.train.world.World` (rank, world
size, accelerator, the collectives), the :class:`~offline.train.plan.Plan` (run identity,
precision, DeepSpeed JSON, derived once) and the :class:`~offline.train.runlog.RunLog`
(stderr, ``train.jsonl``, TensorBoard). :mod:`offline.train.output` writes what a run leaves.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline.errors import ConfigError, DataError, NotFoundError, ResourceError, TrainingError
from offline.fsutil import build_dir
from offline.train.checkpoint import Channel, Found, read_manifest, step_name, verify
from offline.train.config import BETAS, EPS, TrainConfig, uses_deepspeed_optimizer
from offline.train.data import (
    DataOrder,
    Dataset,
    collate,
    load_dataset,
    open_examples,
    real_tokens,
    save_examples,
    target_tokens,
)
from offline.train.guards import SpikeDetector, ThroughputWatch
from offline.train.lora import add_adapters, check_kbit, kbit_load_kwargs, prepare_kbit
from offline.train.loss import use_chunked_loss
from offline.train.output import (
    exportable,
    merged,
    rebuilt,
    run_metrics,
    training_card,
    write_metrics,
    write_training_card,
)
from offline.train.plan import Plan
from offline.train.runlog import RunLog
from offline.train.world import World

OOM_FIX = (
    "lower micro_batch_size (raise gradient_accumulation_steps to keep the batch), use"
    " zero_stage: 3, offload_optimizer: cpu and offload_params: cpu, or"
    " activation_checkpointing: true"
)


def _dropped_text(data: Dataset) -> str:
    from offline.train.chat import REASONS

    parts = [
        f"{count} dropped: {REASONS.get(reason, reason)}"
        + (f" (e.g. {data.first_problem[reason]})" if data.first_problem.get(reason) else "")
        for reason, count in sorted(data.dropped_by.items(), key=lambda kv: -kv[1])
    ]
    return "; ".join(parts)


def _drop_fix(data: Dataset, max_length: int) -> str:
    worst = max(data.dropped_by, key=lambda r: data.dropped_by[r])
    return {
        "truncated": f"raise data.max_length (now {max_length}) or shorten the system prompts",
        "no_assistant_turn": "the conversations need assistant turns to learn from",
        "empty": "the assistant turns are empty: check the messages column",
        "template_refused": "fix the conversations the template refuses (roles, their order)",
        "template_mismatch": "use the model's published chat template",
    }.get(worst, "check the data")


def _wait_for(path: Path, failed: Path, timeout: float = 3600.0) -> None:
    """Wait for local rank 0 to write ``path`` (it writes ``failed`` if it cannot)."""
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if failed.is_file():
            raise DataError(f"local rank 0 could not prepare the data: {failed.read_text()}")
        if time.monotonic() > deadline:
            raise DataError(
                f"waited {timeout:.0f} s for local rank 0 to write {path}",
                fix="check rank 0's output; a shared checkpoint.dir must be writable",
            )
        time.sleep(0.2)


_STORE_FORMAT = 1  # the layout of the tokenized data files; bump when it changes


@dataclass
class TrainReport:
    output_dir: Path
    run_dir: Path
    steps: int
    metrics: dict[str, Any]
    resumed_from: int | None = None
    rollbacks: list[dict[str, Any]] = field(default_factory=list)


class WarmupCosine:
    """LR factor: linear warmup, cosine decay to ``min_ratio``, times ``scale`` (rollbacks).

    A callable object, so LambdaLR's state_dict carries ``scale`` into checkpoints.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio, self.scale = warmup, total, min_ratio, 1.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.scale * (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.scale * (self.min_ratio + (1 - self.min_ratio) * cosine)


def _write_failure(exc: Exception, where: Path) -> Exception:
    """``exc``, or a plain "no space left" when the disk under ``where`` is what ran out."""
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    with contextlib.suppress(OSError):
        full = full or shutil.disk_usage(where).free < 64 * 2**20
    return OSError(errno.ENOSPC, "no space left on device") if full else exc


def weight_decay_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's parameter groups: matrices decay, vectors (biases, norms) do not.

    A parameter ZeRO-3 built partitioned is a flat placeholder; its ``ds_shape`` is the real one.
    """
    trained = [p for p in model.parameters() if p.requires_grad]
    matrix = [len(getattr(p, "ds_shape", p.shape)) >= 2 for p in trained]
    return [
        {
            "params": [p for p, m in zip(trained, matrix, strict=True) if m],
            "weight_decay": weight_decay,
        },
        {"params": [p for p, m in zip(trained, matrix, strict=True) if not m], "weight_decay": 0.0},
    ]


class Trainer:
    """Everything one rank holds during a run: the config, the world, the log, and the state
    of the model, data order and guards that the steps change."""

    def __init__(self, cfg: TrainConfig, root: Path, *, resume: str = "none") -> None:
        self.cfg, self.root, self.resume = cfg, root, resume
        self.world = World()
        if cfg.lora.base_bits:
            check_kbit(cfg.lora.base_bits, self.world.accelerator)  # before any data or model work
        self.plan = Plan.make(cfg, root, self.world.size, self.world.accelerator)
        self.log = RunLog(root / cfg.log_dir, self.world.rank)
        self.full = Channel(self.plan.run_dir / "full", cfg.checkpoint.keep)
        self.light = Channel(self.plan.run_dir / "light", cfg.checkpoint.keep)
        spike = cfg.guards.spike
        self.spike = SpikeDetector(spike.steps, spike.threshold, spike.ema_decay, spike.warmup)
        self.throughput = ThroughputWatch(cfg.guards.throughput.drop, cfg.guards.throughput.window)
        self.spans: dict[int, tuple[int, int]] = {}  # step -> data positions it consumed
        self.rollbacks: list[dict[str, Any]] = []
        self.resumed_from: int | None = None
        self.step = 0
        self.tokens_seen = 0
        self.train_seconds = 0.0
        self.last_eval: dict[str, float] = {}
        self.lora_targets: dict[str, Any] | None = None  # the adapted layers (start record, card)
        self.chunked_loss = False  # whether the causal LM loss is computed in chunks

    # -- setup ---------------------------------------------------------------------------
    def setup(self) -> None:
        import deepspeed
        import torch
        import transformers
        from transformers import AutoTokenizer

        cfg = self.cfg
        hf_logging: Any = transformers.logging  # untyped
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
        model_dir = self.root / cfg.model
        try:
            self.tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise NotFoundError(
                f"model: {cfg.model} has no usable tokenizer ({exc})",
                fix="save the tokenizer into the model directory (tok.save_pretrained)",
            ) from None
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self._load_data()  # bad data fails here, before any process group or model exists
        self.world.join()
        transformers.set_seed(cfg.seed)
        self.model = self._load_model(model_dir)
        # ds_numel: a parameter ZeRO-3 built partitioned holds no elements here
        sizes = [
            (getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in self.model.parameters()
        ]
        self.trainable = sum(n for n, trained in sizes if trained)
        self.parameters = sum(n for n, _ in sizes)
        optimizer = None
        if not uses_deepspeed_optimizer(cfg, self.world.accelerator):
            optimizer = torch.optim.AdamW(
                weight_decay_groups(self.model, cfg.weight_decay),
                lr=cfg.learning_rate,
                betas=BETAS,
                eps=EPS,
            )
        self.schedule = WarmupCosine(cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        schedule = self.schedule

        def make_scheduler(opt: Any) -> Any:
            return torch.optim.lr_scheduler.LambdaLR(opt, schedule)

        try:
            self.engine, _, _, self.scheduler = deepspeed.initialize(
                model=self.model,
                optimizer=optimizer,
                model_parameters=None if optimizer else self.model.parameters(),
                lr_scheduler=make_scheduler,
                config=self.plan.deepspeed,
            )
        except torch.OutOfMemoryError:
            raise TrainingError("out of memory while placing the model", fix=OOM_FIX) from None
        self.world.device = self.engine.device

    def _load_data(self) -> None:
        cfg = self.cfg
        kwargs: dict[str, Any] = {
            "max_length": cfg.data.max_length,
            "text_column": cfg.data.text_column,
            "label_column": cfg.data.label_column,
            "label_names": cfg.data.labels,
            "reasoning": cfg.data.reasoning,
            "packing": cfg.data.packing,
        }
        self.train_data = self._stored("train", cfg.data.train, kwargs)
        if cfg.task == "classification" and not cfg.data.labels:
            kwargs["label_names"] = self.train_data.label_names
        self.val_data: Dataset | None = None
        if cfg.data.validation:
            self.val_data = self._stored("validation", cfg.data.validation, kwargs)
        self._report_data()
        per_step = self.plan.per_step
        if len(self.train_data.examples) < per_step:
            data = self.train_data
            kind = "packed rows" if cfg.data.packing else "usable examples"
            if not data.examples and data.dropped_by:
                raise DataError(
                    f"data.train: no usable example; {_dropped_text(data)}",
                    fix=_drop_fix(data, cfg.data.max_length),
                )
            raise ConfigError(
                f"data.train has {len(data.examples)} {kind}, fewer than one step's {per_step}"
                " (micro_batch_size x gradient_accumulation_steps x ranks)"
                + (f"; {_dropped_text(data)}" if data.dropped_by else ""),
                fix="lower micro_batch_size or gradient_accumulation_steps, or add data",
            )
        self.order = DataOrder(len(self.train_data.examples), cfg.seed, cfg.data.shuffle)

    def _stored(self, name: str, relative: str, kwargs: dict[str, Any]) -> Dataset:
        """Tokenized once per host (local rank 0) into a memory-mapped file all ranks read."""
        from offline import __version__

        key = hashlib.sha256(f"{__version__}:{_STORE_FORMAT}".encode()).hexdigest()[:8]
        path = self.plan.run_dir / "data" / f"{name}-{key}.arrow"
        failed = path.with_suffix(".failed")
        if not path.is_file():
            if self.world.local_rank == 0:
                failed.unlink(missing_ok=True)
                try:
                    data = load_dataset(self.root / relative, self.cfg.task, self.tok, **kwargs)
                    save_examples(data, path)
                except Exception as exc:
                    with contextlib.suppress(OSError):
                        failed.write_text(str(exc))
                    raise
            else:
                _wait_for(path, failed)
        return open_examples(path)

    def _report_data(self) -> None:
        data = self.train_data
        if self.cfg.data.packing:
            text = f"{data.rows} examples packed into {len(data.examples)} rows"
        else:
            text = f"{len(data.examples)} examples kept"
        if data.dropped_by:
            text += f", {_dropped_text(data)}"
        self.log.say(f"data.train: {text}")

    def _from_pretrained(self, model_dir: Path, **extra: Any) -> Any:
        """The base model for the task (a classifier gets this run's label set)."""
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        kwargs: dict[str, Any] = {"local_files_only": True, **extra}
        auto: Any = AutoModelForCausalLM
        if self.cfg.task == "classification":
            names = self.train_data.label_names
            auto = AutoModelForSequenceClassification
            kwargs.update(
                num_labels=len(names),
                id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)},
                pad_token_id=self.tok.pad_token_id,
            )
        try:
            return auto.from_pretrained(model_dir, **kwargs)
        except (OSError, ValueError) as exc:
            raise NotFoundError(
                f"model: cannot load {self.cfg.model} ({exc})",
                fix="point model at a local transformers directory (config.json + weights)",
            ) from None

    def _load_model(self, model_dir: Path) -> Any:
        """The model in the training precision (bf16 weights for a bf16 run: DeepSpeed's
        optimizer keeps the fp32 master copy), or a k-bit base; built straight into its
        partitions under ZeRO-3; then the adapters and the chunked loss."""
        import torch

        cfg = self.cfg
        bf16 = self.plan.precision == "bf16"
        kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if bf16 else torch.float32}
        if cfg.lora.base_bits:
            compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.plan.precision)
            kwargs.update(kbit_load_kwargs(cfg.lora.base_bits, compute or torch.float32))
        with self._zero3_construction():
            model = self._from_pretrained(model_dir, **kwargs)
        model.config.use_cache = False
        if cfg.lora.base_bits:
            model = prepare_kbit(model, cfg.activation_checkpointing)
        elif cfg.activation_checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        if cfg.lora.enabled:
            model, targets = add_adapters(model, cfg.lora, cfg.task)
            self.lora_targets = targets.record()
            self.log.say(targets.text())
        if cfg.task != "classification":
            self.chunked_loss = use_chunked_loss(model, cfg.loss_chunk_tokens)
        return model

    @contextlib.contextmanager
    def _zero3_construction(self) -> Iterator[None]:
        """Under ZeRO-3, ``from_pretrained`` builds the model inside ``deepspeed.zero.Init``, so
        no rank ever holds a whole copy. transformers finds the DeepSpeed config through a weak
        reference, held here for the load only: later models (the export) are built whole."""
        if self.cfg.zero_stage != 3:
            yield
            return
        from transformers.integrations import deepspeed as hf_deepspeed

        integration: Any = hf_deepspeed  # untyped
        held = integration.HfDeepSpeedConfig(self.plan.deepspeed)
        try:
            yield
        finally:
            integration.unset_hf_deepspeed_config()
            del held

    # -- checkpoints ---------------------------------------------------------------------
    def _client_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "data": self.order.state(),
            "spike": self.spike.state(),
            "lr_scale": self.schedule.scale,
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
            "rollbacks": self.rollbacks,
            "run_id": self.plan.run_id,
        }

    def _rng_state(self) -> dict[str, Any]:
        import numpy as np
        import torch

        state = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        if self.world.accelerator == "cuda":
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        import numpy as np
        import torch

        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and self.world.accelerator == "cuda":
            torch.cuda.set_rng_state(state["cuda"])

    def save_full(self) -> Path:
        """All ranks write their part; rank 0 seals and commits. A failure anywhere fails all."""
        import torch

        tmp = self.full.root / f".{step_name(self.step)}.tmp"
        if self.world.rank == 0:
            self.full.begin(self.step)
            (tmp / "rng").mkdir()
        self.world.barrier()
        error: Exception | None = None
        try:
            # a LoRA run's base is frozen and is re-read from the model directory on resume:
            # its checkpoints hold the trainable weights (and their optimizer state) only
            self.engine.save_checkpoint(
                str(tmp),
                tag="state",
                client_state=self._client_state(),
                save_latest=False,
                exclude_frozen_parameters=self.cfg.lora.enabled,
            )
            torch.save(self._rng_state(), tmp / "rng" / f"rank-{self.world.rank}.pt")
        except (OSError, RuntimeError) as exc:  # torch.save reports ENOSPC as RuntimeError
            error = _write_failure(exc, tmp)
        final = self.full.root / step_name(self.step)
        if self.world.all_ok(error is None) and self.world.rank == 0:
            try:
                meta = {"run_id": self.plan.run_id, "kind": "full", "data": self.order.state()}
                self.full.commit(tmp, self.step, meta)
            except (OSError, RuntimeError) as exc:
                error = _write_failure(exc, tmp)
        if not self.world.all_ok(error is None):
            if self.world.rank == 0:
                self.full.abort(tmp)
            self._raise_write_error(self.full, error)
        self.log.record(
            {"event": "checkpoint", "kind": "full", "step": self.step, "path": str(final)}
        )
        return final

    def save_light(self) -> Path | None:
        """Weights only (consolidated across ranks), as a safetensors model directory; a LoRA
        run's is its adapter (peft's adapter_model.safetensors + adapter_config.json)."""
        state = self.weights_state_dict()
        error: Exception | None = None
        final = self.light.root / step_name(self.step)
        if self.world.rank == 0:
            tmp = self.light.begin(self.step)
            try:
                # transformers' own format (it converts fused expert weights back)
                self.engine.module.save_pretrained(tmp, state_dict=state, safe_serialization=True)
                self.light.commit(tmp, self.step, {"run_id": self.plan.run_id, "kind": "light"})
            except (OSError, RuntimeError) as exc:
                error = _write_failure(exc, tmp)
                self.light.abort(tmp)
        if not self.world.all_ok(error is None):
            self._raise_write_error(self.light, error)
        self.log.record(
            {"event": "checkpoint", "kind": "light", "step": self.step, "path": str(final)}
        )
        return final

    def _raise_write_error(self, channel: Channel, error: Exception | None) -> None:
        previous = channel.newest_valid() if self.world.rank == 0 else None
        kept = f"; {previous.path.name} stays valid" if previous else ""
        reason = (error.strerror if isinstance(error, OSError) else None) or str(error or "")
        raise ResourceError(
            f"cannot write checkpoint {step_name(self.step)} in {channel.root}"
            f" ({reason or 'failed on another rank'}){kept}",
            fix="free space, lower checkpoint.keep, or set checkpoint.dir to a larger disk",
        )

    def weights_state_dict(self) -> dict[str, Any]:
        """What light checkpoints and the export need, on rank 0 (a collective)."""
        return self.trainable_state_dict() if self.cfg.lora.enabled else self.full_state_dict()

    def full_state_dict(self) -> dict[str, Any]:
        """The whole model's weights on rank 0 (a collective).

        ZeRO-3 gathers them layer by layer into rank 0's host memory: a full fine-tune's light
        checkpoints and export need the whole model once in one place.
        """
        if self.cfg.zero_stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()
            return dict(state) if state is not None else {}
        return dict(self.engine.module.state_dict()) if self.world.rank == 0 else {}

    def trainable_state_dict(self) -> dict[str, Any]:
        """The trained weights only (a LoRA run's adapters and heads) on rank 0; ZeRO-3 gathers
        just these (a collective)."""
        named = [(n, p) for n, p in self.engine.module.named_parameters() if p.requires_grad]
        gather: Any = contextlib.nullcontext()
        if self.cfg.zero_stage == 3:
            import deepspeed

            gather = deepspeed.zero.GatheredParameters([p for _, p in named])
        with gather:
            return {n: p.detach().cpu().clone() for n, p in named} if self.world.rank == 0 else {}

    def load(self, found: Found) -> dict[str, Any]:
        import torch

        path, client = self.engine.load_checkpoint(
            str(found.path), tag="state", load_module_strict=not self.cfg.lora.enabled
        )
        if path is None:
            raise TrainingError(f"DeepSpeed could not load {found.path}")
        rng = found.path / "rng" / f"rank-{self.world.rank}.pt"
        self._set_rng_state(torch.load(rng, weights_only=False))
        self.step = int(client["step"])
        self.order.restore(client["data"])
        self.spike.restore(client["spike"])
        self.schedule.scale = float(client["lr_scale"])
        self.tokens_seen = int(client["tokens_seen"])
        self.train_seconds = float(client["train_seconds"])
        self.rollbacks = list(client["rollbacks"])
        return dict(client)

    def _resume_target(self) -> tuple[Found | None, list[tuple[Path, str]]]:
        """The checkpoint to start from and the newer ones skipped as corrupt.

        Every rank decides this itself from the shared checkpoint directory (same files,
        same answer), so no collective is needed before the process group exists.
        """
        if self.resume == "none":
            if self.full.steps():
                raise ConfigError(
                    f"checkpoints of this run already exist in {self.plan.run_dir}",
                    fix="resume them with --resume auto, or remove that directory to start over",
                )
            return None, []
        if self.resume == "auto":
            found = self.full.newest_valid()
            if found is not None:
                return found, found.skipped
            return None, [(path, verify(path) or "") for _, path in self.full.steps()]
        path = Path(self.resume)
        problem = verify(path)
        if problem is None and not (path / "state").is_dir():
            problem = "not a full checkpoint (a light one holds weights only)"
        if problem is None and read_manifest(path).get("run_id") != self.plan.run_id:
            problem = (
                f"saved by run {read_manifest(path).get('run_id')}, not this run"
                f" ({self.plan.run_id}): the config, data or model differ"
            )
        if problem is not None:
            raise ConfigError(
                f"--resume {path}: {problem}",
                fix="pick a full checkpoint of this run, or --resume auto",
            )
        return Found(path, int(read_manifest(path)["step"]), []), []

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        import torch

        if self.val_data is None or not self.val_data.examples:
            return {}
        cfg, world, data = self.cfg, self.world, self.val_data.examples
        mb = cfg.micro_batch_size
        batches = min(math.ceil(len(data) / mb), cfg.eval_batches)
        sums = [0.0, 0.0, 0.0, 0.0]  # loss x weight, weight, correct, rows
        self.engine.eval()
        with torch.no_grad():
            for start in range(0, math.ceil(batches / world.size) * world.size, world.size):
                index = start + world.rank
                real = index < batches
                chunk = data[index * mb : (index + 1) * mb] if real else data[:mb]
                cpu_batch = collate(chunk, self.tok.pad_token_id, cfg.task)
                batch = {k: v.to(world.device) for k, v in cpu_batch.items()}
                out = self.engine(**batch)
                if not real:
                    continue  # every rank runs the same number of forwards (ZeRO-3 gathers)
                weight = target_tokens(batch, cfg.task)
                sums[0] += float(out.loss) * weight
                sums[1] += weight
                if cfg.task == "classification":
                    sums[2] += float((out.logits.argmax(-1) == batch["labels"]).sum())
                    sums[3] += len(chunk)
        self.engine.train()
        total = world.all_sum(sums)
        loss = total[0] / max(total[1], 1)
        metrics = {"eval_loss": loss, "perplexity": math.exp(min(loss, 50))}
        if cfg.task == "classification":
            metrics["accuracy"] = total[2] / max(total[3], 1)
        return metrics

    # -- the loop ------------------------------------------------------------------------
    def train_step(self) -> tuple[float, int, float]:
        """One optimizer step: (mean loss over ranks, input tokens over ranks, seconds)."""
        cfg, world = self.cfg, self.world
        mb, ga = cfg.micro_batch_size, cfg.gradient_accumulation_steps
        indices, span = self.order.take(self.plan.per_step)
        self.spans[self.step + 1] = span
        self.spans.pop(self.step + 1 - 10_000, None)
        started = time.perf_counter()
        losses, tokens = 0.0, 0
        for k in range(ga):
            offset = (k * world.size + world.rank) * mb
            chunk = [self.train_data.examples[i] for i in indices[offset : offset + mb]]
            batch = collate(chunk, self.tok.pad_token_id, cfg.task)
            batch = {key: value.to(world.device) for key, value in batch.items()}
            out = self.engine(**batch)
            loss = world.all_sum([float(out.loss.detach())])[0] / world.size
            if not math.isfinite(loss):
                self.order.position = span[0]  # the state saved is the one before this step
                path = self.save_full()
                raise TrainingError(
                    f"loss is {loss} at step {self.step + 1} (data positions {span[0]}..{span[1]});"
                    f" the state before that step is saved as {path}",
                    fix="lower learning_rate, use bf16 or fp32 rather than fp16, or inspect that"
                    " data; then continue with --resume auto",
                )
            self.engine.backward(out.loss)
            self.engine.step()
            losses += loss
            tokens += real_tokens(chunk)
        seconds = time.perf_counter() - started
        tokens = int(world.all_sum([float(tokens)])[0])
        return losses / ga, tokens, seconds

    def rollback(self, window: list[int]) -> None:
        spike = self.cfg.guards.spike
        if len(self.rollbacks) >= spike.max_retries:
            path = self.save_full()
            raise TrainingError(
                f"the loss spiked again at steps {window[0]}-{window[-1]} after"
                f" {len(self.rollbacks)} rollback(s); the state is saved as {path}",
                fix="lower learning_rate, inspect the data around those steps, or raise"
                " guards.spike.max_retries",
            )
        target = self.full.newest_valid(before=window[0]) if self.world.rank == 0 else None
        steps = self.world.all_sum([float(target.step) if target else -1.0])
        if steps[0] < 0:
            raise TrainingError(
                f"loss spike at steps {window[0]}-{window[-1]} and no full checkpoint before"
                f" step {window[0]} to roll back to",
                fix="save full checkpoints more often (checkpoint.full_every), or set"
                " guards.spike.action: warn",
            )
        found = Found(self.full.root / step_name(int(steps[0])), int(steps[0]), [])
        skip = (self.spans[window[0]][0], self.spans[window[-1]][1])
        scale = self.schedule.scale * spike.lr_scale
        event = {
            "spike_steps": window,
            "to_step": found.step,
            "skipped_positions": list(skip),
            "lr_scale": scale,
        }
        history = [*self.rollbacks, event]
        self.load(found)
        self.order.skip = sorted({*self.order.skip, skip})
        self.rollbacks = history
        self.schedule.scale = scale
        groups = self.scheduler.optimizer.param_groups
        for group, base in zip(groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * self.schedule(self.scheduler.last_epoch)
        if self.world.rank == 0:
            self.full.discard_after(found.step)
            self.light.discard_after(found.step)
        self.world.barrier()
        self.log.record({"event": "rollback", **history[-1]})
        self.log.say(
            f"loss spike at steps {window[0]}-{window[-1]}: rolled back to step {found.step},"
            f" skipping data positions {skip[0]}..{skip[1]}, LR x{scale:g}"
        )
        self.log.reopen_tensorboard(found.step + 1)

    def run(self) -> TrainReport:
        cfg, world, plan = self.cfg, self.world, self.plan
        target, skipped = self._resume_target()
        self.log.open(append=target is not None)
        for path, problem in skipped:
            self.log.say(f"warning: skipping checkpoint {path}: {problem}")
            self.log.record({"event": "checkpoint_skipped", "path": str(path), "problem": problem})
        self.setup()
        if target is not None:
            self.load(target)
            self.resumed_from = target.step
            self.log.record({"event": "resume", "step": target.step, "path": str(target.path)})
            self.log.say(f"resuming from {target.path} (step {target.step})")
        self.log.reopen_tensorboard(self.step + 1 if target else None)
        self.log.record(
            {
                "event": "start",
                "run_id": plan.run_id,
                "world_size": world.size,
                "accelerator": world.accelerator,
                "precision": plan.precision,
                "zero_stage": cfg.zero_stage,
                "parameters": self.parameters,
                "trainable": self.trainable,
                "examples": len(self.train_data.examples),
                "examples_before_packing": self.train_data.rows,
                "dropped": self.train_data.dropped_by,
                "lora_targets": self.lora_targets,
                "chunked_loss": self.chunked_loss,
            }
        )
        self.log.say(
            f"training {cfg.model} ({self.parameters:,} parameters, {self.trainable:,} trainable)"
            f" on {len(self.train_data.examples)} {cfg.task} examples: {world.size} x"
            f" {world.accelerator}, {plan.precision}, ZeRO {cfg.zero_stage}, run {plan.run_id}"
        )
        self.log.start_progress(cfg.max_steps, self.step)
        every = max(1, cfg.max_steps // 20)
        try:
            while self.step < cfg.max_steps:
                self._one_step(every)
        finally:
            self.log.stop_progress()
        if not self.last_eval or self.last_eval.get("step") != self.step:
            self._eval_and_log()
        return self.finish()

    def _one_step(self, every: int) -> None:
        import torch

        cfg = self.cfg
        try:
            loss, tokens, seconds = self.train_step()
        except torch.OutOfMemoryError:
            raise TrainingError(
                f"out of memory at step {self.step + 1} (micro_batch_size"
                f" {cfg.micro_batch_size}, zero_stage {cfg.zero_stage})",
                fix=OOM_FIX,
            ) from None
        self.step += 1
        self.tokens_seen += tokens
        self.train_seconds += seconds
        lr = float(self.scheduler.get_last_lr()[0])
        grad_norm = self.engine.get_global_grad_norm()
        record = {
            "step": self.step,
            "loss": round(loss, 6),
            "lr": lr,
            "grad_norm": None if grad_norm is None else round(float(grad_norm), 6),
            "tokens_per_s": round(tokens / seconds, 1),
            "samples_per_s": round(self.plan.per_step / seconds, 2),
            **self._memory(),
        }
        self.log.record(record)
        for name in ("loss", "lr", "grad_norm", "tokens_per_s"):
            if record[name] is not None:
                self.log.scalar(f"train/{name}", float(record[name]), self.step)
        if not self.log.progress(loss, lr) and (self.step % every == 0 or self.step == 1):
            self.log.say(
                f"step {self.step:>6}/{cfg.max_steps}  loss {loss:.4f}  lr {lr:.2e}"
                f"  {record['tokens_per_s']:,.0f} tok/s"
            )
        slow = self.throughput.update(tokens / seconds)
        if slow is not None:
            self.log.record({"event": "throughput_drop", "step": self.step, "median": slow})
            self.log.say(
                f"warning: throughput fell to {tokens / seconds:,.0f} tok/s at step {self.step}"
                f" (median {slow:,.0f}): another process on this host, swapping, or thermal limits"
            )
        window = self.spike.update(self.step, loss)
        if window is not None:
            self._on_spike(window)
            return
        if self.step % cfg.eval_every == 0:
            self._eval_and_log()
        if self.step % cfg.checkpoint.full_every == 0 or self.step == cfg.max_steps:
            self.save_full()
        elif self.step % cfg.checkpoint.light_every == 0:
            self.save_light()

    def _on_spike(self, window: list[int]) -> None:
        action = self.cfg.guards.spike.action
        ema = self.spike.ema or 0.0
        self.log.record({"event": "spike", "steps": window, "ema": ema, "action": action})
        message = (
            f"loss spike: steps {window[0]}-{window[-1]} ran more than"
            f" {self.cfg.guards.spike.threshold:.0%} above the EMA {ema:.4f}"
        )
        if action == "warn":
            self.log.say(f"warning: {message}")
        elif action == "stop":
            path = self.save_full()
            raise TrainingError(
                f"{message}; stopped, the state is saved as {path}",
                fix="inspect the data of those steps, lower learning_rate, then --resume auto",
            )
        else:
            self.rollback(window)

    def _eval_and_log(self) -> None:
        metrics = self.evaluate()
        if not metrics:
            return
        self.last_eval = {"step": self.step, **metrics}
        self.log.record({"event": "eval", **self.last_eval})
        for name, value in metrics.items():
            self.log.scalar(f"eval/{name}", value, self.step)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        self.log.say(f"eval at step {self.step}: {shown}")

    def _memory(self) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        with contextlib.suppress(ImportError):
            import psutil

            out["rss_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
        if self.world.accelerator == "cuda":
            out["accelerator_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            with contextlib.suppress(Exception):  # needs the NVML bindings
                out["accelerator_util"] = torch.cuda.utilization()
        return out

    # -- output ------------------------------------------------------------------------
    def finish(self) -> TrainReport:
        cfg = self.cfg
        state = self.weights_state_dict()
        out = self.root / cfg.output_dir
        history = self.log.losses(self.step)
        metrics = run_metrics(
            history,
            steps=self.step,
            tokens=self.tokens_seen,
            seconds=self.train_seconds,
            rollbacks=len(self.rollbacks),
            last_eval=self.last_eval,
        )
        if self.world.rank == 0:
            self._export(state, out, metrics)
            write_metrics(self.root / cfg.metrics_file, metrics, self.root / cfg.plot_file, history)
            self.log.close()
        self.world.barrier()
        return TrainReport(
            out, self.plan.run_dir, self.step, metrics, self.resumed_from, self.rollbacks
        )

    def _export(self, state: dict[str, Any], out: Path, metrics: dict[str, Any]) -> None:
        """HF safetensors directory + tokenizer + training card, built aside then renamed."""
        import torch

        cfg = self.cfg
        if cfg.lora.enabled:
            base = self._from_pretrained(self.root / cfg.model, dtype=torch.float32)
            model = merged(base, state, cfg.lora, cfg.task)
        else:
            model = rebuilt(state, cfg.task, self.engine.module.config)
        model = exportable(model, state)
        with build_dir(out) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            self.tok.save_pretrained(tmp)
            card = training_card(
                cfg,
                self.root,
                self.plan,
                self.world,
                self.train_data,
                parameters=self.parameters,
                trainable=self.trainable,
                lora_targets=self.lora_targets,
                chunked_loss=self.chunked_loss,
                metrics=metrics,
                resumed_from=self.resumed_from,
                rollbacks=self.rollbacks,
            )
            write_training_card(tmp, card)


def train(cfg: TrainConfig, root: Path, *, resume: str = "none") -> TrainReport:
    """Run ``cfg`` (paths relative to ``root``); see the module docstring."""
    return Trainer(cfg, root, resume=resume).run()
