"""`offline train` on CPU: the tiny DeepSeek-V3 learns, survives kill -9, corrupt checkpoints,
loss spikes, NaN losses and a full disk, under ZeRO 0/2/3 and on two ranks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file

from offline.audit.chain import verify as audit_verify
from offline.errors import (
    ConfigError,
    DataError,
    NetworkError,
    NotFoundError,
    ResourceError,
    TrainingError,
)
from offline.train.checkpoint import Channel, verify
from tests.train.conftest import (
    log_records,
    offline_train,
    train_env,
    weights,
    write_config,
)

pytestmark = pytest.mark.integration


def torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def run_json(config: Path, *args: str) -> dict[str, Any]:
    proc = offline_train("--config", str(config), "--json", *args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not (wa[k] == wb[k]).all()]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def reference(train_ws: Path) -> dict[str, Any]:
    """An uninterrupted 20-step run; several tests compare against it."""
    return run_json(write_config(train_ws, "ref"))


def test_the_tiny_model_trains_and_writes_a_usable_model(
    train_ws: Path, reference: dict[str, Any]
) -> None:
    m = reference["metrics"]
    assert m["steps"] == 20 and reference["resumed_from"] is None
    assert m["loss_last10"] < 0.9 * m["loss_first"], m  # it learns
    assert m["eval_loss"] < m["loss_first"] and m["perplexity"] > 1

    out = train_ws / "out/ref"
    steps = [r for r in log_records(out / "logs") if "event" not in r]
    assert [r["step"] for r in steps] == list(range(1, 21))
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "rss_mb"):
        assert all(r[key] is not None for r in steps), key
    assert steps[0]["lr"] < steps[2]["lr"] and steps[-1]["lr"] < steps[2]["lr"]  # warmup, decay
    assert list((out / "logs/tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((out / "train.json").read_text())["steps"] == 20
    assert len(json.loads((out / "train_loss.json").read_text())) == 20

    full = sorted(p.name for p in (out / "checkpoints").glob("*/full/step-*"))
    light = sorted(p.name for p in (out / "checkpoints").glob("*/light/step-*"))
    assert full == ["step-00000012", "step-00000018", "step-00000020"]  # keep 3
    assert light == ["step-00000003", "step-00000009", "step-00000015"]

    card = json.loads((out / "model/training_card.json").read_text())
    assert card["seed"] == 42 and card["task"] == "sft"
    assert set(card["data"]["digests"]) == {"train", "validation"}
    assert {"torch", "transformers", "deepspeed"} <= set(card["versions"])
    check = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], local_files_only=True)\n"
        "t = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)\n"
        "ids = t.apply_chat_template([{'role': 'user', 'content': 'hi'}],"
        " add_generation_prompt=True, return_tensors='pt', return_dict=True)['input_ids']\n"
        "out = m.generate(ids, min_new_tokens=4, max_new_tokens=4, do_sample=False)\n"
        "print(out.shape[1] - ids.shape[1])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check, str(out / "model")],
        capture_output=True,
        text=True,
        env=train_env(),
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "4", proc.stderr[-2000:]


def test_kill_9_then_resume_auto_matches_the_uninterrupted_run(
    train_ws: Path, reference: dict[str, Any]
) -> None:
    config = write_config(train_ws, "killed")
    logs = train_ws / "out/killed/logs/train.jsonl"
    workspaces = f"deepspeed_allreduce_buffer_{os.getuid()}_*"
    before = set(Path("/dev/shm").glob(workspaces))
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline", "train", "--config", str(config)],
        env=train_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if logs.exists() and any(
                json.loads(line).get("step", 0) >= 13 and "event" not in json.loads(line)
                for line in logs.read_text().splitlines()
            ):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (train_ws / "out/killed/model").exists()
    # nor does a killed run leave its all-reduce workspace in RAM
    assert set(Path("/dev/shm").glob(workspaces)) <= before
    # The kill lands somewhere after step 13: before, during or after the step-18 checkpoint.
    # Whatever it hit, resume must take the newest full checkpoint that verifies on disk.
    full = Channel(next((train_ws / "out/killed/checkpoints").glob("*/full")), keep=3)
    newest = full.newest_valid()
    assert newest is not None and newest.step in (12, 18), newest

    resumed = run_json(config, "--resume", "auto")
    assert resumed["resumed_from"] == newest.step
    same_weights(train_ws / "out/ref/model", train_ws / "out/killed/model")
    assert resumed["metrics"]["loss"] == reference["metrics"]["loss"]
    # the killed run's log and the resumed run's are one chain, closed by the resumed run
    chain = audit_verify([logs])
    assert chain.ok and chain.closed, chain.as_dict()
    assert chain.lines > len(log_records(logs.parent)), "no checkpoint lines"


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(
    train_ws: Path, reference: dict[str, Any]
) -> None:
    config = write_config(train_ws, "corrupt")
    shutil.copytree(train_ws / "out/ref/checkpoints", train_ws / "out/corrupt/checkpoints")
    newest = next((train_ws / "out/corrupt/checkpoints").glob("*/full/step-00000020"))
    optim = next(newest.glob("state/*optim_states.pt"))
    data = bytearray(optim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    optim.write_bytes(bytes(data))
    assert "sha256" in (verify(newest) or "")

    proc = offline_train("--config", str(config), "--resume", "auto", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipping checkpoint" in proc.stderr and "step-00000020" in proc.stderr
    assert json.loads(proc.stdout)["resumed_from"] == 18
    same_weights(train_ws / "out/ref/model", train_ws / "out/corrupt/model")


def test_a_fresh_run_refuses_to_mix_with_existing_checkpoints(
    train_ws: Path, reference: dict[str, Any]
) -> None:
    proc = offline_train("--config", str(train_ws / "ref.yaml"))
    assert proc.returncode == ConfigError.exit_code
    assert "--resume auto" in proc.stderr
    light = next((train_ws / "out/ref/checkpoints").glob("*/light/step-00000015"))
    proc = offline_train("--config", str(train_ws / "ref.yaml"), "--resume", str(light))
    assert proc.returncode == ConfigError.exit_code and "not a full checkpoint" in proc.stderr
    other = write_config(train_ws, "other-seed", seed=7)
    full = next((train_ws / "out/ref/checkpoints").glob("*/full/step-00000018"))
    proc = offline_train("--config", str(other), "--resume", str(full))
    assert proc.returncode == ConfigError.exit_code and "not this run" in proc.stderr


@pytest.mark.parametrize(
    "name, changes",
    [
        ("zero0", {"zero_stage": 0}),
        ("zero3", {"zero_stage": 3, "offload_optimizer": "cpu", "offload_params": "cpu"}),
    ],
)
def test_zero_stages_with_offload_train_and_save(
    train_ws: Path, name: str, changes: dict[str, Any]
) -> None:
    config = write_config(
        train_ws,
        name,
        max_steps=6,
        checkpoint={"full_every": 3, "light_every": 2, "keep": 2},
        **changes,
    )
    result = run_json(config)
    assert result["metrics"]["steps"] == 6
    assert result["metrics"]["loss"] < result["metrics"]["loss_first"]
    out = train_ws / f"out/{name}"
    tensors = weights(out / "model")
    assert len(tensors) > 20 and all(t.numel() > 0 for t in tensors.values())  # consolidated
    light = next((out / "checkpoints").glob("*/light/step-00000002"))
    assert verify(light) is None and len(weights(light)) == len(tensors)


@pytest.mark.parametrize(
    "changes, partitioned, dtype",
    [
        ({"zero_stage": 3}, True, "torch.float32"),
        ({"zero_stage": 3, "precision": "bf16", "lora": {"enabled": True}}, True, "torch.bfloat16"),
        ({"zero_stage": 2, "precision": "bf16"}, False, "torch.bfloat16"),
    ],
)
def test_the_model_is_loaded_in_its_training_precision_and_partitions(
    train_ws: Path, changes: dict[str, Any], partitioned: bool, dtype: str
) -> None:
    config = write_config(train_ws, "load-probe", **changes)
    probe = Path(__file__).with_name("probes") / "load_model.py"
    proc = subprocess.run(
        [sys.executable, str(probe), str(config)],
        capture_output=True,
        text=True,
        env=train_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    held = json.loads(proc.stdout.splitlines()[-1])
    kept = [n for n in held["fp32"] if not n.endswith("mlp.gate.weight")]
    if dtype == "torch.bfloat16":  # but the MoE router, which transformers keeps in fp32
        assert not kept and held["dtypes"][dtype] >= held["base_tensors"] - 1, held
    else:
        assert held["dtypes"] == {dtype: held["base_tensors"]}
    assert held["chunked_loss"] is True
    if "lora" not in changes:  # matrices decay, norms do not, also from ZeRO-3's flat placeholders
        assert held["no_decay"] and all("norm" in n for n in held["no_decay"])
        assert held["decay"] + len(held["no_decay"]) == held["base_tensors"]
    if partitioned:  # ZeRO-3 built it inside zero.Init: no rank ever held a whole copy
        assert held["partitioned"] == held["base_tensors"] and held["held"] == 0
    else:
        assert held["partitioned"] == 0 and held["held"] == held["parameters"]


def test_under_zero3_the_chunked_loss_trains_as_the_models_own_loss(train_ws: Path) -> None:
    runs = {}
    for chunk in (0, 16):
        config = write_config(
            train_ws, f"z3-chunk{chunk}", zero_stage=3, max_steps=3, loss_chunk_tokens=chunk
        )
        runs[chunk] = run_json(config)
        card = json.loads((train_ws / f"out/z3-chunk{chunk}/model/training_card.json").read_text())
        assert card["chunked_loss"] is (chunk > 0)
    steps = {
        c: [r for r in log_records(train_ws / f"out/z3-chunk{c}/logs") if "event" not in r]
        for c in runs
    }
    for own, chunked in zip(steps[0], steps[16], strict=True):
        assert chunked["loss"] == pytest.approx(own["loss"], rel=1e-5)
        assert chunked["grad_norm"] == pytest.approx(own["grad_norm"], rel=1e-4)
    assert runs[16]["metrics"]["eval_loss"] == pytest.approx(
        runs[0]["metrics"]["eval_loss"], rel=1e-5
    )


def garbage_conversations(ws: Path, start: int, count: int) -> Path:
    """The train split with ``count`` rows of noise from row ``start`` (the assistant "says"
    random Cyrillic, Arabic and emoji, bytes the sample data never has)."""
    import random

    table = pq.read_table(ws / "data/split/conversations/train.parquet")
    rows = [r for r in table.to_pylist() if any(m["role"] == "assistant" for m in r["messages"])]
    rng = random.Random(0)
    alphabet = [*range(0x0400, 0x0500), *range(0x0600, 0x0700), *range(0x1F300, 0x1F600)]
    for i in range(start, start + count):
        noise = "".join(chr(rng.choice(alphabet)) for _ in range(200))
        rows[i]["messages"] = [
            {"role": "user", "content": "?"},
            {"role": "assistant", "content": noise},
        ]
    path = ws / "data/spiky.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return path


def test_a_loss_spike_rolls_back_skips_the_window_and_lowers_the_lr(train_ws: Path) -> None:
    # unshuffled, 4 rows a step: steps 31-33 read rows 120..131, all noise
    garbage_conversations(train_ws, 120, 12)
    config = write_config(
        train_ws,
        "spike",
        data={"train": "data/spiky.parquet", "max_length": 512, "shuffle": False},
        checkpoint={"full_every": 6, "light_every": 6, "keep": 3},
        max_steps=40,
    )
    result = run_json(config)
    (rollback,) = result["rollbacks"]
    assert rollback["spike_steps"] == [31, 32, 33]
    assert rollback["to_step"] == 30
    assert rollback["skipped_positions"] == [120, 132]
    assert rollback["lr_scale"] == 0.5
    assert result["metrics"]["steps"] == 40 and result["metrics"]["rollbacks"] == 1
    records = log_records(train_ws / "out/spike/logs")
    events = [r["event"] for r in records if "event" in r]
    assert events.index("spike") < events.index("rollback")
    # after the rollback, step 31 ran again on clean data, well below the spike
    last = {r["step"]: r["loss"] for r in records if "event" not in r}
    spiked = next(r["loss"] for r in records if r.get("step") == 31 and "event" not in r)
    assert last[31] < spiked / 1.15
    card = json.loads((train_ws / "out/spike/model/training_card.json").read_text())
    assert card["rollbacks"] == result["rollbacks"]


def test_the_stop_action_saves_and_exits_with_the_training_code(train_ws: Path) -> None:
    garbage_conversations(train_ws, 120, 12)
    config = write_config(
        train_ws,
        "spike-stop",
        data={"train": "data/spiky.parquet", "max_length": 512, "shuffle": False},
        guards={"spike": {"action": "stop"}},
        max_steps=40,
    )
    proc = offline_train("--config", str(config))
    assert proc.returncode == TrainingError.exit_code, proc.stderr[-3000:]
    assert "loss spike: steps 31-33" in proc.stderr and "--resume auto" in proc.stderr
    saved = next((train_ws / "out/spike-stop/checkpoints").glob("*/full/step-00000033"))
    assert verify(saved) is None


def test_a_nan_loss_saves_and_stops_with_a_clear_message(train_ws: Path) -> None:
    config = write_config(train_ws, "nan", learning_rate=1.0e12, warmup_steps=0, max_steps=10)
    proc = offline_train("--config", str(config))
    assert proc.returncode == TrainingError.exit_code, proc.stderr[-3000:]
    assert "loss is nan" in proc.stderr or "loss is inf" in proc.stderr
    assert "lower learning_rate" in proc.stderr
    saved = list((train_ws / "out/nan/checkpoints").glob("*/full/step-*"))
    assert saved and all(verify(p) is None for p in saved)


def test_bad_data_is_named_before_training_starts(train_ws: Path) -> None:
    wrong_columns = write_config(
        train_ws, "bad-cols", data={"train": "data/split/tickets/train.parquet"}
    )
    proc = offline_train("--config", str(wrong_columns))
    assert proc.returncode == DataError.exit_code
    assert "needs a messages column" in proc.stderr and "tickets/train.parquet" in proc.stderr

    unknown_labels = write_config(
        train_ws,
        "bad-labels",
        task="classification",
        data={
            "train": "data/split/tickets/train.parquet",
            "validation": None,
            "labels": ["billing"],
        },
    )
    proc = offline_train("--config", str(unknown_labels))
    assert proc.returncode == DataError.exit_code
    assert "labels not in the label set" in proc.stderr and "shipping" in proc.stderr

    tickets = pq.read_table(train_ws / "data/split/tickets/train.parquet")
    pq.write_table(tickets.slice(0, 0), train_ws / "data/empty.parquet")
    empty = write_config(
        train_ws, "empty", task="pretrain", data={"train": "data/empty.parquet", "validation": None}
    )
    proc = offline_train("--config", str(empty))
    assert proc.returncode == DataError.exit_code and "has no rows" in proc.stderr


def test_a_model_without_its_tokenizer_is_named(train_ws: Path) -> None:
    bare = train_ws / "models/bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(train_ws / "models/tiny" / name, bare / name)
    proc = offline_train("--config", str(write_config(train_ws, "bare", model="models/bare")))
    assert proc.returncode == NotFoundError.exit_code, proc.stderr[-2000:]
    assert "models/bare has no usable tokenizer" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI is root)")
def test_a_full_disk_keeps_the_previous_checkpoint_valid(train_ws: Path) -> None:
    config = write_config(
        train_ws,
        "full-disk",
        max_steps=12,
        checkpoint={"full_every": 6, "light_every": 6, "keep": 3},
    )
    ckpt = train_ws / "out/full-disk/checkpoints"
    ckpt.mkdir(parents=True)
    listing = (
        "import sys, pathlib; from offline.train.checkpoint import Channel, verify; "
        "[print(p.name, verify(p)) for p in sorted(pathlib.Path(sys.argv[1]).glob('*/full/*-*'))]"
    )
    # 20 MB holds one full checkpoint of this model (13 MB) but not two
    script = (
        f"mount -t tmpfs -o size=20m none {ckpt} || exit 99; "
        f"{sys.executable} -m offline train --config {config}; rc=$?; "
        f'{sys.executable} -c "{listing}" {ckpt}; exit $rc'
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=train_env(),
        timeout=600,
    )
    assert proc.returncode == ResourceError.exit_code, proc.stderr[-3000:]
    assert "step-00000012" in proc.stderr and "step-00000006 stays valid" in proc.stderr
    assert proc.stdout.split() == ["step-00000006", "None"]  # valid, and no partial step 12


def test_lora_classification_merges_into_a_plain_model(train_ws: Path) -> None:
    config = write_config(
        train_ws,
        "lora-cls",
        task="classification",
        data={
            "train": "data/split/tickets/train.parquet",
            "validation": "data/split/tickets/validation.parquet",
            "max_length": 96,
        },
        lora={"enabled": True, "r": 4},
        max_steps=8,
        eval_every=4,
        learning_rate=0.01,
    )
    result = run_json(config)
    metrics = result["metrics"]
    assert 0 <= metrics["accuracy"] <= 1 and "eval_loss" in metrics
    out = train_ws / "out/lora-cls/model"
    tensors = weights(out)
    assert not [k for k in tensors if "lora" in k or "base_layer" in k]  # merged
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["architectures"] == ["DeepseekV3ForSequenceClassification"]
    assert set(config_json["id2label"].values()) >= {"billing", "shipping"}
    card = json.loads((out / "training_card.json").read_text())
    assert card["lora_merged"] and card["trainable_parameters"] < card["parameters"] / 5


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("zero", [2, 3])
def test_lora_checkpoints_hold_the_adapter_only_and_resume_bit_for_bit(
    train_ws: Path, reference: dict[str, Any], zero: int
) -> None:
    changes: dict[str, Any] = {
        "lora": {"enabled": True},
        "zero_stage": zero,
        "max_steps": 8,
        "checkpoint": {"full_every": 4, "light_every": 2, "keep": 3},
    }
    name = f"lora-z{zero}"
    first = run_json(write_config(train_ws, name, **changes))
    out = train_ws / f"out/{name}"
    full = next((out / "checkpoints").glob("*/full/step-00000008"))
    whole = next((train_ws / "out/ref/checkpoints").glob("*/full/step-00000018"))
    assert dir_bytes(full) < dir_bytes(whole) / 10, (dir_bytes(full), dir_bytes(whole))
    light = next((out / "checkpoints").glob("*/light/step-00000006"))
    assert verify(light) is None and not (light / "model.safetensors").exists()
    adapter = load_file(str(light / "adapter_model.safetensors"))
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    card = json.loads((out / "model/training_card.json").read_text())
    base = json.loads((train_ws / "out/ref/model/training_card.json").read_text())["parameters"]
    assert card["parameters"] == base + card["trainable_parameters"]  # ZeRO-3 counts it all too
    targets = card["lora_targets"]
    assert targets["requested"] == "all-linear" and targets["modules"] == 16
    assert {"self_attn.q_a_proj", "mlp.shared_experts.down_proj"} <= set(targets["names"])

    again = write_config(train_ws, f"{name}-resumed", **changes)
    shutil.copytree(out / "checkpoints", train_ws / f"out/{name}-resumed/checkpoints")
    shutil.rmtree(next((train_ws / f"out/{name}-resumed/checkpoints").glob("*/full/step-00000008")))
    resumed = run_json(again, "--resume", "auto")
    assert resumed["resumed_from"] == 4
    same_weights(out / "model", train_ws / f"out/{name}-resumed/model")
    assert resumed["metrics"]["loss"] == first["metrics"]["loss"]


@pytest.mark.skipif(torch_cuda(), reason="the error of a host without CUDA; this one has it")
def test_a_4bit_base_without_cuda_is_refused_before_any_work(train_ws: Path) -> None:
    config = write_config(train_ws, "qlora", lora={"enabled": True, "base_bits": 4})
    proc = offline_train("--config", str(config))
    assert proc.returncode == ConfigError.exit_code, proc.stderr[-2000:]
    assert "lora.base_bits: 4" in proc.stderr and "needs a CUDA device" in proc.stderr
    assert "base_bits: null" in proc.stderr
    assert not (train_ws / "out/qlora/logs/train.jsonl").exists()


def test_two_ranks_through_the_deepspeed_launcher(train_ws: Path) -> None:
    config = write_config(train_ws, "ranks", max_steps=4, micro_batch_size=2)
    deepspeed = Path(sys.executable).with_name("deepspeed")
    # DeepSpeed's CPU all-reduce workspace of each rank, a file in RAM it never removes
    workspaces = f"deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_29731_*"
    for stale in Path("/dev/shm").glob(workspaces):
        stale.unlink()
    proc = subprocess.run(
        [
            str(deepspeed),
            "--num_accelerators",
            "2",
            "--master_port",
            "29731",
            "--module",
            "offline.train",
            "--config",
            str(config),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=train_env(),
        timeout=600,
        cwd=train_ws,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    start = next(r for r in log_records(train_ws / "out/ranks/logs") if r.get("event") == "start")
    assert start["world_size"] == 2
    steps = [r for r in log_records(train_ws / "out/ranks/logs") if "event" not in r]
    assert len(steps) == 4 and all(r["samples_per_s"] > 0 for r in steps)
    assert (train_ws / "out/ranks/model/model.safetensors").is_file()
    states = list((train_ws / "out/ranks/checkpoints").glob("*/full/step-00000004/rng/*.pt"))
    assert sorted(p.name for p in states) == ["rank-0.pt", "rank-1.pt"]
    assert not list(Path("/dev/shm").glob(workspaces)), "training left its RAM behind"


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root (CI is root)")
def test_loopback_down_is_named_not_waited_out(train_ws: Path) -> None:
    config = write_config(train_ws, "no-lo", max_steps=4)
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "offline", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        env=train_env(),
        timeout=120,
    )
    assert proc.returncode == NetworkError.exit_code, proc.stderr[-2000:]
    assert "ip link set lo up" in proc.stderr
