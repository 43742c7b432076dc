"""Training configs: every problem at once, overrides, and the DeepSpeed JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from offline.errors import ConfigError
from offline.train.config import deepspeed_config, load_config


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / "models/tiny").mkdir(parents=True)
    (tmp_path / "models/tiny/config.json").write_text("{}")
    for side in ("train", "validation"):
        path = tmp_path / f"data/split/tickets/{side}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return tmp_path


def write(ws: Path, data: dict[str, object]) -> Path:
    path = ws / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_problem_is_listed_at_once(ws: Path) -> None:
    path = write(ws, {"model": "models/tiny", "zero_stage": 5, "precsion": "bf16", "task": "chat"})
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = exc.value.message
    assert "3 problem(s)" in text
    assert "zero_stage" in text and "precsion" in text and "task" in text


def test_rules_between_fields_and_missing_paths(ws: Path) -> None:
    path = write(ws, {"model": "models/tiny", "offload_params": "cpu", "zero_stage": 2})
    with pytest.raises(ConfigError, match="offload_params: cpu needs zero_stage: 3"):
        load_config(path)
    path = write(ws, {"model": "models/none", "data": {"train": "data/split/x/train.parquet"}})
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert (
        "offline train init-model" in exc.value.message and "x/train.parquet" in exc.value.message
    )


def test_overrides_and_the_deepspeed_json(ws: Path) -> None:
    path = write(ws, {"model": "models/tiny"})
    cfg = load_config(
        path,
        [
            "zero_stage=3",
            "offload_params=cpu",
            "offload_optimizer=cpu",
            "micro_batch_size=4",
            "gradient_accumulation_steps=2",
            "checkpoint.keep=5",
        ],
    )
    assert cfg.checkpoint.keep == 5
    ds = deepspeed_config(cfg, world_size=2)
    assert ds["train_batch_size"] == 16
    assert ds["zero_optimization"] == {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin_memory": False},
        "offload_param": {"device": "cpu", "pin_memory": False},
        "stage3_gather_16bit_weights_on_model_save": True,
    }
    # precision auto: fp32 on CPU; torch AdamW on CPU (no compiled op), so DeepSpeed must not
    # insist on its CPU Adam for the offloaded states
    assert not ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert ds["zero_force_ds_cpu_optimizer"] is False and "optimizer" not in ds
    # on a GPU, offloaded optimizer states use DeepSpeed's CPU Adam, bf16 is explicit
    gpu = deepspeed_config(cfg.model_copy(update={"precision": "bf16"}), 8, "cuda")
    assert gpu["optimizer"]["type"] == "AdamW" and gpu["bf16"]["enabled"]
    assert gpu["zero_optimization"]["offload_optimizer"]["pin_memory"] is True


@pytest.mark.slow
def test_plan_prints_json_and_validate_fails_with_the_config_code(ws: Path) -> None:
    good = write(ws, {"model": "models/tiny"})
    offline = [sys.executable, "-m", "offline", "train"]
    plan = subprocess.run(
        [*offline, "plan", "--config", str(good), "precision=fp32"], capture_output=True, text=True
    )
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["bf16"]["enabled"] is False
    assert json.loads(plan.stdout)["train_batch_size"] == 8
    bad = subprocess.run(
        [*offline, "validate", "--config", str(good), "zero_stage=9"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == ConfigError.exit_code and "zero_stage" in bad.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["zero_stage=3", "offload_params=cpu", "offload_optimizer=cpu"],
        ["precision=fp32", "zero_stage=0"],
    ],
)
def test_deepspeed_itself_reads_the_json(ws: Path, overrides: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from deepspeed.runtime.config import DeepSpeedConfig\n"
        "c = DeepSpeedConfig(json.loads(sys.argv[1]))\n"
        "print(json.dumps([c.zero_optimization_stage, c.train_batch_size, c.gradient_clipping]))\n"
    )
    cfg = load_config(write(ws, {"model": "models/tiny"}), overrides)
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(deepspeed_config(cfg))],
        capture_output=True,
        text=True,
        timeout=300,
        env={"DS_ACCELERATOR": "cpu", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    stage, batch, clip = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (stage, batch, clip) == (cfg.zero_stage, cfg.micro_batch_size, cfg.clip_grad_norm)
