"""Pre-labels: Label Studio predictions from keyword rules, a dataset's label or a JSONL file.

A prediction is what Label Studio shows an annotator before they start:
``{"model_version", "score", "result": [...]}``, ``result`` in the same item format an annotation
has. :func:`keyword_prediction` guesses a category from bilingual keywords (by default the sample
tickets' :data:`~offline.data.keywords.CATEGORY_KEYWORDS`); :func:`label_prediction` turns a known
label (a dataset's ``label`` column, a model's output) into one; :func:`predictions_from_file`
reads a ``--predictions`` JSONL file.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline.data.keywords import CATEGORY_KEYWORDS
from offline.errors import ConfigError, NotFoundError
from offline.labeling.templates import Control, Template

__all__ = [
    "KEYWORD_MODEL",
    "KeywordRules",
    "keyword_prediction",
    "keyword_rules",
    "label_prediction",
    "predictions_from_file",
]

KEYWORD_MODEL = "keyword-rules-1"


def _fold(text: str) -> str:
    # NFKC first, so fullwidth letters in uncleaned text still meet ASCII keywords like "error".
    return unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True)
class KeywordRules:
    """Case-folded keywords per category; on a tie the category listed first wins."""

    categories: tuple[tuple[str, tuple[str, ...]], ...]

    def counts(self, text: str) -> list[tuple[str, int]]:
        """How many times each category's keywords occur in ``text`` (case and width folded)."""
        lowered = _fold(text)
        return [(cat, sum(lowered.count(k) for k in words)) for cat, words in self.categories]

    def best(self, text: str) -> tuple[str, float] | None:
        """The category with the most hits and its share of all hits; ``None`` without a hit."""
        counts = self.counts(text)
        total = sum(n for _, n in counts)
        if total == 0:
            return None
        # max keeps the first of equal maxima, so ties go to the earlier category.
        category, hits = max(counts, key=lambda c: c[1])
        return category, hits / total


def keyword_rules(
    table: Mapping[str, Mapping[str, Sequence[str]] | Sequence[str]] = CATEGORY_KEYWORDS,
) -> KeywordRules:
    """Compile a rule table: category -> keywords, or category -> language -> keywords.

    The default is the sample tickets' bilingual table; categories keep the table's order, which
    breaks ties. Categories without keywords (the sample's ``other``) never match.
    """
    compiled = []
    for category, words in table.items():
        flat = [w for ws in words.values() for w in ws] if isinstance(words, Mapping) else words
        keywords = tuple(dict.fromkeys(_fold(w) for w in flat if w))
        if keywords:
            compiled.append((category, keywords))
    return KeywordRules(tuple(compiled))


def _label_control(template: Template, why: str) -> Control:
    if template.label_control is None:
        raise ConfigError(
            f"template {template.name!r} has no label control, so {why} cannot fill it in",
            fix="use a template with `label_control` in templates.toml (classification,"
            " conversation_review)",
        )
    return template.control(template.label_control)


def label_prediction(
    template: Template, label: str, *, score: float | None = None, model_version: str
) -> dict[str, Any]:
    """A prediction that picks ``label`` in the template's label control.

    Raises:
        ConfigError: The template has no label control, or ``label`` is not one of its choices.
    """
    control = _label_control(template, f"label {label!r}")
    if label not in control.values:
        raise ConfigError(
            f"label {label!r} is not a choice of template {template.name!r}"
            f" ({', '.join(control.values)})",
            fix="map the label onto one of those choices",
        )
    item = {
        "from_name": control.name,
        "to_name": control.to_name,
        "type": control.type,
        "value": {"choices": [label]},
    }
    prediction: dict[str, Any] = {"model_version": model_version, "result": [item]}
    if score is not None:
        prediction["score"] = float(score)
    return prediction


def _row_text(template: Template, row: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for column in template.fields.values():
        value = row.get(column)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):  # conversation messages
            parts.extend(m["content"] for m in value if isinstance(m, Mapping) and m.get("content"))
    return "\n".join(parts)


def keyword_prediction(
    template: Template,
    row: Mapping[str, Any],
    rules: KeywordRules | None = None,
    *,
    fallback: str | None = None,
) -> dict[str, Any] | None:
    """A prediction of the row's category from keyword hits, for the template's label control.

    The text is the row's template fields joined (a conversation's message contents). The category
    with the most keyword occurrences wins, ties going to the earlier category of the rule table;
    ``score`` is its share of all hits.

    Args:
        template: A template with a label control (``classification``, ``conversation_review``).
        row: A canonical cleaned row.
        rules: Default :func:`keyword_rules` over the sample's bilingual table.
        fallback: The category to predict when no keyword occurs (score 0). The default ``None``
            gives no prediction at all: the annotator starts from a blank choice rather than from a
            guess nothing supports.

    Raises:
        ConfigError: The template has no label control, or the rules name a category it lacks.
    """
    control = _label_control(template, "keyword rules")
    rules = rules or keyword_rules()
    unknown = [c for c, _ in rules.categories if c not in control.values]
    if unknown:
        raise ConfigError(
            f"keyword rules name categories {unknown} that template {template.name!r} does not"
            f" offer ({', '.join(control.values)})",
            fix="make the rule table's categories a subset of the template's choices",
        )
    best = rules.best(_row_text(template, row))
    if best is None:
        if fallback is None:
            return None
        best = (fallback, 0.0)
    label, score = best
    return label_prediction(template, label, score=round(score, 4), model_version=KEYWORD_MODEL)


# --------------------------------------------------------------------------- predictions file


def _line_error(path: Path, number: int, why: str) -> ConfigError:
    return ConfigError(
        f"{path}:{number}: {why}",
        fix='each line is {"record_id": ..., "label": ... | "result": [...],'
        ' "score": 0.9, "model_version": "..."} (score and model_version optional)',
    )


def _checked_result(template: Template, result: Any) -> list[dict[str, Any]]:
    """``result`` when it is a result list for the template's controls; else ``ValueError``."""
    if not isinstance(result, list) or not result:
        raise ValueError("`result` must be a non-empty list of result items")
    names = {c.name: c for c in template.controls}
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            raise ValueError("every result item must be an object with a `value` object")
        control = names.get(item.get("from_name", ""))
        if control is None:
            raise ValueError(
                f"from_name {item.get('from_name')!r} is not a control of the template"
            )
        if item.get("to_name") != control.to_name or item.get("type") != control.type:
            raise ValueError(
                f"item of {control.name!r} needs to_name {control.to_name!r}, type {control.type!r}"
            )
    return result


def _prediction(
    template: Template, path: Path, number: int, entry: Any
) -> tuple[str, dict[str, Any]]:
    if not isinstance(entry, dict):
        raise _line_error(path, number, "not a JSON object")
    record_id, score = entry.get("record_id"), entry.get("score")
    version = entry.get("model_version", f"file:{path.name}")
    if not isinstance(record_id, str) or not record_id:
        raise _line_error(path, number, "no `record_id` string")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
        raise _line_error(path, number, f"`score` {score!r} is not a number")
    if not isinstance(version, str):
        raise _line_error(path, number, "`model_version` is not a string")
    if ("label" in entry) == ("result" in entry):
        raise _line_error(path, number, "give exactly one of `label` and `result`")
    if "label" in entry:
        if not isinstance(entry["label"], str):
            raise _line_error(path, number, f"`label` {entry['label']!r} is not a string")
        try:
            return record_id, label_prediction(
                template, entry["label"], score=score, model_version=version
            )
        except ConfigError as err:
            raise _line_error(path, number, err.message) from None
    try:
        result = _checked_result(template, entry["result"])
    except ValueError as err:
        raise _line_error(path, number, str(err)) from None
    prediction = {"model_version": version, "result": result}
    return record_id, prediction | ({} if score is None else {"score": float(score)})


def predictions_from_file(path: Path, template: Template) -> dict[str, dict[str, Any]]:
    """Read a predictions JSONL file into record_id -> Label Studio prediction.

    Each non-blank line is ``{"record_id", "label" | "result", "score"?, "model_version"?}``:
    ``label`` picks a choice of the template's label control, ``result`` is a full Label Studio
    result list for the template's controls. ``model_version`` defaults to ``file:<name>``.

    Raises:
        NotFoundError: ``path`` does not exist.
        ConfigError: A line is not JSON, lacks a field, names a label or control the template does
            not have, or repeats a record_id; the message names the file and line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{path}: predictions file not found") from None
    out: dict[str, dict[str, Any]] = {}
    first: dict[str, int] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise _line_error(path, number, f"not a JSON line: {err}") from None
        record_id, prediction = _prediction(template, path, number, entry)
        if record_id in out:
            raise _line_error(
                path, number, f"record_id {record_id} already on line {first[record_id]}"
            )
        out[record_id], first[record_id] = prediction, number
    return out
