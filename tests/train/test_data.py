"""Training data: packing keeps examples apart, pretraining loses no text, drops are named,
reasoning is trained where asked, and the stored (memory-mapped) form reads back the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offline.errors import DataError
from offline.train.chat import TemplateError
from offline.train.data import (
    IGNORE,
    Dataset,
    Example,
    collate,
    load_dataset,
    open_examples,
    pack,
    real_tokens,
    save_examples,
)
from tests.train.conftest import log_records, offline_train, write_config


@pytest.fixture(scope="module")
def tok(train_ws: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(train_ws / "models/tiny")


def lm_examples(lengths: list[int]) -> Dataset:
    examples = []
    next_id = 1
    for n in lengths:
        ids = list(range(next_id, next_id + n))
        next_id += n
        examples.append(Example(ids, [IGNORE if i % 3 == 0 else t for i, t in enumerate(ids)]))
    return Dataset(examples, rows=len(examples))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=60), st.integers(64, 200))
def test_packing_keeps_every_example_whole_once_and_within_the_width(
    lengths: list[int], width: int
) -> None:
    data = lm_examples(lengths)
    packed = pack(data, width)
    assert packed.rows == len(lengths)
    seen: list[list[int]] = []
    for row in packed.examples:
        assert row.segments is not None and sum(row.segments) == len(row.input_ids) <= width
        assert isinstance(row.labels, list) and len(row.labels) == len(row.input_ids)
        at = 0
        for n in row.segments:
            ids = list(row.input_ids[at : at + n])
            labels = list(row.labels[at : at + n])
            original = next(e for e in data.examples if list(e.input_ids) == ids)
            assert isinstance(original.labels, list)
            # the first target of each example is dropped (nothing before it is its context)
            assert labels == [IGNORE, *original.labels[1:]]
            seen.append(ids)
            at += n
    assert sorted(seen) == sorted(list(e.input_ids) for e in data.examples)
    # best fit: no two rows could have been one
    fills = sorted(len(r.input_ids) for r in packed.examples)
    assert len(fills) < 2 or fills[0] + fills[1] > width
    assert pack(data, width) == packed  # deterministic


@pytest.mark.slow
def test_a_packed_row_computes_what_its_examples_compute_alone(train_ws: Path, tok: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        train_ws / "models/tiny", dtype=torch.float32
    ).eval()
    model.config.use_cache = False  # as in training: a cache turns the packed-row check off
    texts = ["The printer on floor two jams.", "Reset my password please", "VPN drops hourly"]
    examples = [Example(ids, list(ids)) for ids in tok(texts)["input_ids"]]
    data = Dataset(examples, rows=3)
    row = pack(data, 128).examples
    assert len(row) == 1 and row[0].segments is not None and len(row[0].segments) == 3
    batch = collate(row, tok.pad_token_id or 0, "pretrain")
    assert "attention_mask" not in batch
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        at = 0
        for i in range(3):  # a row keeps its examples in the data's order
            n = len(examples[i].input_ids)
            alone = model(input_ids=torch.tensor([list(examples[i].input_ids)])).logits
            assert torch.allclose(together[0, at : at + n], alone[0], atol=1e-4)
            at += n
        # without the positions the same row attends across examples, and differs
        crossed = model(input_ids=batch["input_ids"]).logits
        assert not torch.allclose(crossed, together, atol=1e-4)


def test_pretraining_keeps_every_token_of_long_documents(train_ws: Path, tok: Any) -> None:
    long = " ".join(f"word{i}" for i in range(400))
    path = train_ws / "long.jsonl"
    path.write_text(json.dumps({"text": long}) + "\n" + json.dumps({"text": "short one"}) + "\n")
    whole = tok([long + tok.eos_token])["input_ids"][0]
    assert len(whole) > 3 * 64
    data = load_dataset(path, "pretrain", tok, max_length=64)
    assert all(len(e.input_ids) <= 64 for e in data.examples)
    stream = [t for e in data.examples[: len(data.examples) - 1] for t in e.input_ids]
    assert stream == whole  # nothing past max_length is thrown away
    packed = load_dataset(path, "pretrain", tok, max_length=64, packing=True)
    assert sum(len(e.input_ids) for e in packed.examples) == sum(
        len(e.input_ids) for e in data.examples
    )
    assert len(packed.examples) < len(data.examples)


def conversations(path: Path, rows: list[list[dict[str, str]]]) -> Path:
    pq.write_table(pa.table({"messages": rows}), path)
    return path


def test_reasoning_is_trained_inside_the_assistant_turn_when_asked(
    train_ws: Path, tok: Any
) -> None:
    row = [
        {"role": "user", "content": "Is 7 prime?"},
        {"role": "assistant", "content": "Yes.", "reasoning_content": "7 has no divisors"},
    ]
    path = conversations(train_ws / "reasoning.parquet", [row])
    for reasoning in (True, False):
        data = load_dataset(path, "sft", tok, max_length=256, reasoning=reasoning)
        (example,) = data.examples
        assert isinstance(example.labels, list)
        trained = tok.decode([t for t in example.labels if t != IGNORE])
        assert ("7 has no divisors" in trained) is reasoning
        assert "Yes." in trained and "Is 7 prime" not in trained


def test_drops_are_counted_by_reason(train_ws: Path, tok: Any) -> None:
    ok = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = [
        ok,
        [{"role": "user", "content": "nobody answers"}],
        [{"role": "system", "content": "long " * 300}, *ok],
    ]
    data = load_dataset(conversations(train_ws / "mixed.parquet", rows), "sft", tok, max_length=64)
    assert len(data.examples) == 1
    assert data.dropped_by == {"no_assistant_turn": 1, "truncated": 1}


@pytest.mark.slow
def test_no_usable_conversation_names_the_cause_and_the_fix(train_ws: Path) -> None:
    long = [
        {"role": "system", "content": "policy " * 200},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    conversations(train_ws / "long.parquet", [long] * 20)
    config = write_config(train_ws, "all-truncated", data={"train": "long.parquet"})
    run = offline_train("--config", str(config))
    assert run.returncode == DataError.exit_code, run.stderr
    assert "20 dropped: nothing of the assistant's left within data.max_length" in run.stderr
    assert "raise data.max_length (now 128)" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_template_without_a_chat_template_is_a_clear_error(train_ws: Path, tok: Any) -> None:
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(train_ws / "models/tiny")
    bare.chat_template = None
    path = train_ws / "data/split/conversations/train.parquet"
    with pytest.raises(TemplateError, match="no chat template"):
        load_dataset(path, "sft", bare, max_length=128)


def test_stored_examples_read_back_the_same(train_ws: Path, tok: Any, tmp_path: Path) -> None:
    path = train_ws / "data/split/conversations/train.parquet"
    for packing in (False, True):
        data = load_dataset(path, "sft", tok, max_length=128, packing=packing)
        save_examples(data, tmp_path / f"{packing}.arrow")
        stored = open_examples(tmp_path / f"{packing}.arrow")
        assert len(stored.examples) == len(data.examples) and stored.rows == data.rows
        assert stored.dropped_by == data.dropped_by
        for i in (0, len(data.examples) // 2, -1):
            a, b = data.examples[i], stored.examples[i]
            assert list(a.input_ids) == list(b.input_ids)
            assert list(a.labels) == list(b.labels)  # type: ignore[arg-type]
            assert (a.segments is None) == (b.segments is None)
        first = collate(data.examples[:4], 0, "sft")
        again = collate(stored.examples[:4], 0, "sft")
        assert first.keys() == again.keys()
        assert all(bool((first[k] == again[k]).all()) for k in first)
        assert real_tokens(stored.examples[:4]) == real_tokens(data.examples[:4])


@pytest.mark.slow
def test_packing_trains_on_fewer_rows_and_reports_them(train_ws: Path) -> None:
    config = write_config(
        train_ws,
        "packed",
        data={"packing": True},
        max_steps=6,
        eval_every=3,
        checkpoint={"full_every": 6, "light_every": 6},
    )
    run = offline_train("--config", str(config))
    assert run.returncode == 0, run.stderr
    assert "examples packed into" in run.stderr
    records = log_records(train_ws / "out/packed/logs")
    start = next(r for r in records if r.get("event") == "start")
    steps = [r for r in records if "loss" in r and "event" not in r]
    assert len(steps) == 6 and all(r["loss"] == r["loss"] for r in steps)
    stored = list((train_ws / "out/packed/checkpoints").glob("*/data/train-*.arrow"))
    assert len(stored) == 1
    assert start["examples"] == len(open_examples(stored[0]).examples)
    assert start["examples_before_packing"] > start["examples"]
    assert start["chunked_loss"] is True and start["lora_targets"] is None  # no LoRA here
    assert set(start["dropped"]) <= {"truncated", "no_assistant_turn", "empty"}
    card = json.loads((train_ws / "out/packed/model/training_card.json").read_text())
    assert card["data"]["dropped"] == start["dropped"]
