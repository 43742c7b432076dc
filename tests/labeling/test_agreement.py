"""Agreement statistics against hand-computed and textbook values, and over Label Studio tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from offline.labeling.agreement import (
    agreement,
    cohen_kappa,
    fleiss_kappa,
    fleiss_table,
    percent_agreement,
    span_f1,
)
from offline.labeling.templates import Template, load_template

REPO_LABELING = Path(__file__).resolve().parents[2] / "labeling"

# The classic Fleiss example: 10 subjects, 14 raters each, 5 categories; kappa 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def _t(name: str) -> Template:
    return load_template(name, REPO_LABELING)


def _pairs(yy: int, yn: int, ny: int, nn: int) -> tuple[list[str], list[str]]:
    """Two raters' labels from a 2x2 table (rater A first)."""
    a = ["y"] * (yy + yn) + ["n"] * (ny + nn)
    b = ["y"] * yy + ["n"] * yn + ["y"] * ny + ["n"] * nn
    return a, b


# --------------------------------------------------------------------------- formulas


def test_fleiss_textbook_example() -> None:
    kappa = fleiss_kappa(FLEISS_TABLE)
    assert kappa == pytest.approx(0.20993, abs=1e-5)
    assert round(kappa or 0, 3) == 0.210


@pytest.mark.parametrize(
    ("table", "kappa"),
    [
        ((20, 5, 10, 15), 0.4),  # p_o 0.70, p_e 0.50
        ((45, 15, 25, 15), (0.60 - 0.54) / 0.46),  # p_o 0.60, p_e 0.54
        ((25, 35, 5, 35), (0.60 - 0.46) / 0.54),  # p_o 0.60, p_e 0.46
    ],
)
def test_cohen_textbook_examples(table: tuple[int, int, int, int], kappa: float) -> None:
    assert cohen_kappa(*_pairs(*table)) == pytest.approx(kappa)


def test_perfect_agreement_is_one() -> None:
    labels = ["billing", "refund", "other", "billing"]
    assert cohen_kappa(labels, list(labels)) == 1.0
    assert fleiss_kappa(fleiss_table([[x, x, x] for x in labels])) == 1.0
    assert percent_agreement([[x, x] for x in labels]) == 1.0


def test_one_category_everywhere_leaves_kappa_undefined() -> None:
    assert cohen_kappa(["good"] * 5, ["good"] * 5) is None
    assert fleiss_kappa(fleiss_table([["good", "good"]] * 4)) is None
    assert percent_agreement([["good", "good"]] * 4) == 1.0


def test_no_items() -> None:
    assert cohen_kappa([], []) is None
    assert fleiss_kappa([]) is None
    assert percent_agreement([]) is None
    assert percent_agreement([["only one"]]) is None


def test_formula_misuse_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 2]])


def test_percent_agreement_counts_agreeing_pairs() -> None:
    # 3 of 3 pairs agree, then 1 of 3 (a-a), then 0 of 1.
    assert percent_agreement([["a", "a", "a"], ["a", "a", "b"], ["a", "b"]]) == pytest.approx(
        (1 + 1 / 3 + 0) / 3
    )


def test_fleiss_table_counts_per_category() -> None:
    assert fleiss_table([["b", "a", "b"], ["c", "c", "c"]]) == [[1, 2, 0], [0, 0, 3]]


def test_span_f1() -> None:
    a = {(0, 4, "PERSON"), (5, 9, "ORG")}
    assert span_f1(a, {(0, 4, "PERSON"), (5, 9, "LOC")}) == 0.5
    assert span_f1(a, a) == 1.0
    assert span_f1(a, set()) == 0.0
    assert span_f1(set(), set()) == 1.0
    assert span_f1({(0, 4, "PERSON")}, {(0, 5, "PERSON")}) == 0.0  # offsets must match exactly


# --------------------------------------------------------------------------- Label Studio tasks


def _choice(name: str, to_name: str, value: str) -> dict[str, Any]:
    return {"from_name": name, "to_name": to_name, "type": "choices", "value": {"choices": [value]}}


def _ann(who: Any, *items: dict[str, Any], cancelled: bool = False) -> dict[str, Any]:
    return {"id": 1, "completed_by": who, "was_cancelled": cancelled, "result": list(items)}


def _category_task(*labels: tuple[Any, str]) -> dict[str, Any]:
    return {
        "data": {"text": "..."},
        "annotations": [_ann(w, _choice("category", "text", v)) for w, v in labels],
    }


def test_two_annotators_on_classification() -> None:
    tasks = [
        _category_task((1, "billing"), (2, "billing")),
        _category_task((1, "shipping"), (2, "shipping")),
        _category_task((1, "billing"), (2, "refund")),
        _category_task((1, "refund"), (2, "refund")),
        _category_task((1, "shipping"), (2, "billing")),
        _category_task((1, "billing")),  # one annotation: not counted
        {
            "annotations": [
                _ann(1, _choice("category", "text", "refund"), cancelled=True),
                _ann(2, _choice("category", "text", "other")),
            ]
        },
    ]
    report = agreement(_t("classification"), tasks)
    assert report["tasks"] == 7 and report["tasks_with_2plus"] == 5 and report["annotators"] == 2
    label = report["fields"]["label"]
    assert label["items"] == 5
    assert label["percent"] == pytest.approx(0.6)
    # p_e = (2*2 + 2*1 + 1*2) / 25 = 0.32 -> (0.6 - 0.32) / 0.68
    assert label["cohen_kappa"] == pytest.approx(7 / 17)
    # pooled p = (.4, .3, .3) -> P_e = .34 -> (0.6 - 0.34) / 0.66
    assert label["fleiss_kappa"] == pytest.approx(13 / 33)
    assert report["ner_f1"] is None and report["ner_pairs"] == 0
    json.dumps(report, allow_nan=False)


def test_varying_raters_use_the_modal_count_for_fleiss() -> None:
    tasks = [
        _category_task(("a", "billing"), ("b", "billing"), ("c", "billing")),
        _category_task(("a", "billing"), ("b", "billing"), ("c", "refund")),
        _category_task(("a", "refund"), ("b", "refund"), ("c", "refund")),
        _category_task(("a", "billing"), ("b", "refund")),
    ]
    label = agreement(_t("classification"), tasks)["fields"]["label"]
    assert label["percent"] == pytest.approx((1 + 1 / 3 + 1 + 0) / 4)
    assert label["cohen_kappa"] is None  # three annotators
    assert (label["fleiss_items"], label["raters_per_item"]) == (3, 3)
    # P_bar = 7/9, P_e = (5/9)^2 + (4/9)^2 = 41/81 -> 22/40
    assert label["fleiss_kappa"] == pytest.approx(0.55)


def test_same_annotator_twice_counts_once() -> None:
    tasks = [_category_task(({"id": 3, "email": "x@y"}, "billing"), (3, "refund"))]
    report = agreement(_t("classification"), tasks)
    assert report["tasks_with_2plus"] == 0
    assert report["fields"]["label"]["percent"] is None


def test_sft_review_rates_ratings_and_verdicts_not_edits() -> None:
    def task(*anns: tuple[int, int, str]) -> dict[str, Any]:
        return {
            "annotations": [
                _ann(
                    who,
                    {
                        "from_name": "rating",
                        "to_name": "response",
                        "type": "rating",
                        "value": {"rating": r},
                    },
                    _choice("verdict", "response", v),
                    {
                        "from_name": "edited_response",
                        "to_name": "response",
                        "type": "textarea",
                        "value": {"text": [f"edit {who}"]},
                    },
                )
                for who, r, v in anns
            ]
        }

    report = agreement(
        _t("sft_review"),
        [task((1, 5, "accept"), (2, 4, "accept")), task((1, 3, "reject"), (2, 3, "reject"))],
    )
    assert set(report["fields"]) == {"rating", "verdict"}
    assert report["fields"]["rating"]["percent"] == 0.5
    assert report["fields"]["verdict"]["cohen_kappa"] == 1.0
    assert report["fields"]["verdict"]["fleiss_kappa"] == 1.0


def test_conversation_review_all_good_is_undefined_not_nan() -> None:
    tasks = [
        {"annotations": [_ann(w, _choice("verdict", "dialogue", "good")) for w in (1, 2)]}
        for _ in range(3)
    ]
    report = agreement(_t("conversation_review"), tasks)
    verdict = report["fields"]["verdict"]
    assert verdict["percent"] == 1.0
    assert verdict["cohen_kappa"] is None and verdict["fleiss_kappa"] is None
    assert report["fields"]["category"]["items"] == 0
    assert report["fields"]["category"]["fleiss_kappa"] is None
    json.dumps(report, allow_nan=False)


def _span(start: int, end: int, label: str) -> dict[str, Any]:
    value = {"start": start, "end": end, "text": "x" * (end - start), "labels": [label]}
    return {"from_name": "label", "to_name": "text", "type": "labels", "value": value}


def test_ner_pairwise_span_f1() -> None:
    tasks = [
        {
            "annotations": [
                _ann(1, _span(0, 4, "PERSON"), _span(10, 18, "LOC")),
                _ann(2, _span(0, 4, "PERSON"), _span(10, 18, "ORG")),
            ]
        },
        {"annotations": [_ann("x", _span(0, 3, "ORG")), _ann("y", _span(0, 3, "ORG")), _ann("z")]},
        {"annotations": [_ann(1), _ann(2)]},  # both found nothing: full agreement
    ]
    report = agreement(_t("ner"), tasks)
    assert report["ner_pairs"] == 5
    assert report["ner_f1"] == pytest.approx((0.5 + 1 + 0 + 0 + 1) / 5)
    assert report["fields"] == {}
