"""``make demo MODEL=smollm2``: a model the bundle carries becomes the SFT stage's base."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from offline import demo
from offline.data.workspace import init
from offline.train.config import TrainConfig


def test_a_bundled_model_replaces_the_tiny_one_in_the_sft_stage_only(tmp_path: Path) -> None:
    ws = tmp_path / "host/workspace"
    init(ws)
    model = tmp_path / "host/models/smollm2-135m-instruct"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    demo.use_base_model(ws, model)
    train = yaml.safe_load((ws / "train.yaml").read_text())
    assert train["model"] == "../models/smollm2-135m-instruct"
    cfg = TrainConfig.model_validate(train)
    assert cfg.lora.enabled and cfg.max_steps == 30 and cfg.learning_rate == 0.001
    assert cfg.checkpoint.dir == "checkpoints" and cfg.checkpoint.full_every == 30
    assert cfg.output_dir == "models/trained"
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    assert stages["train"]["deps"] == [
        "train.yaml",
        "../models/smollm2-135m-instruct",
        "data/split",
    ]
    assert "models/tiny" in stages["train_classifier"]["deps"]  # the classifier stays tiny
    assert stages["train"]["outs"] == ["models/trained"]
    exports = [c.split(" --out ")[1] for c in stages["export"]["cmd"]]
    assert exports == [
        "models/export/trained-int8",
        "models/export/trained-aarch64",
        "models/export/classifier-none",
        "models/export/classifier-int8",
        "models/export/classifier-aarch64",
    ]
    assert stages["export"]["cmd"][0] == demo.PRETRAINED_INT8
    assert "--format torchscript" in stages["export"]["cmd"][3]  # the tiny classifier's int8


def test_a_model_the_bundle_does_not_carry_stops_the_demo_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="make demo MODEL=smollm2"):
        demo.use_base_model(tmp_path, tmp_path / "models/absent")
