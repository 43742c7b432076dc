"""The embedded sample data cleaned (and split), optionally with the tiny model: one builder
for every test that needs a small workspace."""

from __future__ import annotations

from pathlib import Path

import yaml

from offline.data.clean import clean
from offline.data.params import default_params, dump_params
from offline.data.sample.files import generate
from offline.data.split import split


def sample_workspace(
    root: Path, *, rows: int, seed: int, do_split: bool = True, model_vocab: int | None = None
) -> Path:
    """``rows`` sample rows cleaned (normalize, pii, exact_dedup) under ``root``; then split,
    and with ``model_vocab`` a tiny model at ``models/tiny`` with that vocabulary."""
    generate(root / "data/raw", rows=rows, seed=seed)
    params = default_params()
    params.clean.steps = ["normalize", "pii", "exact_dedup"]
    (root / "params.yaml").write_text(yaml.safe_dump(dump_params(params)))
    clean(root)
    if do_split:
        split(root)
    if model_vocab is not None:
        from offline.train.model_init import init_model

        init_model(root / "models/tiny", tokenizer_from=root / "data/clean", vocab_size=model_vocab)
    return root


def tiny_classifier(root: Path, base: Path, out: Path) -> Path:
    """A classifier over the split's ticket labels, initialised from the tiny model's config."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    table = pq.read_table(root / "data/split/tickets/train.parquet")
    labels = sorted(set(table["label"].to_pylist()))
    config = AutoConfig.from_pretrained(base)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out
