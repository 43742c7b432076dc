"""LoRA adapters placed on the loaded architecture's own layers, and QLoRA's k-bit base.

``lora.target_modules: all-linear`` means every linear layer of attention and MLP of the model
that was loaded: MLA's ``q_a_proj``/``kv_b_proj`` on DeepSeek-V3, ``q_proj``/``gate_proj`` on
Llama and Qwen, never ``lm_head`` or a classification head. A list names layers of this model;
each name must match at least one, or the run is refused with the names it has. The routed
experts of a fused mixture-of-experts block (transformers 5 stores them as 3-D parameters, not
linear layers) stay frozen; dense and shared-expert MLPs get adapters.

``lora.base_bits: 4 | 8`` loads the frozen base through bitsandbytes (nf4 with double
quantization, or int8), which needs a CUDA device and the bitsandbytes package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from offline.errors import ConfigError, TrainingError
from offline.train.config import LoraConfig

ALL_LINEAR = "all-linear"
# classification heads peft trains whole (modules_to_save) rather than through an adapter
HEAD_NAMES = ("score", "classifier")
_LAYER_PREFIX = re.compile(r"^(?:.*?\.)?\d+\.")  # "model.layers.3." in "model.layers.3.mlp.up_proj"


@dataclass(frozen=True)
class Targets:
    """The layers that get an adapter: full module names, in the model's order."""

    requested: str | list[str]
    modules: list[str]

    def by_name(self) -> dict[str, int]:
        """Per-layer names (``self_attn.q_proj``) and how many modules each covers."""
        return dict(Counter(layer_name(m) for m in self.modules))

    def record(self) -> dict[str, Any]:
        """What the start record and the training card say about the adapters."""
        return {"requested": self.requested, "modules": len(self.modules), "names": self.by_name()}

    def text(self) -> str:
        names = ", ".join(f"{n} x{c}" for n, c in self.by_name().items())
        return f"lora: {len(self.modules)} modules ({names})"


def layer_name(module: str) -> str:
    """``model.layers.3.mlp.up_proj`` -> ``mlp.up_proj``: the name inside its block."""
    return _LAYER_PREFIX.sub("", module)


def linear_layers(model: Any) -> list[str]:
    """Full names of ``model``'s linear layers an adapter may go on (no output or class head)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    heads = [model.get_output_embeddings(), *(getattr(model, n, None) for n in HEAD_NAMES)]
    skip = {id(h) for h in heads if h is not None}
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D) and id(module) not in skip
    ]


def resolve_targets(model: Any, requested: str | list[str]) -> Targets:
    """The layers ``requested`` names on ``model``; ConfigError naming any that match none."""
    layers = linear_layers(model)
    if requested == ALL_LINEAR:
        chosen = layers
    else:
        hits = {n: [m for m in layers if m == n or m.endswith(f".{n}")] for n in requested}
        unmatched = [n for n, found in hits.items() if not found]
        if unmatched:
            kind = getattr(model.config, "model_type", type(model).__name__)
            raise ConfigError(
                f"lora.target_modules: {', '.join(unmatched)} match no linear layer of this"
                f" model ({kind})",
                fix=f"use target_modules: {ALL_LINEAR}, or pick from its linear layers: "
                + ", ".join(dict.fromkeys(layer_name(m) for m in layers)),
            )
        picked = {m for found in hits.values() for m in found}
        chosen = [m for m in layers if m in picked]
    if not chosen:
        raise ConfigError("lora: this model has no linear layer to put an adapter on")
    return Targets(requested, chosen)


def peft_config(lora: LoraConfig, task: str, targets: Targets) -> Any:
    """peft's LoraConfig for exactly ``targets`` (full names: nothing else can match)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType

    return PeftLoraConfig(
        task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(targets.modules),
    )


@contextlib.contextmanager
def _names_as_given() -> Iterator[None]:
    """Keep peft from renaming targets as if they were transformers-4 names.

    peft 0.21 rewrites the targets of MoE architectures (DeepSeek-V2/V3, Qwen-MoE, ...) for
    adapters trained on transformers 4, where experts were linear layers: every
    ``*.gate_proj``/``up_proj``/``down_proj`` becomes the fused experts' parameter, so the dense
    and shared-expert MLPs would silently get no adapter (peft issue 3711). The names here come
    from the loaded model itself, so that rewrite does not apply to them.
    """
    try:
        from peft.utils import transformers_weight_conversion as conversion
    except ImportError:  # a peft without the rewrite
        yield
        return
    original = conversion.convert_peft_config_for_transformers
    conversion.convert_peft_config_for_transformers = lambda *args, **kwargs: None
    try:
        yield
    finally:
        conversion.convert_peft_config_for_transformers = original


def adapted_modules(peft_model: Any) -> list[str]:
    """Names (relative to the base model) of the modules that carry an adapter."""
    from peft.tuners.lora import LoraLayer

    return [n for n, m in peft_model.get_base_model().named_modules() if isinstance(m, LoraLayer)]


def add_adapters(model: Any, lora: LoraConfig, task: str) -> tuple[Any, Targets]:
    """``model`` with LoRA adapters on the layers ``lora.target_modules`` names."""
    from peft import get_peft_model

    targets = resolve_targets(model, lora.target_modules)
    with _names_as_given():
        wrapped = get_peft_model(model, peft_config(lora, task, targets))
    placed = adapted_modules(wrapped)
    if placed != targets.modules:
        missing = sorted(set(targets.modules) - set(placed))
        extra = sorted(set(placed) - set(targets.modules))
        raise TrainingError(
            f"peft placed adapters other than asked (missing {missing[:5]}, extra {extra[:5]})",
            fix="use the peft version the toolkit pins, or list lora.target_modules explicitly",
        )
    return wrapped, targets


# -- a k-bit base (QLoRA) ------------------------------------------------------------------
def check_kbit(bits: int, accelerator: str) -> None:
    """ConfigError, with the fix, where this host cannot load a ``bits``-bit base."""
    import torch

    if accelerator != "cuda" or not torch.cuda.is_available():
        raise ConfigError(
            f"lora.base_bits: {bits} loads the base model quantized by bitsandbytes, which needs"
            f" a CUDA device; this host has none (accelerator {accelerator})",
            fix="train on a CUDA host, or set lora.base_bits: null to train the adapters on a"
            " bf16/fp32 base",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"lora.base_bits: {bits} needs the bitsandbytes package, which is not installed here",
            fix="install the CUDA bundle (offline bundle build --spec bundle/cuda.toml carries"
            " bitsandbytes), or set lora.base_bits: null",
        )


def kbit_load_kwargs(bits: int, compute_dtype: Any) -> dict[str, Any]:
    """``from_pretrained`` arguments for a ``bits``-bit base on this rank's GPU."""
    import transformers

    config: Any = transformers.BitsAndBytesConfig  # untyped
    if bits == 4:
        quant = config(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    else:
        quant = config(load_in_8bit=True)
    return {"quantization_config": quant, "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}


def prepare_kbit(model: Any, activation_checkpointing: bool) -> Any:
    """peft's preparation of a k-bit base: frozen, norms in fp32, inputs that carry grads."""
    import peft

    prepare: Any = peft.prepare_model_for_kbit_training  # untyped
    return prepare(
        model,
        use_gradient_checkpointing=activation_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
