"""``offline train init-model``: the embedded default model, built here with no hub access.

A DeepSeek-V3-architecture causal LM (transformers' ``DeepseekV3ForCausalLM``: multi-head latent
attention and a mixture of experts with a shared expert) from a small config with random
weights, and a byte-level BPE tokenizer trained on the workspace's cleaned text, so Chinese and
English both tokenize without an unknown token. Same text and seed give the same files.

``--arch qwen2 | llama3 | deepseek-v2`` builds a published architecture cut down instead, with
its family's tokens and chat format (see :mod:`offline.train.shapes`); ``--chat-format`` picks
another family's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline.airgap import go_offline
from offline.errors import ConfigError, NotFoundError
from offline.fsutil import build_dir
from offline.train import shapes

BOS, EOS, PAD = "<|begin_of_sentence|>", "<|end_of_sentence|>", "<|pad|>"
USER, ASSISTANT, SYSTEM = "<|User|>", "<|Assistant|>", "<|System|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, USER, ASSISTANT, SYSTEM]

# Roles as DeepSeek's chat format marks them; `{% generation %}` lets training mask everything
# but the assistant's tokens (return_assistant_tokens_mask).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|System|>{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|User|>{{ m['content'] }}"
    "{% else %}<|Assistant|>{% generation %}{{ m['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>{% endif %}"
)

# name -> DeepseekV3Config overrides; "tiny" is a few million parameters (CPU tests and demo).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "moe_intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "first_k_dense_replace": 1,
        "n_group": 1,
        "topk_group": 1,
        "q_lora_rank": 64,
        "kv_lora_rank": 32,
        "qk_rope_head_dim": 16,
        "qk_nope_head_dim": 16,
        "v_head_dim": 32,
        "max_position_embeddings": 512,
    },
    "small": {
        "hidden_size": 512,
        "intermediate_size": 1408,
        "moe_intermediate_size": 256,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "first_k_dense_replace": 1,
        "n_group": 1,
        "topk_group": 1,
        "q_lora_rank": 192,
        "kv_lora_rank": 128,
        "qk_rope_head_dim": 32,
        "qk_nope_head_dim": 32,
        "v_head_dim": 64,
        "max_position_embeddings": 2048,
    },
}
ARCHS = ("deepseek-v3", "qwen2", "llama3", "deepseek-v2")


@dataclass
class InitReport:
    out: Path
    parameters: int
    vocab_size: int
    texts: int
    chat_format: str | None = None  # None: the toolkit's own template (deepseek-v3)
    source: str | None = None  # the published model whose config was cut down


def workspace_texts(source: Path) -> Iterator[str]:
    """Every text value of the cleaned shards under ``source`` (time series skipped)."""
    import pyarrow.parquet as pq

    from offline.data.records import joined_text

    shards = sorted(source.glob("*.parquet")) if source.is_dir() else [source]
    if not shards or not shards[0].exists():
        raise NotFoundError(
            f"no cleaned shards under {source}",
            fix="run `offline data clean` (or `dvc repro`), or pass --tokenizer-from DIR",
        )
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=4096):
            if "record_id" in batch.schema.names:
                yield from (t for t in joined_text(batch) if t)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` with the chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    fast: Any = PreTrainedTokenizerFast  # transformers' classes are untyped
    tok = fast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(size: str, tok: Any, seed: int) -> Any:
    """A randomly initialised DeepseekV3ForCausalLM sized ``size`` for ``tok``'s vocabulary."""
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    config = DeepseekV3Config(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        **SIZES[size],
    )
    torch.manual_seed(seed)
    causal_lm: Any = DeepseekV3ForCausalLM
    return causal_lm(config).eval()


def _resolve(
    arch: str, size: str, chat_format: str | None
) -> tuple[shapes.ChatFormat | None, str | None]:
    """The chat format ``arch`` is built with (None: the toolkit's own) and its source model."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown --arch {arch!r}", fix=f"use one of: {', '.join(ARCHS)}")
    spec = shapes.published(arch) if arch in shapes.SHAPES else None
    sizes = spec["sizes"] if spec else SIZES
    if size not in sizes:
        raise ConfigError(f"unknown --size {size!r}", fix=f"use one of: {', '.join(sizes)}")
    name = chat_format or (spec["chat_format"] if spec else None)
    return (shapes.chat_format(name) if name else None), (spec["source"] if spec else None)


def _build(
    arch: str, size: str, fmt: shapes.ChatFormat | None, texts: list[str], vocab: int, seed: int
) -> tuple[Any, Any]:
    """``(tokenizer, model)`` for ``arch`` with ``fmt``'s tokens (None: the toolkit's)."""
    if fmt is None:
        return (tok := train_tokenizer(texts, vocab)), build_model(size, tok, seed)
    tok = shapes.train_tokenizer(texts, fmt, vocab)
    if arch in shapes.SHAPES:
        return tok, shapes.build_model(arch, size, tok, fmt, seed)
    return tok, build_model(size, tok, seed)


def init_model(
    out: Path,
    *,
    tokenizer_from: Path,
    arch: str = "deepseek-v3",
    size: str = "tiny",
    vocab_size: int = 8000,
    seed: int = 0,
    chat_format: str | None = None,
) -> InitReport:
    """Write a tokenizer and a random-weight model to ``out`` (built aside, then renamed).

    ``chat_format`` (a name in :data:`offline.train.shapes.FORMATS`) gives the tokenizer that
    family's special tokens and chat template; by default a published ``arch`` gets its own
    family's and ``deepseek-v3`` the toolkit's.

    Raises:
        ConfigError: an unknown ``arch``, ``size`` or ``chat_format``, or ``out`` already exists.
        NotFoundError: no cleaned text to train the tokenizer on.
    """
    fmt, source = _resolve(arch, size, chat_format)
    if out.exists():
        raise ConfigError(f"{out} already exists", fix="choose a new --out or remove it")
    go_offline()  # nothing below may reach a hub
    texts = list(workspace_texts(tokenizer_from))
    if not texts:
        raise NotFoundError(f"no text in {tokenizer_from}", fix="clean a text dataset first")
    tok, model = _build(arch, size, fmt, texts, vocab_size, seed)
    with build_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    params = sum(p.numel() for p in model.parameters())
    name = fmt.name if fmt else None
    return InitReport(out, int(params), len(tok), len(texts), name, source)
