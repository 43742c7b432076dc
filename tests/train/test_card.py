"""The training card records the whole config: a credential in any value of it is masked."""

from __future__ import annotations

import json
from pathlib import Path

from offline.train.config import TrainConfig, deepspeed_config
from offline.train.output import write_training_card

DIGEST = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"


def test_the_training_card_masks_credentials_and_keeps_digests(tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="models/tiny",
        output_dir="https://ops:0ut-s3cret@models.lan/trained",
        data={"labels": ["billing", "see https://wiki.lan/labels?access_token=l4bel-s3cret"]},
    )
    card = {
        "base_model": cfg.model,
        "config": cfg.model_dump(),
        "deepspeed": deepspeed_config(cfg),
        "data": {"digests": {"train": DIGEST}},
        "rollbacks": [{"step": 7, "reason": "Authorization: Bearer r0ll-s3cret rejected"}],
    }
    shown = write_training_card(tmp_path, card)
    text = (tmp_path / "training_card.json").read_text()
    assert not [s for s in ("0ut-s3cret", "l4bel-s3cret", "r0ll-s3cret") if s in text]
    assert "models.lan/trained" in text and "wiki.lan/labels" in text and DIGEST in text
    assert json.loads(text) == shown
    assert shown["config"]["data"]["labels"][0] == "billing"
    assert shown["deepspeed"] == json.loads(json.dumps(deepspeed_config(cfg)))
