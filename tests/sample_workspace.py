"""The embedded sample data cleaned (and split), optionally with the tiny model: one builder
for every test that needs a small workspace."""

from __future__ import annotations

from pathlib import Path

import yaml

from offline.data.clean import clean
from offline.data.params import default_params, dump_params
from offline.data.sample import generate
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
