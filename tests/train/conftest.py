"""A small workspace for the training tests: the sample data cleaned and split, a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sample_workspace import sample_workspace

ROOT = Path(__file__).resolve().parents[2]

# Short runs of the tiny model: every test starts from this and overrides what it checks.
BASE: dict[str, Any] = {
    "model": "models/tiny",
    "task": "sft",
    "data": {
        "train": "data/split/conversations/train.parquet",
        "validation": "data/split/conversations/validation.parquet",
        "max_length": 128,
    },
    "zero_stage": 2,
    "micro_batch_size": 4,
    "max_steps": 20,
    "warmup_steps": 2,
    "learning_rate": 0.003,
    "eval_every": 10,
    "eval_batches": 4,
    "checkpoint": {"full_every": 6, "light_every": 3, "keep": 3},
}


@pytest.fixture(scope="session")
def train_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_workspace(
        tmp_path_factory.mktemp("train-run"), rows=600, seed=3, model_vocab=2000
    )


def merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def write_config(ws: Path, name: str, **changes: Any) -> Path:
    """``BASE`` with ``changes`` merged in (sections key by key), as ``ws/name.yaml``."""
    data = json.loads(json.dumps(BASE))
    merge(data, changes)
    data.setdefault("output_dir", f"out/{name}/model")
    data.setdefault("log_dir", f"out/{name}/logs")
    data.setdefault("metrics_file", f"out/{name}/train.json")
    data.setdefault("plot_file", f"out/{name}/train_loss.json")
    data.setdefault("checkpoint", {})["dir"] = f"out/{name}/checkpoints"
    path = ws / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def train_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="2",
        PYTHONPATH=str(ROOT),
    )
    return env


def offline_train(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offline", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=train_env(),
    )


def weights(model_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def log_records(log_dir: Path) -> list[dict[str, Any]]:
    """What the run recorded in ``train.jsonl``: its lines but the chain's checkpoints."""
    path = log_dir / "train.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if "checkpoint" not in line]
