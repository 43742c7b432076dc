"""LoRA targets follow the loaded architecture; a k-bit base says why it cannot load here."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from offline.errors import ConfigError
from offline.train.config import LoraConfig
from offline.train.lora import add_adapters, check_kbit, layer_name, resolve_targets
from offline.train.model_init import SIZES

OLD_MLA_DEFAULT = ["q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"]


def deepseek(classify: bool = False) -> Any:
    from transformers import (
        DeepseekV3Config,
        DeepseekV3ForCausalLM,
        DeepseekV3ForSequenceClassification,
    )

    config = DeepseekV3Config(vocab_size=200, num_labels=3, pad_token_id=0, **SIZES["tiny"])
    return (DeepseekV3ForSequenceClassification if classify else DeepseekV3ForCausalLM)(config)


def small(kind: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    sizes = {
        "vocab_size": 200,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**sizes))
    return Qwen2ForCausalLM(Qwen2Config(**sizes))


def test_all_linear_on_deepseek_v3_covers_mla_and_the_dense_and_shared_mlps() -> None:
    model, targets = add_adapters(deepseek(), LoraConfig(enabled=True), "sft")
    assert targets.by_name() == {
        "self_attn.q_a_proj": 2,
        "self_attn.q_b_proj": 2,
        "self_attn.kv_a_proj_with_mqa": 2,
        "self_attn.kv_b_proj": 2,
        "self_attn.o_proj": 2,
        "mlp.gate_proj": 1,  # the dense first layer
        "mlp.up_proj": 1,
        "mlp.down_proj": 1,
        "mlp.shared_experts.gate_proj": 1,
        "mlp.shared_experts.up_proj": 1,
        "mlp.shared_experts.down_proj": 1,
    }
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not any("lm_head" in n or "experts.gate_up_proj" in n for n in trainable)
    assert targets.record()["modules"] == 16


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_all_linear_on_llama_and_qwen(kind: str) -> None:
    _, targets = add_adapters(small(kind), LoraConfig(enabled=True), "sft")
    names = ["q_proj", "k_proj", "v_proj", "o_proj"]
    expected = {f"self_attn.{n}": 2 for n in names}
    expected.update({f"mlp.{n}": 2 for n in ("gate_proj", "up_proj", "down_proj")})
    assert targets.by_name() == expected


def test_a_classifier_trains_its_head_whole_and_adapts_the_rest() -> None:
    lora = LoraConfig(enabled=True)
    model, targets = add_adapters(deepseek(classify=True), lora, "classification")
    assert "score" not in targets.modules and len(targets.modules) == 16
    heads = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert heads == ["base_model.model.score.modules_to_save.default.weight"]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_the_old_mla_list_is_refused_on_llama_and_qwen_naming_what_is_missing(kind: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_targets(small(kind), OLD_MLA_DEFAULT)  # o_proj alone would match
    text = str(caught.value)
    assert "q_a_proj, q_b_proj, kv_a_proj_with_mqa, kv_b_proj match no linear layer" in text
    assert kind in text and "o_proj match" not in text
    assert "self_attn.q_proj" in text and "mlp.down_proj" in text and "lm_head" not in text


def test_a_list_picks_exactly_its_layers_and_dotted_names_work() -> None:
    targets = resolve_targets(deepseek(), ["kv_b_proj", "shared_experts.down_proj"])
    assert [layer_name(m) for m in targets.modules] == [
        "self_attn.kv_b_proj",
        "self_attn.kv_b_proj",
        "mlp.shared_experts.down_proj",
    ]
    with pytest.raises(ConfigError, match="lm_head match no linear layer"):
        resolve_targets(deepseek(), ["lm_head"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU error path; this host has CUDA")
@pytest.mark.parametrize("bits", [4, 8])
def test_a_kbit_base_without_cuda_says_why_and_the_fix(bits: int) -> None:
    with pytest.raises(ConfigError) as caught:
        check_kbit(bits, "cpu")
    assert "needs a CUDA device" in str(caught.value) and "base_bits: null" in str(caught.value)
