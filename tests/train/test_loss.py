"""The chunked causal LM loss equals the model's own loss, in value and in gradients."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from offline.train.config import LoraConfig
from offline.train.lora import add_adapters
from offline.train.loss import ChunkedLossForward, chunked_causal_lm_loss, use_chunked_loss
from offline.train.model_init import SIZES


def deepseek(vocab: int = 300) -> Any:
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(0)
    config = DeepseekV3Config(vocab_size=vocab, tie_word_embeddings=False, **SIZES["tiny"])
    return DeepseekV3ForCausalLM(config)


def llama(vocab: int = 300) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,  # like SmolLM2: lm_head is the embedding
    )
    return LlamaForCausalLM(config)


def batch(vocab: int, packed: bool = False) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 40), generator=gen)
    labels = ids.clone()
    labels[:, :7] = -100  # the prompt
    labels[1, 30:] = -100  # padding
    labels[2, 15:21] = -100  # a second prompt
    out: dict[str, Any] = {"input_ids": ids, "labels": labels}
    if packed:  # rows of two examples: positions restart, no attention mask
        out["position_ids"] = torch.cat([torch.arange(25), torch.arange(15)]).repeat(3, 1)
    else:
        mask = torch.ones_like(ids)
        mask[1, 30:] = 0
        out["attention_mask"] = mask
    return out


def loss_and_grads(model: Any, data: dict[str, Any]) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(**data).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def assert_same(own: Any, chunked: Any) -> None:
    assert chunked[0] == pytest.approx(own[0], rel=1e-5)
    assert own[1].keys() == chunked[1].keys() and own[1]
    for name, grad in own[1].items():
        torch.testing.assert_close(chunked[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("make", [deepseek, llama])
@pytest.mark.parametrize("packed", [False, True])
def test_chunked_loss_and_gradients_equal_the_models_own(make: Any, packed: bool) -> None:
    model = make()
    data = batch(300, packed)
    own = loss_and_grads(model, data)
    assert use_chunked_loss(model, chunk=7)  # several chunks and a short last one
    assert isinstance(model.forward, ChunkedLossForward)
    assert_same(own, loss_and_grads(model, data))


def test_with_lora_only_the_adapters_get_gradients_and_they_match() -> None:
    model, _ = add_adapters(deepseek(), LoraConfig(enabled=True, dropout=0.0), "sft")
    for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapters act
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    data = batch(300)
    own = loss_and_grads(model, data)
    assert all("lora_" in n for n in own[1])
    assert use_chunked_loss(model, chunk=16)
    assert_same(own, loss_and_grads(model, data))


def test_no_full_logits_are_computed() -> None:
    model = llama()
    use_chunked_loss(model, chunk=8)
    shapes: list[tuple[int, ...]] = []
    model.lm_head.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    out = model(**batch(300))
    assert out.logits is None
    targets = int((batch(300)["labels"][:, 1:] != -100).sum())
    assert all(len(s) == 2 and s[0] <= 8 for s in shapes)  # (chunk, vocab), never (3, 40, vocab)
    assert sum(s[0] for s in shapes) == targets
    with torch.no_grad():  # without labels it is the model's own forward: logits for generation
        assert model(input_ids=batch(300)["input_ids"]).logits.shape == (3, 40, 300)


def test_chunk_zero_and_unknown_architectures_keep_their_own_loss() -> None:
    model = llama()
    assert not use_chunked_loss(model, chunk=0)
    model.config.model_type = "gemma2"  # soft-capped logits: not the plain cross-entropy
    assert not use_chunked_loss(model, chunk=64)
    assert not isinstance(model.forward, ChunkedLossForward)


def test_the_function_alone_matches_cross_entropy_over_targets() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 9, 16, generator=gen)
    head = torch.nn.Linear(16, 50, bias=False)
    labels = torch.randint(0, 50, (2, 9), generator=gen)
    labels[0, :4] = -100
    logits = head(hidden)[:, :-1].reshape(-1, 50)
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1))
    got = chunked_causal_lm_loss(hidden, labels, head, chunk=3)
    torch.testing.assert_close(got, expected)
