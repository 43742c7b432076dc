"""``offline evaluate``: an exported model's task figures on held-out data, per backend.

The export gate answers "does this artifact behave like the model it came from?" on a sample.
Evaluation answers "how good is what we deploy?": every row of a held-out split goes through
each backend of an export directory, loaded exactly as ``offline serve`` loads it (manifest
verified, fixed sequence length, the packaged tokenizer), and the eager fp32 model alongside.

- A classifier gets accuracy, macro F1, per-class precision/recall/F1 and a confusion matrix.
- A causal LM gets loss, perplexity and next-token accuracy on the tokens ``offline train``
  learns from: the assistant turns of a conversation table (as in SFT), or all of a text.

Every backend also gets its top-1 agreement with eager and its accuracy drop in points. The
figures go to a JSON file that DVC tracks as metrics (``dvc metrics diff`` compares runs).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from offline.errors import DataError, GateError, NotFoundError
from offline.fsutil import sha256_file

BATCH = 8
WHOLE = 1 << 16  # tokens: an LM's rows are read whole


def _rows(model: Any, data: Path, rows: int | None) -> tuple[Any, Any, str, int, int]:
    """Held-out rows as (ids (n, seq_len), targets, task, rows read, rows skipped): class
    indexes for a classifier, per-token targets (-100 where the loss skips) for an LM, whose
    rows may become several windows each. Skipped rows have nothing to score: no label, or
    no assistant turn."""
    import numpy as np

    from offline.train.data import IGNORE, load_dataset, read_table

    if not data.exists():
        raise NotFoundError(
            f"--data {data} does not exist",
            fix="point --data at a held-out split (e.g. data/split/tickets/test.parquet)",
        )
    if model.kind == "sequence-classification":
        task = "classification"
    else:
        names = read_table(data).schema.names
        chat = "messages" in names or {"instruction", "response"} <= set(names)
        task = "sft" if chat else "pretrain"
    # an LM reads each row whole, in windows of its fixed length (below)
    longest = model.seq_len if task == "classification" else WHOLE
    dataset = load_dataset(
        data, task, model.tokenizer, max_length=longest, label_names=model.labels
    )
    examples = dataset.examples[:rows] if rows else dataset.examples
    if task == "classification":
        ids = model.pad([e.input_ids for e in examples])
        labels = np.array([int(e.labels) for e in examples])  # type: ignore[arg-type]
        return ids, labels, task, len(examples), dataset.dropped
    windows: list[list[int]] = []
    wanted: list[list[int]] = []
    for e in examples:
        assert isinstance(e.labels, list)
        for window, targets in _windows(list(e.input_ids), e.labels, model.seq_len):
            windows.append(window)
            wanted.append(targets)
    ids = model.pad(windows)
    targets_array = np.full(ids.shape, IGNORE, dtype=np.int64)
    for row, targets in enumerate(wanted):
        targets_array[row, : len(targets)] = targets
    return ids, targets_array, task, len(examples), dataset.dropped


def _windows(ids: list[int], labels: list[int], seq_len: int) -> list[tuple[list[int], list[int]]]:
    """A row longer than the model's fixed length, read in windows of ``seq_len`` that advance
    by half of it: each token is scored once (position t predicts label t + 1), with at least
    half a window of context except at the start of the row. Windows with nothing to score
    (e.g. only a system prompt and a user turn) are left out."""
    from offline.train.data import IGNORE

    step = max(seq_len // 2, 1)
    out = []
    start = 0
    while True:
        window = ids[start : start + seq_len]
        first_scored = 0 if start == 0 else seq_len - step
        targets = [
            labels[start + t + 1] if t >= first_scored and start + t + 1 < len(ids) else IGNORE
            for t in range(len(window))
        ]
        if any(v != IGNORE for v in targets):
            out.append((window, targets))
        if start + seq_len >= len(ids):
            return out
        start += step


def _run(model: Any, ids: Any, targets: Any, task: str) -> tuple[Any, Any, float]:
    """(top-1 per row or per token, the task's raw result, seconds in the model), batch by
    batch: a classifier's logits, or an LM's figures (its (rows, seq_len, vocab) logits never
    sit in memory at once)."""
    import numpy as np

    tops, scores, lm = [], [], LMTotals()
    seconds = 0.0
    for i in range(0, len(ids), BATCH):
        start = time.perf_counter()
        logits = model.forward(ids[i : i + BATCH])
        seconds += time.perf_counter() - start
        tops.append(logits.argmax(-1))
        if task == "classification":
            scores.append(logits)
        else:
            lm.add(logits, targets[i : i + BATCH])
    top = np.concatenate(tops)
    return top, np.concatenate(scores) if task == "classification" else lm.figures(), seconds


def classification_figures(
    logits: Any, labels: Any, names: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(accuracy and macro F1, per-class precision/recall/F1/support)."""
    import numpy as np

    predicted = logits.argmax(-1)
    per_class: dict[str, Any] = {}
    f1s = []
    for index, name in enumerate(names):
        tp = int(((predicted == index) & (labels == index)).sum())
        predicted_n, support = int((predicted == index).sum()), int((labels == index).sum())
        precision = tp / predicted_n if predicted_n else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support,
        }
        if support:  # a class absent from the held-out rows has no F1 to average
            f1s.append(f1)
    figures = {
        "accuracy": round(float((predicted == labels).mean()), 4),
        "macro_f1": round(float(np.mean(f1s)) if f1s else 0.0, 4),
    }
    return figures, per_class


class LMTotals:
    """Cross-entropy and next-token hits summed over the target positions of each batch."""

    def __init__(self) -> None:
        self.nll = 0.0
        self.hits = 0
        self.tokens = 0

    def add(self, logits: Any, targets: Any) -> None:
        import numpy as np

        mask = targets >= 0
        picked = logits[mask].astype(np.float64)
        wanted = targets[mask]
        top = picked.max(-1, keepdims=True)
        log_z = top[:, 0] + np.log(np.exp(picked - top).sum(-1))
        self.nll += float((log_z - picked[np.arange(len(wanted)), wanted]).sum())
        self.hits += int((picked.argmax(-1) == wanted).sum())
        self.tokens += int(mask.sum())

    def figures(self) -> dict[str, Any]:
        loss = self.nll / max(self.tokens, 1)
        return {
            "loss": round(loss, 4),
            "perplexity": round(math.exp(min(loss, 50.0)), 3),
            "token_accuracy": round(self.hits / max(self.tokens, 1), 4),
            "tokens": self.tokens,
        }


def _agreement(top: Any, reference: Any, targets: Any, task: str) -> float:
    same = top == reference if task == "classification" else (top == reference)[targets >= 0]
    return round(float(same.mean()), 4)


def host_backends(directory: Path) -> list[str]:
    """The formats of ``directory`` this host can run, eager first (the reference)."""
    from offline.deploy import artifact

    return ["eager", *artifact.host_formats(artifact.read_card(directory))]


def evaluate(
    directory: Path,
    data: Path,
    *,
    backends: list[str] | None = None,
    rows: int | None = None,
) -> dict[str, Any]:
    """Every row of ``data`` through each backend of the export ``directory``.

    Raises:
        NotFoundError: no export directory, no data, or (eager) no source model.
        ConfigError: a backend the directory has no artifact for on this host.
        IntegrityError: a file differs from the manifest.
        DataError: the data lacks the task's columns or holds labels the model does not know.
    """
    from offline.deploy.artifact import AUTO_ORDER, open_export

    # eager first: agreement and drop are measured against it
    chosen = [
        "eager",
        *(b for b in dict.fromkeys(backends or host_backends(directory)) if b != "eager"),
    ]
    models = {b: open_export(directory, b) for b in chosen}
    eager = models["eager"]
    ids, targets, task, read, skipped = _rows(eager, data, rows)
    if not len(ids):
        raise DataError(f"--data {data}: no row to evaluate", fix="check the split's metrics")
    deployed = next((b for b in AUTO_ORDER if b in models), "eager")
    result: dict[str, Any] = {
        "model": directory.name,
        "version": models[deployed].version,
        "kind": eager.kind,
        "task": task,
        "data": str(data),
        "data_sha256": sha256_file(data) if data.is_file() else None,
        "rows": read,
        "skipped_rows": skipped,
        "windows": len(ids),
        "seq_len": eager.seq_len,
        "deployed": deployed,
        "backends": {},
    }
    reference = None
    for name, model in models.items():
        top, raw, seconds = _run(model, ids, targets, task)
        if reference is None:
            reference = top  # eager runs first
        per_class: dict[str, Any] = {}
        if task == "classification":
            figures, per_class = classification_figures(raw, targets, eager.labels or [])
        else:
            figures = raw
        figures["agreement_with_eager"] = _agreement(top, reference, targets, task)
        figures["rows_per_s"] = round(len(ids) / seconds, 1) if seconds else None
        key = "accuracy" if task == "classification" else "token_accuracy"
        if name != "eager":
            base = result["backends"]["eager"][key]
            figures["accuracy_drop_points"] = round(100 * (base - figures[key]), 2)
        result["backends"][name] = figures
        if name == deployed and task == "classification":
            names = eager.labels or []
            result["per_class"] = per_class
            result["confusion"] = [
                {"actual": names[int(a)], "predicted": names[int(p)]}
                for a, p in zip(targets, top, strict=True)
            ]
    return result


def check(result: dict[str, Any], min_accuracy: float | None, max_drop: float | None) -> None:
    """Fail (GateError) when the deployed backend misses a threshold, naming the figure."""
    figures = result["backends"][result["deployed"]]
    key = "accuracy" if result["task"] == "classification" else "token_accuracy"
    failed = []
    if min_accuracy is not None and figures[key] < min_accuracy:
        failed.append(f"{key} {figures[key]} < --min-accuracy {min_accuracy}")
    drop = figures.get("accuracy_drop_points")
    if max_drop is not None and drop is not None and drop > max_drop:
        failed.append(f"accuracy drop {drop} points > --max-accuracy-drop {max_drop}")
    if failed:
        raise GateError(
            f"{result['model']} ({result['deployed']}) on {result['data']}: " + "; ".join(failed),
            fix="train longer or on more labelled data, or export without int8 (--quantize none)",
        )


def markdown(result: dict[str, Any]) -> str:
    """A short table: one row per backend, and per-class figures for a classifier."""
    classification = result["task"] == "classification"
    task_cols = (
        ["accuracy", "macro_f1"] if classification else ["loss", "perplexity", "token_accuracy"]
    )
    cols = [*task_cols, "agreement_with_eager", "accuracy_drop_points", "rows_per_s"]
    lines = [
        f"# {result['model']} on {result['data']} ({result['rows']} rows"
        + ("" if classification else f" in {result['windows']} windows")
        + f" of {result['seq_len']} tokens; deployed backend: {result['deployed']})",
        "",
        "| backend | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, figures in result["backends"].items():
        cells = ["-" if figures.get(c) is None else str(figures[c]) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if classification:
        lines += ["", "| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        for name, c in result["per_class"].items():
            lines.append(
                f"| {name} | {c['precision']} | {c['recall']} | {c['f1']} | {c['support']} |"
            )
    return "\n".join(lines) + "\n"
