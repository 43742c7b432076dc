"""The embedded default model: a real DeepSeek-V3 (MLA + MoE) with a locally trained tokenizer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from offline.errors import ConfigError, NotFoundError
from offline.train.model_init import init_model
from tests.sample_workspace import sample_workspace

LOAD = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
text = "我的快递还没到\\uff0cwhere is my parcel #A-1029?"
ids = tok(text)["input_ids"]
chat = [
    {"role": "user", "content": "发票开错了"},
    {"role": "assistant", "content": "We will fix it."},
]
enc = tok.apply_chat_template(
    chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
)
kept = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits
print(json.dumps({
    "class": type(model).__name__,
    "roundtrip": tok.decode(ids, skip_special_tokens=True) == text,
    "unk": tok.unk_token_id in ids if tok.unk_token_id is not None else False,
    "assistant": tok.decode(kept),
    "logits": list(logits.shape),
    "vocab": len(tok),
}))
"""


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = sample_workspace(tmp_path_factory.mktemp("train-ws"), rows=300, seed=5, do_split=False)
    return ws / "data/clean"


def isolated() -> list[str]:
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"]).returncode == 0:
        return ["unshare", "-n"]
    return []


@pytest.mark.slow
def test_a_tiny_deepseek_v3_loads_offline_and_runs(clean_dir: Path, tmp_path: Path) -> None:
    report = init_model(tmp_path / "tiny", tokenizer_from=clean_dir, vocab_size=2000)
    assert 500_000 < report.parameters < 10_000_000  # a few million at the default vocabulary
    config = json.loads((tmp_path / "tiny/config.json").read_text())
    assert config["model_type"] == "deepseek_v3"
    assert config["n_routed_experts"] > 1 and config["num_experts_per_tok"] > 1  # MoE
    assert config["kv_lora_rank"] and config["q_lora_rank"]  # multi-head latent attention
    proc = subprocess.run(
        [*isolated(), sys.executable, "-c", LOAD, str(tmp_path / "tiny")],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["class"] == "DeepseekV3ForCausalLM"
    assert got["roundtrip"] and not got["unk"]
    assert got["assistant"] == "We will fix it.<|end_of_sentence|>"
    assert got["logits"][2] == got["vocab"] == report.vocab_size


def test_same_text_and_seed_give_the_same_files(clean_dir: Path, tmp_path: Path) -> None:
    a = init_model(tmp_path / "a", tokenizer_from=clean_dir, vocab_size=1000, seed=3)
    b = init_model(tmp_path / "b", tokenizer_from=clean_dir, vocab_size=1000, seed=3)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a.out / name).read_bytes() == (b.out / name).read_bytes(), name


def test_bad_input_is_a_clear_error_and_writes_nothing(clean_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown --size"):
        init_model(tmp_path / "x", tokenizer_from=clean_dir, size="huge")
    with pytest.raises(NotFoundError, match="no cleaned shards"):
        init_model(tmp_path / "y", tokenizer_from=tmp_path / "nothing-here")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        init_model(tmp_path / "taken", tokenizer_from=clean_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
