"""Published architectures cut down, with their families' tokens and chat formats.

``offline train init-model --arch qwen2 | llama3 | deepseek-v2`` builds a random-weight model
from the ``config.json`` its family published (``assets/configs``: Qwen2.5-1.5B-Instruct,
Llama-3.1-8B-Instruct, DeepSeek-V2-Lite-Chat) with only depth and widths cut (each file's
``sizes``): heads keep their grouped-query ratio, and rope type and scaling, norm epsilon,
activation, tied embeddings and the mixture-of-experts routing (experts per token, shared
experts, dense first layers, greedy softmax gate) stay as published.

The tokenizer is a byte-level BPE trained on local text, with the special tokens of a chat
format and its template (``assets/chat``). Each template renders its family's published
format for system, user and assistant turns: ``qwen2.5`` (ChatML with Qwen's default system
message), ``llama3.1`` (headers and the knowledge-date system block), ``deepseek-r1`` (only the
text after ``</think>`` is kept; the generation prompt opens ``<think>``), ``deepseek-v3``
(also DeepSeek-V2.5's), ``mistral`` ([INST], strict alternation) and ``gemma`` (no system
role). None has ``{% generation %}`` marks: real templates do not.
"""

# ruff: noqa: RUF001 -- DeepSeek's special tokens are spelled with full-width bars

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from offline.errors import ConfigError

ASSETS = Path(__file__).with_name("assets")
SHAPES = ("qwen2", "llama3", "deepseek-v2")
# bookkeeping of the published files, not architecture: dropped when building
_NOT_ARCHITECTURE = ("torch_dtype", "transformers_version", "auto_map")


@dataclass(frozen=True)
class ChatFormat:
    """A family's tokens: the tokenizer's named ones, the rest of its special tokens, plain
    added tokens, and the tokens its ``config.json`` names as begin and end of sequence."""

    name: str
    bos: str | None
    eos: str
    pad: str | None
    specials: tuple[str, ...]
    config_bos: str | None
    config_eos: tuple[str, ...]
    added: tuple[str, ...] = ()

    def tokens(self) -> list[str]:
        """Every special token, named ones first (their ids come first in the vocabulary)."""
        named = [t for t in (self.bos, self.eos, self.pad) if t]
        return list(dict.fromkeys([*named, *self.specials]))

    def template(self) -> str:
        return (ASSETS / "chat" / f"{self.name}.jinja").read_text(encoding="utf-8")


_DS_BOS, _DS_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
FORMATS: dict[str, ChatFormat] = {
    "qwen2.5": ChatFormat(
        "qwen2.5",
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        config_bos="<|endoftext|>",
        config_eos=("<|im_end|>",),
    ),
    "llama3.1": ChatFormat(
        "llama3.1",
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,  # Llama 3 has none; training pads with the end-of-turn token
        specials=(
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eom_id|>",
            "<|python_tag|>",
            "<|finetune_right_pad_id|>",
        ),
        config_bos="<|begin_of_text|>",
        config_eos=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
    ),
    "deepseek-r1": ChatFormat(
        "deepseek-r1",
        bos=_DS_BOS,
        eos=_DS_EOS,
        pad=_DS_EOS,
        specials=("<｜User｜>", "<｜Assistant｜>"),
        config_bos=_DS_BOS,
        config_eos=(_DS_EOS,),
        added=("<think>", "</think>"),
    ),
    "deepseek-v3": ChatFormat(
        "deepseek-v3",
        bos=_DS_BOS,
        eos=_DS_EOS,
        pad=_DS_EOS,
        specials=("<｜User｜>", "<｜Assistant｜>"),
        config_bos=_DS_BOS,
        config_eos=(_DS_EOS,),
    ),
    "mistral": ChatFormat(
        "mistral",
        bos="<s>",
        eos="</s>",
        pad=None,
        specials=("<unk>",),
        config_bos="<s>",
        config_eos=("</s>",),
    ),
    "gemma": ChatFormat(
        "gemma",
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        specials=("<unk>", "<start_of_turn>", "<end_of_turn>"),
        config_bos="<bos>",
        config_eos=("<eos>", "<end_of_turn>"),
    ),
}


@cache
def published(arch: str) -> dict[str, Any]:
    """``assets/configs/ARCH.json``: ``source``, ``chat_format``, ``config``, ``sizes``."""
    if arch not in SHAPES:
        raise ConfigError(f"unknown --arch {arch!r}", fix=f"use one of: {', '.join(SHAPES)}")
    spec: dict[str, Any] = json.loads((ASSETS / "configs" / f"{arch}.json").read_text())
    return spec


def chat_format(name: str) -> ChatFormat:
    if name not in FORMATS:
        raise ConfigError(
            f"unknown --chat-format {name!r}", fix=f"use one of: {', '.join(FORMATS)}"
        )
    return FORMATS[name]


def train_tokenizer(texts: Iterable[str], fmt: ChatFormat, vocab_size: int) -> Any:
    """A byte-level BPE trained on ``texts`` with ``fmt``'s tokens and chat template.

    Families whose tokenizers start every encoding with their BOS (all but Qwen) do so here too;
    chat templates write it themselves and are tokenized without it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=fmt.tokens(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    if fmt.bos:
        bos = (fmt.bos, core.token_to_id(fmt.bos))
        core.post_processor = processors.TemplateProcessing(
            single=f"{fmt.bos} $A", pair=f"{fmt.bos} $A {fmt.bos} $B", special_tokens=[bos]
        )
    named = {fmt.bos, fmt.eos, fmt.pad}
    fast: Any = PreTrainedTokenizerFast  # transformers' classes are untyped
    tok = fast(
        tokenizer_object=core,
        bos_token=fmt.bos,
        eos_token=fmt.eos,
        pad_token=fmt.pad,
        extra_special_tokens=[t for t in fmt.specials if t not in named],
    )
    if fmt.added:
        tok.add_tokens(list(fmt.added))
    tok.chat_template = fmt.template()
    return tok


def model_config(arch: str, size: str, tok: Any, fmt: ChatFormat) -> Any:
    """The published config of ``arch`` cut to ``size``, its token ids those of ``tok``."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    spec = published(arch)
    if size not in spec["sizes"]:
        raise ConfigError(
            f"unknown --size {size!r} for {arch}", fix=f"use one of: {', '.join(spec['sizes'])}"
        )
    values = {k: v for k, v in spec["config"].items() if k not in _NOT_ARCHITECTURE}
    values.update(spec["sizes"][size])
    ids = [tok.convert_tokens_to_ids(t) for t in fmt.config_eos]
    values.update(
        vocab_size=len(tok),
        bos_token_id=tok.convert_tokens_to_ids(fmt.config_bos) if fmt.config_bos else None,
        eos_token_id=ids if len(ids) > 1 else ids[0],
        pad_token_id=tok.pad_token_id,
    )
    return CONFIG_MAPPING[values["model_type"]].from_dict(values)


def build_model(arch: str, size: str, tok: Any, fmt: ChatFormat, seed: int) -> Any:
    """A randomly initialised model of the published architecture ``arch``, cut to ``size``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model_config(arch, size, tok, fmt)
    torch.manual_seed(seed)
    causal_lm: Any = AutoModelForCausalLM
    model = causal_lm.from_config(config).eval()
    expected = published(arch)["config"]["architectures"][0]
    if type(model).__name__ != expected:  # a transformers that maps the type elsewhere
        raise ConfigError(
            f"--arch {arch}: transformers built {type(model).__name__}, not {expected}",
            fix="use the transformers version the toolkit pins",
        )
    return model
