"""`offline evaluate`: held-out figures of an export, per backend, checked against figures
computed here straight from the transformers model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from offline.deploy.evaluate import _windows, evaluate
from offline.train.data import IGNORE
from tests.sample_workspace import sample_workspace, tiny_classifier

pytestmark = pytest.mark.integration
SEQ_LEN = 32


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny LM and classifier, exported as fp32 TorchScript and int8 TorchScript."""
    from offline.deploy.export import export

    root = sample_workspace(tmp_path_factory.mktemp("evaluate"), rows=300, seed=7, model_vocab=2000)
    tiny_classifier(root, root / "models/tiny", root / "models/cls")
    for model, data, out, quantize in (
        ("tiny", "conversations", "lm", "none"),
        ("cls", "tickets", "cls", "none"),
        ("cls", "tickets", "cls-int8", "int8"),
    ):
        export(
            root / "models" / model,
            root / "export" / out,
            formats=["torchscript"],
            quantize=quantize,
            seq_len=SEQ_LEN,
            sample=root / f"data/split/{data}/test.parquet",
            sample_rows=8,
            latency_runs=1,
        )
    return root


def offline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def direct_predictions(ws: Path) -> tuple[list[str], list[str]]:
    """Labels and the transformers classifier's own predictions on the test split."""
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    table = pq.read_table(ws / "data/split/tickets/test.parquet")
    model = AutoModelForSequenceClassification.from_pretrained(ws / "models/cls").eval()
    tok = AutoTokenizer.from_pretrained(ws / "models/cls")
    predicted = []
    with torch.no_grad():
        for text in table["text"].to_pylist():  # one at a time: no padding involved
            ids = tok(text, truncation=True, max_length=SEQ_LEN, return_tensors="pt")["input_ids"]
            predicted.append(model.config.id2label[int(model(input_ids=ids).logits.argmax(-1))])
    return [str(v) for v in table["label"].to_pylist()], predicted


def test_a_classifier_is_scored_like_the_model_itself_would_be(ws: Path) -> None:
    result = evaluate(ws / "export/cls-int8", ws / "data/split/tickets/test.parquet")
    labels, predicted = direct_predictions(ws)
    assert result["task"] == "classification" and result["rows"] == len(labels)
    assert result["skipped_rows"] == 0
    assert list(result["backends"]) == ["eager", "torchscript"]
    assert result["deployed"] == "torchscript"
    eager = result["backends"]["eager"]
    hits = sum(a == p for a, p in zip(labels, predicted, strict=True))
    assert eager["accuracy"] == pytest.approx(hits / len(labels), abs=1e-4)

    # per-class figures and the confusion rows agree with each other and with the labels
    assert sum(c["support"] for c in result["per_class"].values()) == len(labels)
    assert Counter(r["actual"] for r in result["confusion"]) == Counter(labels)
    deployed = result["backends"]["torchscript"]
    diagonal = sum(r["actual"] == r["predicted"] for r in result["confusion"])
    assert deployed["accuracy"] == pytest.approx(diagonal / len(labels), abs=1e-4)
    for name, c in result["per_class"].items():
        tp = sum(r["actual"] == r["predicted"] == name for r in result["confusion"])
        said = sum(r["predicted"] == name for r in result["confusion"])
        assert c["recall"] == pytest.approx(tp / c["support"] if c["support"] else 0, abs=1e-4)
        assert c["precision"] == pytest.approx(tp / said if said else 0, abs=1e-4)
    f1s = [c["f1"] for c in result["per_class"].values() if c["support"]]
    assert deployed["macro_f1"] == pytest.approx(sum(f1s) / len(f1s), abs=1e-3)
    # int8 against fp32 eager: the drop is the difference of the two accuracies
    assert deployed["accuracy_drop_points"] == pytest.approx(
        100 * (eager["accuracy"] - deployed["accuracy"]), abs=0.01
    )
    assert 0.5 <= deployed["agreement_with_eager"] <= 1.0


def test_an_lm_is_scored_on_the_assistant_tokens_like_training_is(ws: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from offline.serve.models import load_model
    from offline.train.data import load_dataset

    data = ws / "data/split/conversations/test.parquet"
    result = evaluate(ws / "export/lm", data, backends=["torchscript"])
    assert result["task"] == "sft" and list(result["backends"]) == ["eager", "torchscript"]
    eager = result["backends"]["eager"]
    assert result["backends"]["torchscript"]["loss"] == pytest.approx(eager["loss"], abs=1e-3)

    # the same figure from the transformers model and torch's cross-entropy, window by window
    served = load_model(ws / "export/lm", "eager")
    model = AutoModelForCausalLM.from_pretrained(ws / "models/tiny").eval()
    examples = load_dataset(data, "sft", served.tokenizer, max_length=1 << 16).examples
    total, tokens = 0.0, 0
    with torch.no_grad():
        for e in examples:
            assert isinstance(e.labels, list)
            for window, targets in _windows(e.input_ids, e.labels, SEQ_LEN):
                logits = model(input_ids=torch.tensor([window])).logits[0]
                wanted = torch.tensor(targets)  # position t predicts token t + 1
                total += float(torch.nn.functional.cross_entropy(logits, wanted, reduction="sum"))
                tokens += int((wanted != IGNORE).sum())
    assert eager["tokens"] == tokens
    assert eager["loss"] == pytest.approx(total / tokens, abs=1e-3)
    assert eager["perplexity"] == pytest.approx(2.718281828 ** (total / tokens), rel=1e-3)


def test_windows_score_every_target_token_once_with_context() -> None:
    ids = list(range(100, 190))  # 90 tokens
    labels = [IGNORE] * 30 + ids[30:60] + [IGNORE] * 10 + ids[70:]  # two assistant turns
    scored: list[int] = []
    for window, targets in _windows(ids, labels, 16):
        assert len(window) <= 16 and window == ids[ids.index(window[0]) :][: len(window)]
        for t, target in enumerate(targets):
            if target != IGNORE:
                assert target == ids[ids.index(window[0]) + t + 1]  # the next token
                assert window[0] == ids[0] or t >= 8  # half a window of context at least
                scored.append(target)
    assert sorted(scored) == [v for v in labels[1:] if v != IGNORE]  # each exactly once


def test_the_cli_writes_dvc_metrics_and_a_confusion_plot(ws: Path, tmp_path: Path) -> None:
    out, plot = tmp_path / "m/eval.json", tmp_path / "m/confusion.json"
    proc = offline(
        "evaluate", "--model", str(ws / "export/cls"), "--data",
        "data/split/tickets/test.parquet", "--out", str(out), "--confusion", str(plot),
        cwd=ws,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| backend | accuracy | macro_f1 |" in proc.stdout and "| eager |" in proc.stdout
    metrics: dict[str, Any] = json.loads(out.read_text())
    assert set(metrics["backends"]) == {"eager", "torchscript"} and "confusion" not in metrics
    assert len(json.loads(plot.read_text())) == metrics["rows"]


def test_a_missed_threshold_fails_and_names_the_figure(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    proc = offline(
        "evaluate", "--model", str(ws / "export/cls"), "--data",
        "data/split/tickets/test.parquet", "--out", str(out), "--min-accuracy", "1.01",
        cwd=ws,
    )  # fmt: skip
    assert proc.returncode == 12, proc.stderr[-3000:]
    assert "accuracy" in proc.stderr and "--min-accuracy 1.01" in proc.stderr
    assert json.loads(out.read_text())["rows"] > 0  # the figures are kept for a look


def test_bad_input_names_the_item_and_writes_nothing(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    cases = [
        (["--model", str(ws / "export/lm"), "--confusion", str(tmp_path / "c.json")], 3,
         "no confusion matrix"),
        (["--model", str(ws / "export/missing")], 4, "export/missing does not exist"),
        (["--model", str(ws / "export/cls"), "--backend", "tvm"], 3, "has no tvm artifact"),
        (["--model", str(ws / "export/cls"), "--backend", "onnx"], 3, "unknown --backend onnx"),
    ]  # fmt: skip
    for args, code, message in cases:
        data = ws / "data/split/conversations/test.parquet"
        if "cls" in args[1]:
            data = ws / "data/split/tickets/test.parquet"
        proc = offline("evaluate", *args, "--data", str(data), "--out", str(out), cwd=ws)
        assert proc.returncode == code and message in proc.stderr, (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr and not out.exists()
    proc = offline(
        "evaluate", "--model", str(ws / "export/cls"), "--data", str(tmp_path / "none.parquet"),
        "--out", str(out), cwd=ws,
    )  # fmt: skip
    assert proc.returncode == 4 and "none.parquet does not exist" in proc.stderr
    assert not out.exists()
