"""The causal LM loss without the batch's full logits.

A model's own loss computes ``lm_head`` over every position of the batch and upcasts it to fp32:
batch x length x vocabulary floats, the largest tensor of a step for real vocabularies
(8 x 2048 x 129,280 fp32 is 8.5 GB, and backward keeps as much again). Here the decoder returns
its last hidden states and the loss takes only the positions whose label is not -100, in chunks
of ``chunk`` of them; each chunk's ``lm_head`` and cross-entropy run under activation
checkpointing, so backward keeps only the hidden states and recomputes a chunk's logits when it
reaches it. The result is the model's own loss (the mean over a micro-batch's target tokens).

``lm_head`` is called as a module inside the model's forward, so DeepSpeed ZeRO-3 gathers its
partitioned weight for each call (and again when a chunk is recomputed in backward).
"""

from __future__ import annotations

from typing import Any

IGNORE = -100
# architectures whose causal LM forward is lm_head(decoder(...)) and a plain cross-entropy
SUPPORTED = frozenset(
    {
        "deepseek_v2",
        "deepseek_v3",
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
    }
)


def chunked_causal_lm_loss(hidden: Any, labels: Any, head: Any, chunk: int) -> Any:
    """Mean next-token cross-entropy of ``head(hidden)`` against ``labels`` (-100: no loss)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    targets = labels[:, 1:]
    keep = targets != IGNORE
    states = hidden[:, :-1][keep]  # (targets, hidden size): the only positions with a loss
    wanted = targets[keep]
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, wanted.numel(), chunk):
        piece = slice(start, start + chunk)
        part = checkpoint(_summed_ce, head, states[piece], wanted[piece], use_reentrant=False)
        total = total + part
    return total / wanted.numel()


def _summed_ce(head: Any, states: Any, wanted: Any) -> Any:
    import torch

    logits = head(states).float()
    return torch.nn.functional.cross_entropy(logits, wanted, reduction="sum")


class ChunkedLossForward:
    """A causal LM's ``forward`` that computes a batch's loss with :func:`chunked_causal_lm_loss`.

    Without labels it is the model's own forward (generation, logits).
    """

    def __init__(self, model: Any, chunk: int) -> None:
        self.own = model.forward
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.chunk = chunk

    def __call__(self, *args: Any, labels: Any = None, **kwargs: Any) -> Any:
        from transformers.modeling_outputs import CausalLMOutputWithPast

        if labels is None or args:
            return self.own(*args, labels=labels, **kwargs)
        given = {k: v for k, v in kwargs.items() if v is not None and k != "logits_to_keep"}
        hidden = self.decoder(**given).last_hidden_state
        return CausalLMOutputWithPast(
            loss=chunked_causal_lm_loss(hidden, labels, self.head, self.chunk)
        )


def fits(model: Any) -> bool:
    """Whether ``model``'s loss is the plain one this module reproduces."""
    config = model.config
    return (
        getattr(config, "model_type", None) in SUPPORTED
        and not getattr(config, "output_router_logits", False)  # its aux loss is added in forward
        and model.get_output_embeddings() is not None
    )


def use_chunked_loss(model: Any, chunk: int) -> bool:
    """Make ``model`` (a causal LM, or a peft model around one) compute its loss in chunks.

    Returns whether it does: not with ``chunk`` 0, nor for an architecture outside
    :data:`SUPPORTED` (those keep their own loss).
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if chunk <= 0 or not fits(inner):
        return False
    # an instance attribute: nn.Module.__call__ and peft's LoraModel (self.model.forward) use it
    inner.forward = ChunkedLossForward(inner, chunk)
    return True
