"""Inter-annotator agreement over tasks that two or more annotators labeled.

Per choice-like field (every choices and rating control; a rating counts as a category, no
partial credit for 4 against 5):

- ``percent``: the share of agreeing annotator pairs per task, averaged over tasks (for two
  annotators, the share of tasks they agree on);
- ``cohen_kappa``: when exactly two annotators labeled the field's multiply-labeled tasks;
- ``fleiss_kappa``: Fleiss' kappa needs the same number of ratings on every task, so it is computed
  over the tasks with the most common number (``fleiss_items`` of them, ``raters_per_item`` each;
  on a tie, the larger number) and the others are left out rather than guessed at.

For a labels control (NER): ``ner_f1``, exact-match span F1 (same start, end and label) between
every two annotators of a task, averaged over all such pairs; two annotators who both mark nothing
agree fully (F1 1.0).

A kappa is undefined when chance agreement is already total (everyone used one category): it is
``None`` then, never NaN, as is every statistic with no task to compute it on.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from typing import Any

from offline.labeling.templates import Template, labels_from_result

__all__ = [
    "Annotated",
    "agreement",
    "agreement_from_labels",
    "annotations_of",
    "cohen_kappa",
    "fleiss_kappa",
    "fleiss_table",
    "percent_agreement",
    "span_f1",
]

# One task's annotations: (annotator, flat labels as labels_from_result gives them).
Annotated = Sequence[tuple[str, Mapping[str, Any]]]
Span = tuple[int, int, str]
_CHOICE_LIKE = ("choices", "rating")


def _kappa(observed: float, chance: float) -> float | None:
    if math.isclose(chance, 1.0):
        return None
    return (observed - chance) / (1.0 - chance)


def percent_agreement(items: Iterable[Sequence[Hashable]]) -> float | None:
    """Agreeing pairs over all pairs of ratings per item, averaged over items with >= 2 ratings."""
    shares = []
    for ratings in items:
        n = len(ratings)
        if n >= 2:
            same = sum(c * (c - 1) for c in Counter(ratings).values())
            shares.append(same / (n * (n - 1)))
    return sum(shares) / len(shares) if shares else None


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two annotators' labels on the same items (``a[i]`` and ``b[i]``).

    Returns:
        ``(p_o - p_e) / (1 - p_e)``; ``None`` with no items or when ``p_e`` is 1.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: {len(a)} labels against {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    chance = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    return _kappa(observed, chance)


def fleiss_table(items: Iterable[Sequence[Hashable]]) -> list[list[int]]:
    """Items x categories counts (how many raters put item i in category j) for
    :func:`fleiss_kappa`; categories in sorted order of their text."""
    rows = [Counter(ratings) for ratings in items]
    categories = sorted({c for row in rows for c in row}, key=str)
    return [[row[c] for c in categories] for row in rows]


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an items x categories count table with the same raters per item.

    Returns:
        ``(P_bar - P_e) / (1 - P_e)``; ``None`` with no items or when ``P_e`` is 1.

    Raises:
        ValueError: Items have different numbers of ratings, or fewer than two.
    """
    if not table:
        return None
    raters = {sum(row) for row in table}
    if len(raters) != 1 or min(raters) < 2:
        raise ValueError(f"fleiss_kappa: every item needs the same >= 2 ratings, got {raters}")
    n, items = raters.pop(), len(table)
    p_bar = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in table) / items
    totals = [sum(column) for column in zip(*table, strict=True)]
    chance = sum((t / (items * n)) ** 2 for t in totals)
    return _kappa(p_bar, chance)


def span_f1(a: Collection[Span], b: Collection[Span]) -> float:
    """Exact-match F1 between two sets of ``(start, end, label)`` spans; 1.0 when both are empty."""
    left, right = set(a), set(b)
    if not left and not right:
        return 1.0
    return 2 * len(left & right) / (len(left) + len(right))


# --------------------------------------------------------------------------- Label Studio tasks


def _annotator(annotation: Mapping[str, Any], index: int) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):
        who = who.get("id", who.get("email"))
    if who is None:
        # Without an owner an annotation counts as its own annotator: it still adds a rating.
        return f"annotation:{annotation.get('id', index)}"
    return str(who)


def annotations_of(template: Template, task: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A Label Studio task's submitted annotations as ``(annotator, flat labels)``.

    Cancelled (skipped) annotations are left out; an annotator with several keeps the last.
    """
    latest: dict[str, dict[str, Any]] = {}
    for index, annotation in enumerate(task.get("annotations") or []):
        if annotation.get("was_cancelled"):
            continue
        latest[_annotator(annotation, index)] = labels_from_result(
            template, annotation.get("result") or []
        )
    return list(latest.items())


def agreement(template: Template, tasks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Agreement over Label Studio tasks (export JSON or API, each with its ``annotations``).

    Returns:
        ``{"template", "tasks", "tasks_with_2plus", "annotators", "fields": {field: {"items",
        "percent", "cohen_kappa", "fleiss_kappa", "fleiss_items", "raters_per_item"}},
        "ner_f1", "ner_pairs"}``, plain JSON-able values; see the module docstring.
    """
    return agreement_from_labels(template, [annotations_of(template, t) for t in tasks])


def agreement_from_labels(template: Template, tasks: Sequence[Annotated]) -> dict[str, Any]:
    """:func:`agreement` over tasks already flattened into ``(annotator, labels)`` pairs."""
    multi = [dict(task) for task in tasks if len(dict(task)) >= 2]
    fields = {
        c.field: _field_stats([_ratings(task, c.field) for task in multi])
        for c in template.controls
        if c.type in _CHOICE_LIKE
    }
    spans = [c.field for c in template.controls if c.type == "labels"]
    f1s = [f for field in spans for task in multi for f in _pair_f1s(task, field)]
    return {
        "template": template.name,
        "tasks": len(tasks),
        "tasks_with_2plus": len(multi),
        "annotators": len({who for task in multi for who in task}),
        "fields": fields,
        "ner_f1": sum(f1s) / len(f1s) if f1s else None,
        "ner_pairs": len(f1s),
    }


def _ratings(task: Mapping[str, Mapping[str, Any]], field: str) -> dict[str, Hashable]:
    return {who: labels[field] for who, labels in task.items() if labels.get(field) is not None}


def _field_stats(tasks: list[dict[str, Hashable]]) -> dict[str, Any]:
    rated = [task for task in tasks if len(task) >= 2]
    items = [list(task.values()) for task in rated]
    annotators = sorted({who for task in rated for who in task})
    cohen = None
    if len(annotators) == 2:
        x, y = annotators
        cohen = cohen_kappa([t[x] for t in rated], [t[y] for t in rated])
    sizes = Counter(len(i) for i in items)
    size = max(sizes, key=lambda s: (sizes[s], s)) if sizes else 0
    fleiss_items = [i for i in items if len(i) == size]
    return {
        "items": len(items),
        "percent": percent_agreement(items),
        "cohen_kappa": cohen,
        "fleiss_kappa": fleiss_kappa(fleiss_table(fleiss_items)),
        "fleiss_items": len(fleiss_items),
        "raters_per_item": size or None,
    }


def _pair_f1s(task: Mapping[str, Mapping[str, Any]], field: str) -> list[float]:
    spans = {
        who: {(e["start"], e["end"], e["label"]) for e in labels.get(field) or []}
        for who, labels in task.items()
    }
    return [span_f1(spans[x], spans[y]) for x, y in itertools.combinations(sorted(spans), 2)]
