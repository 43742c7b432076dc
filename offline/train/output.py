"""What a finished run leaves: the trained model directory, its training card, the metrics.

The model directory (``output_dir``) is a plain transformers one in safetensors: a full
fine-tune's weights in a fresh model of the architecture, a LoRA run's adapters merged into the
base re-read in fp32. Beside the weights and tokenizer, ``training_card.json`` says what made
them: config, DeepSpeed JSON, data and model digests, the dvc.lock outputs the data came from,
metrics, rollbacks and package versions. ``metrics_file`` and ``plot_file`` are the DVC metrics
and the loss plot's data.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from offline.errors import TrainingError
from offline.fsutil import atomic_write_text
from offline.redact import redact_tree
from offline.train.config import LoraConfig, TrainConfig
from offline.train.data import Dataset
from offline.train.lora import add_adapters
from offline.train.plan import Plan
from offline.train.world import World


def _dvc_lineage(root: Path, paths: list[str]) -> list[dict[str, Any]]:
    """The dvc.lock outputs that hold ``paths`` (stage, path, md5), for the training card."""
    import yaml

    lock = root / "dvc.lock"
    if not lock.is_file():
        return []
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    found = []
    for stage, body in stages.items():
        for out in body.get("outs", []):
            out_path = str(out.get("path", "")).rstrip("/")
            if any(p == out_path or p.startswith(out_path + "/") for p in paths):
                found.append({"stage": stage, "path": out_path, "md5": out.get("md5")})
    return found


def _versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("deepseek-offline", "torch", "transformers", "deepspeed", "peft"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def run_metrics(
    history: list[dict[str, Any]],
    *,
    steps: int,
    tokens: int,
    seconds: float,
    rollbacks: int,
    last_eval: dict[str, float],
) -> dict[str, Any]:
    """The run's metrics: ``history`` is the loss by step (rank 0's; empty on other ranks)."""
    last = [h["loss"] for h in history[-10:]]
    metrics: dict[str, Any] = {
        "steps": steps,
        "loss": history[-1]["loss"] if history else None,
        "loss_first": history[0]["loss"] if history else None,
        "loss_last10": sum(last) / len(last) if last else None,
        "tokens": tokens,
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        "rollbacks": rollbacks,
    }
    metrics.update({k: v for k, v in last_eval.items() if k != "step"})
    return metrics


def rebuilt(state: dict[str, Any], task: str, config: Any) -> Any:
    """A plain fp32 model of the architecture ``config`` holding a full fine-tune's ``state``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto: Any = (
        AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    )
    fresh = auto.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(state, strict=True)
    return fresh


def merged(base: Any, adapters: dict[str, Any], lora: LoraConfig, task: str) -> Any:
    """``base`` (the model as the run froze it, re-read in fp32) with the trained ``adapters``
    merged in (a k-bit run's merge into the unquantized weights)."""
    model, _ = add_adapters(base, lora, task)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    unexpected = model.load_state_dict(adapters, strict=False).unexpected_keys
    if unexpected or not trained <= set(adapters):
        raise TrainingError(
            f"the trained adapters do not fit the base model (unexpected {unexpected[:3]},"
            f" missing {sorted(trained - set(adapters))[:3]})"
        )
    return model.merge_and_unload()


def exportable(model: Any, state: dict[str, Any]) -> Any:
    """``model`` in the dtype ``state`` was trained in (where it has one), ready to generate."""
    dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(dtypes) == 1:
        model = model.to(dtypes.pop())
    model.config.use_cache = True
    return model


def training_card(
    cfg: TrainConfig,
    root: Path,
    plan: Plan,
    world: World,
    data: Dataset,
    *,
    parameters: int,
    trainable: int,
    lora_targets: dict[str, Any] | None,
    chunked_loss: bool,
    metrics: dict[str, Any],
    resumed_from: int | None,
    rollbacks: list[dict[str, Any]],
) -> dict[str, Any]:
    """The card of a run of ``cfg`` (paths relative to ``root``) that trained on ``data``."""
    data_paths = [p for p in (cfg.data.train, cfg.data.validation) if p]
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base_model": cfg.model,
        "task": cfg.task,
        "label_names": data.label_names or None,
        "parameters": parameters,
        "trainable_parameters": trainable,
        "lora_merged": cfg.lora.enabled,
        "lora_targets": lora_targets,
        "chunked_loss": chunked_loss,
        "seed": cfg.seed,
        "run_id": plan.run_id,
        "world_size": world.size,
        "accelerator": world.accelerator,
        "precision": plan.precision,
        "config": cfg.model_dump(),
        "deepspeed": plan.deepspeed,
        "data": {
            "digests": plan.identity["data_digest"],
            "train_examples": len(data.examples),
            "train_examples_before_packing": data.rows,
            "dropped": data.dropped_by,
            "dvc_lock": _dvc_lineage(root, data_paths),
        },
        "model_digest": plan.identity["model_digest"],
        "metrics": metrics,
        "resumed_from": resumed_from,
        "rollbacks": rollbacks,
        "versions": _versions(),
    }


def write_training_card(directory: Path, card: dict[str, Any]) -> dict[str, Any]:
    """Write ``card`` as ``directory/training_card.json`` with credentials masked (see
    ``offline.redact``: a config value or an error can carry one); returns it as written."""
    shown: dict[str, Any] = redact_tree(card)
    text = json.dumps(shown, indent=2, sort_keys=True) + "\n"
    (directory / "training_card.json").write_text(text)
    return shown


def write_metrics(
    metrics_file: Path, metrics: dict[str, Any], plot_file: Path, history: list[dict[str, Any]]
) -> None:
    """The DVC metrics and the loss plot's points, each written atomically."""
    for path, data in ((metrics_file, metrics), (plot_file, history)):
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
