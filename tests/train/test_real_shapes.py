"""Published architectures cut down (Qwen2.5, Llama 3.1, DeepSeek-V2-Lite): the configs keep
what was published, and SFT with LoRA on `all-linear` trains each through its own chat format,
puts adapters on its attention and MLP layers, and exports a merged model that generates."""

# ruff: noqa: RUF001 -- Chinese text with its own punctuation

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from offline.cli import app
from offline.errors import ConfigError
from offline.train import shapes
from offline.train.model_init import init_model
from tests.train.conftest import log_records, offline_train, weights, write_config

TEXTS = ["我的快递还没到，where is my parcel #A-1029?", "The invoice is wrong; 发票开错了。"] * 20

# What LoRA's all-linear must adapt, per decoder layer: every linear layer of attention and of
# the MLP. DeepSeek-V2-Lite's first layer is dense (first_k_dense_replace 1); the MoE layer's
# linear layers are the shared experts' (its routed experts are fused 3-D parameters and its
# router a plain weight, both left frozen).
ATTENTION = {
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "llama3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "deepseek-v2": ["q_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"],
}
MLP = ["gate_proj", "up_proj", "down_proj"]
MLP_BY_LAYER = {
    "qwen2": [MLP, MLP],
    "llama3": [MLP, MLP],
    "deepseek-v2": [MLP, [f"shared_experts.{n}" for n in MLP]],
}
CLASSES = {
    "qwen2": "Qwen2ForCausalLM",
    "llama3": "LlamaForCausalLM",
    "deepseek-v2": "DeepseekV2ForCausalLM",
}
# deepseek-v2 is trained through DeepSeek-R1's format (thinking prompt, history after </think>)
FORMAT = {"qwen2": "qwen2.5", "llama3": "llama3.1", "deepseek-v2": "deepseek-r1"}
# the sample's conversations start their first reply within 256 tokens in every format here
MAX_LENGTH = 256


def tiny_config(arch: str) -> Any:
    fmt = shapes.FORMATS[shapes.published(arch)["chat_format"]]
    return shapes.model_config(arch, "tiny", shapes.train_tokenizer(TEXTS, fmt, 400), fmt)


def rope_published(config: dict[str, Any]) -> dict[str, Any]:
    rope = dict(config.get("rope_scaling") or {})
    rope["rope_type"] = rope.pop("type", rope.get("rope_type", "default"))
    return {**rope, "rope_theta": config["rope_theta"]}


# -- the configs ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", shapes.SHAPES)
def test_a_cut_down_config_keeps_every_published_value_but_depth_and_width(arch: str) -> None:
    spec = shapes.published(arch)
    published, cut = spec["config"], spec["sizes"]["tiny"]
    config = tiny_config(arch)
    remapped = {"vocab_size", "bos_token_id", "eos_token_id", "rope_theta", "rope_scaling"}
    if published.get("use_sliding_window") is False:
        remapped.add("sliding_window")  # transformers keeps none where it is switched off
    kept = {k: v for k, v in published.items() if k not in cut and k not in remapped}
    assert {k: getattr(config, k) for k in kept} == kept
    rope = {k: v for k, v in config.rope_parameters.items() if k != "type"}
    want = rope_published(published)
    assert rope == want
    assert cut["num_hidden_layers"] == 2 and cut["hidden_size"] <= 128
    ratio = published["num_attention_heads"] // published["num_key_value_heads"]
    assert cut["num_attention_heads"] // cut["num_key_value_heads"] == ratio  # GQA kept


def test_the_published_values_agree_with_transformers_own_configs() -> None:
    """transformers documents DeepseekV2Config from DeepSeek-V2-Lite and Qwen2Config's
    vocabulary from Qwen2: where its defaults describe the same model, they agree."""
    from transformers import DeepseekV2Config, Qwen2Config

    lite, ds = shapes.published("deepseek-v2")["config"], DeepseekV2Config()
    for key in (
        "kv_lora_rank",
        "n_routed_experts",
        "n_shared_experts",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "v_head_dim",
        "vocab_size",
        "topk_method",
        "norm_topk_prob",
        "routed_scaling_factor",
        "rms_norm_eps",
        "hidden_act",
    ):
        assert getattr(ds, key) == lite[key], key
    assert Qwen2Config().vocab_size == shapes.published("qwen2")["config"]["vocab_size"]


def test_each_architecture_is_built_as_published() -> None:
    from transformers import AutoModelForCausalLM

    auto: Any = AutoModelForCausalLM
    qwen = auto.from_config(tiny_config("qwen2"))
    attn = qwen.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None  # Qwen2's qkv bias
    assert qwen.lm_head.weight is qwen.model.embed_tokens.weight  # tied
    assert set(qwen.config.layer_types) == {"full_attention"}  # no sliding window

    llama = auto.from_config(tiny_config("llama3"))
    assert llama.lm_head.weight is not llama.model.embed_tokens.weight
    assert llama.config.rope_parameters["rope_type"] == "llama3"

    ds = auto.from_config(tiny_config("deepseek-v2"))
    dense, moe = (layer.mlp for layer in ds.model.layers)
    assert type(dense).__name__ == "DeepseekV2MLP" and type(moe).__name__ == "DeepseekV2Moe"
    mla = {name for name, _ in ds.model.layers[0].self_attn.named_children()}
    assert mla == {"q_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj"}
    assert moe.experts.gate_up_proj.shape[0] == 8 and moe.gate.top_k == 6


def test_init_model_builds_each_architecture_with_its_family_format(
    train_ws: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train",
            "init-model",
            "--out",
            str(tmp_path / "llama"),
            "--tokenizer-from",
            str(train_ws / "data/clean"),
            "--arch",
            "llama3",
            "--vocab-size",
            "600",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["chat_format"] == "llama3.1"
    assert done["source"] == "meta-llama/Llama-3.1-8B-Instruct"
    saved = (tmp_path / "llama/chat_template.jinja").read_text()
    assert saved == shapes.FORMATS["llama3.1"].template()
    other = init_model(
        tmp_path / "qwen-r1",
        tokenizer_from=train_ws / "data/clean",
        arch="qwen2",
        vocab_size=600,
        chat_format="deepseek-r1",
    )
    assert other.chat_format == "deepseek-r1"
    with pytest.raises(ConfigError, match="unknown --chat-format"):
        init_model(tmp_path / "x", tokenizer_from=train_ws / "data/clean", chat_format="alpaca")
    with pytest.raises(ConfigError, match="unknown --size"):
        init_model(tmp_path / "y", tokenizer_from=train_ws / "data/clean", arch="qwen2", size="7b")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# -- SFT with LoRA -------------------------------------------------------------------------
def expected_adapted(arch: str) -> set[str]:
    return {
        f"model.layers.{i}.{part}.{name}.weight"
        for i, mlp in enumerate(MLP_BY_LAYER[arch])
        for part, names in (("self_attn", ATTENTION[arch]), ("mlp", mlp))
        for name in names
    }


@pytest.fixture(scope="module")
def trained(train_ws: Path) -> dict[str, dict[str, Any]]:
    """Each architecture built, then 10 LoRA SFT steps through its chat format."""
    runs = {}
    for arch in shapes.SHAPES:
        init_model(
            train_ws / f"models/shape-{arch}",
            tokenizer_from=train_ws / "data/clean",
            arch=arch,
            vocab_size=1000,
            chat_format=FORMAT[arch],
        )
        config = write_config(
            train_ws,
            f"shape-{arch}",
            model=f"models/shape-{arch}",
            data={"max_length": MAX_LENGTH},
            max_steps=10,
            warmup_steps=1,
            learning_rate=0.01,
            eval_every=10,
            eval_batches=2,
            lora={"enabled": True, "r": 8, "target_modules": "all-linear"},
            checkpoint={"full_every": 10, "light_every": 10, "keep": 1},
        )
        proc = offline_train("--config", str(config), "--json")
        runs[arch] = {"rc": proc.returncode, "stderr": proc.stderr, "stdout": proc.stdout}
    return runs


def run_of(trained: dict[str, dict[str, Any]], arch: str) -> dict[str, Any]:
    run = trained[arch]
    assert run["rc"] == 0, run["stderr"][-4000:]
    result: dict[str, Any] = json.loads(run["stdout"])
    return result


@pytest.mark.integration
@pytest.mark.parametrize("arch", shapes.SHAPES)
def test_sft_keeps_the_conversations_and_the_loss_falls(
    train_ws: Path, trained: dict[str, dict[str, Any]], arch: str
) -> None:
    run_of(trained, arch)
    records = log_records(train_ws / f"out/shape-{arch}/logs")
    start = next(r for r in records if r.get("event") == "start")
    rows = pq.read_metadata(train_ws / "data/split/conversations/train.parquet").num_rows
    assert start["examples"] == rows and not start["dropped"], start
    losses = [r["loss"] for r in records if "event" not in r]
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < losses[0], losses
    # and on held-out conversations, the merged model beats the base it started from
    base, merged = (
        held_out_loss(train_ws, train_ws / path)
        for path in (f"models/shape-{arch}", f"out/shape-{arch}/model")
    )
    assert merged < base - 0.01, (base, merged)


def held_out_loss(ws: Path, model_dir: Path, count: int = 16) -> float:
    """Mean loss on the assistant's tokens of the first validation conversations."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from offline.train.chat import encode_conversation

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    model.eval()
    table = pq.read_table(ws / "data/split/conversations/validation.parquet")
    losses = []
    for messages in table.column("messages").to_pylist()[:count]:
        ids, labels = encode_conversation(tok, messages, max_length=MAX_LENGTH)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        losses.append(float(out.loss))
    return sum(losses) / len(losses)


@pytest.mark.integration
@pytest.mark.parametrize("arch", shapes.SHAPES)
def test_lora_all_linear_adapts_attention_and_mlp_of_each_architecture(
    train_ws: Path, trained: dict[str, dict[str, Any]], arch: str
) -> None:
    """The merged export differs from the base exactly where adapters were: every attention
    and MLP linear layer; embeddings, norms, biases, routed experts and the router as built."""
    run_of(trained, arch)
    base = weights(train_ws / f"models/shape-{arch}")
    merged = weights(train_ws / f"out/shape-{arch}/model")
    assert not [k for k in merged if "lora" in k or "base_layer" in k]
    assert set(merged) == set(base)
    changed = {k for k in base if not (base[k] == merged[k]).all()}
    assert changed == expected_adapted(arch), (
        f"missing {sorted(expected_adapted(arch) - changed)}, "
        f"extra {sorted(changed - expected_adapted(arch))}"
    )


@pytest.mark.integration
@pytest.mark.parametrize("arch", shapes.SHAPES)
def test_the_merged_model_loads_keeps_its_shape_and_generates(
    train_ws: Path, trained: dict[str, dict[str, Any]], arch: str
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_of(trained, arch)
    out = train_ws / f"out/shape-{arch}/model"
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert type(model).__name__ == CLASSES[arch]
    base = json.loads((train_ws / f"models/shape-{arch}/config.json").read_text())
    saved = json.loads((out / "config.json").read_text())
    for key in ("rope_parameters", "tie_word_embeddings", "num_key_value_heads", "rms_norm_eps"):
        assert saved[key] == base[key], key
    assert tok.chat_template == shapes.FORMATS[FORMAT[arch]].template()
    prompt: Any = tok.apply_chat_template(
        [{"role": "user", "content": "我的快递还没到"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        ids = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert ids.shape[1] > prompt["input_ids"].shape[1]
