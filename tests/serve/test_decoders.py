"""Decoder artifacts served by the continuous-batching engine: a pt2 program or a TVM library
with a KV cache generates what the eager model generates, whatever runs beside it."""

from __future__ import annotations

import asyncio
import json

import pytest

from offline.serve.generation import Sampling
from offline.serve.models import load_model
from tests.serve.conftest import Exports
from tests.serve.test_batching import run_engine

pytestmark = pytest.mark.integration

PROMPTS = [
    [5, 6, 7, 8, 9],
    list(range(10, 90)),  # longer than TVM's prefill entry (32) and the engine's chunk (16)
    [3, 4],
    list(range(300, 341)),
    [11, 12, 13],
]


def test_every_decoder_passed_its_gate_on_generated_tokens(exports: Exports) -> None:
    card = json.loads((exports.lm / "export_card.json").read_text())
    decoders = {a["format"]: a for a in card["artifacts"] if a.get("decoder")}
    assert set(decoders) == {"pt2", "tvm"}
    for art in decoders.values():
        assert art["gate"] == "pass"
        assert art["parity"]["generated_top1_agreement"] == 1.0  # fp32
        assert art["decoder"]["columns"] == card["max_context"] + 1
    assert "Decoders" in (exports.lm / "EXPORT_CARD.md").read_text()


@pytest.mark.parametrize("backend", ["pt2", "tvm"])
def test_a_decoder_generates_what_the_eager_model_generates(exports: Exports, backend: str) -> None:
    import torch

    model = load_model(exports.lm, backend)
    assert model.decoder is not None and model.backend == backend
    eager = load_model(exports.lm, "eager")
    greedy = Sampling(20, temperature=0.0, stop_ids=frozenset())
    # five sequences through three slots: admitted as others end, compacted, prefilled in chunks
    results, metrics = asyncio.run(
        run_engine(model, PROMPTS, [greedy] * len(PROMPTS), max_context=256, prefill_chunk=16)
    )
    for ids, (text, last) in zip(PROMPTS, results, strict=True):
        with torch.inference_mode():
            out = eager.lm.generate(
                torch.tensor([ids]), max_new_tokens=20, min_new_tokens=20, do_sample=False
            )[0, len(ids) :].tolist()
        assert text == eager.tokenizer.decode(out, skip_special_tokens=True)
        assert last.completion_tokens == 20 and last.finish_reason == "length"
    decoded = metrics.registry.get_sample_value(
        "offline_decode_batch_size_sum", {"model": model.version}
    )
    steps = metrics.registry.get_sample_value(
        "offline_decode_batch_size_count", {"model": model.version}
    )
    assert decoded is not None and steps is not None and decoded > steps  # batched steps
