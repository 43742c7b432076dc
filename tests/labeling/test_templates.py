"""Templates against their contract, task data, result parsing, keyword rules, predictions files."""

# The bilingual tickets use fullwidth characters on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import offline
from offline.data.records import schema_for
from offline.data.sample.files import iter_tickets
from offline.errors import ConfigError, DataError, NotFoundError
from offline.labeling.rules import (
    KEYWORD_MODEL,
    keyword_prediction,
    keyword_rules,
    label_prediction,
    predictions_from_file,
)
from offline.labeling.templates import (
    ENV_DIR,
    Template,
    check_columns,
    labels_from_result,
    load_template,
    load_templates,
    task_data,
    template_names,
    templates_dir,
)

REPO_LABELING = Path(__file__).resolve().parents[2] / "labeling"
NAMES = ["ner", "classification", "sft_review", "conversation_review", "cleaning_review"]
# The review rows ``offline label sample`` builds from the ledger (not a cleaned dataset kind).
LEDGER_COLUMNS = ["record_id", "dataset", "source", "step", "decision", "reason", "text"]


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DIR, raising=False)


@pytest.fixture
def copy_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped templates."""
    target = tmp_path / "labeling"
    shutil.copytree(REPO_LABELING, target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _t(name: str) -> Template:
    return load_template(name, REPO_LABELING)


# --------------------------------------------------------------------------- loading


def test_every_shipped_template_loads_and_matches_its_contract() -> None:
    templates = load_templates(REPO_LABELING)
    assert list(templates) == NAMES == template_names(REPO_LABELING)
    ner = templates["ner"]
    assert ner.control("label").values == ("PERSON", "ORG", "LOC", "PRODUCT", "DATE", "MONEY")
    classification = templates["classification"]
    assert classification.control("category").values == (
        "billing",
        "shipping",
        "account",
        "technical",
        "refund",
        "other",
    )
    assert classification.label_config.lstrip().startswith("<View>")
    sft = templates["sft_review"]
    assert dict(sft.fields) == {"instruction": "instruction", "response": "response"}
    assert sft.control("rating").max == 5
    assert sft.control("verdict").values == ("accept", "reject")
    assert sft.control("edited_response").type == "textarea"
    conv = templates["conversation_review"]
    assert conv.kinds == ("conversation",)
    assert conv.control("verdict").values == ("good", "bad")
    assert conv.control("note").to_name == "dialogue"


def test_contract_columns_are_canonical_columns_of_every_accepted_kind() -> None:
    for template in load_templates(REPO_LABELING).values():
        for kind in template.kinds:
            names = LEDGER_COLUMNS if kind == "ledger" else schema_for(kind).names
            check_columns(template, kind, names)  # does not raise
            assert set(template.fields.values()) <= set(names)


def test_label_studio_sdk_reads_the_same_controls_as_the_contract() -> None:
    sdk = pytest.importorskip("label_studio_sdk.label_interface")
    for template in load_templates(REPO_LABELING).values():
        interface = sdk.LabelInterface(template.label_config)
        got = {
            c.name: (c.to_name, c.tag.lower(), tuple(c.labels or ())) for c in interface.controls
        }
        want = {c.name: ([c.to_name], c.type, c.values) for c in template.controls}
        assert got == want
        assert {o.value for o in interface.objects} == {f"${f}" for f in template.fields}


def test_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        load_template("sentiment", REPO_LABELING)
    for name in NAMES:
        assert name in err.value.message


def test_broken_xml_is_a_config_error_naming_the_file(copy_dir: Path) -> None:
    _edit(copy_dir / "ner.xml", "</Labels>", "</Label>")
    with pytest.raises(ConfigError) as err:
        load_template("ner", copy_dir)
    assert "ner.xml" in err.value.message
    assert "not well-formed" in err.value.message
    load_template("classification", copy_dir)  # the others still load


def test_an_extra_choice_in_the_xml_is_a_drift_naming_both_files(copy_dir: Path) -> None:
    _edit(
        copy_dir / "classification.xml",
        '<Choice value="other"',
        '<Choice value="spam"/><Choice value="other"',
    )
    with pytest.raises(ConfigError) as err:
        load_template("classification", copy_dir)
    message = err.value.message
    assert "classification.xml" in message and "templates.toml" in message
    assert "'spam'" in message


def test_a_control_missing_from_the_contract_is_a_drift(copy_dir: Path) -> None:
    _edit(copy_dir / "templates.toml", 'name = "note"', 'name = "comment"')
    with pytest.raises(ConfigError) as err:
        load_template("conversation_review", copy_dir)
    assert "'note'" in err.value.message and "'comment'" in err.value.message


def test_a_renamed_data_field_is_a_drift(copy_dir: Path) -> None:
    _edit(copy_dir / "sft_review.xml", "$response", "$answer")
    with pytest.raises(ConfigError) as err:
        load_template("sft_review", copy_dir)
    assert "$answer" in err.value.message
    assert "'response'" in err.value.message


@pytest.mark.parametrize(
    ("file", "old", "new", "expect"),
    [
        ("sft_review.xml", 'maxRating="5"', 'maxRating="10"', "maxRating=10"),
        ("ner.xml", 'toName="text"', 'toName="body"', "toName='body'"),
        ("classification.xml", 'choice="single-radio"', 'choice="multiple"', "multiple"),
        ("conversation_review.xml", "<TextArea", "<Rating", "<Rating>"),
        ("ner.xml", "<Text ", '<TextArea name="label" toName="text"/><Text ', "share a name"),
    ],
)
def test_other_drifts_are_named(copy_dir: Path, file: str, old: str, new: str, expect: str) -> None:
    _edit(copy_dir / file, old, new)
    with pytest.raises(ConfigError) as err:
        load_template(file.removesuffix(".xml"), copy_dir)
    assert expect in err.value.message


def test_a_bad_contract_names_the_template_and_key(copy_dir: Path) -> None:
    _edit(
        copy_dir / "templates.toml",
        'kinds = ["text"]\nlabel_control',
        'kinds = ["images"]\nlabel_control',
    )
    with pytest.raises(ConfigError) as err:
        load_template("ner", copy_dir)
    assert "[classification]" in err.value.message and "kinds" in err.value.message


def test_unparseable_contract_and_missing_xml(copy_dir: Path) -> None:
    (copy_dir / "ner.xml").unlink()
    with pytest.raises(NotFoundError, match=r"ner\.xml"):
        load_template("ner", copy_dir)
    (copy_dir / "templates.toml").write_text("[ner\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_template("ner", copy_dir)


# --------------------------------------------------------------------------- where


def test_templates_dir_order(
    tmp_path: Path, copy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert templates_dir() == REPO_LABELING
    workspace = tmp_path
    assert templates_dir(workspace) == copy_dir  # <workspace>/labeling holds templates.toml
    assert templates_dir(tmp_path / "elsewhere") == REPO_LABELING
    monkeypatch.setenv(ENV_DIR, str(copy_dir))
    assert templates_dir() == copy_dir
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "missing"))
    with pytest.raises(NotFoundError, match=ENV_DIR):
        templates_dir()


def test_templates_dir_in_a_bundle_and_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offline, "__file__", str(tmp_path / "site" / "offline" / "__init__.py"))
    # install-offline.sh's layout: <prefix>/envs/toolkit and <prefix>/bundle/files/labeling
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix" / "envs" / "toolkit"))
    shipped = tmp_path / "prefix" / "bundle" / "files" / "labeling"
    with pytest.raises(NotFoundError) as err:
        templates_dir()
    assert str(shipped) in err.value.message
    assert err.value.fix is not None and ENV_DIR in err.value.fix
    shutil.copytree(REPO_LABELING, shipped)
    assert templates_dir() == shipped


# --------------------------------------------------------------------------- columns, tasks


def test_pushing_conversations_into_ner_is_refused_with_the_right_template() -> None:
    with pytest.raises(ConfigError) as err:
        check_columns(_t("ner"), "conversation", schema_for("conversation").names)
    assert "'ner'" in err.value.message and "conversation" in err.value.message
    assert err.value.fix is not None and "conversation_review" in err.value.fix


def test_a_missing_column_names_the_field_and_template() -> None:
    with pytest.raises(ConfigError) as err:
        check_columns(_t("sft_review"), "instruction", ["record_id", "instruction", "system"])
    assert "'response'" in err.value.message and "'sft_review'" in err.value.message
    with pytest.raises(ConfigError, match="'record_id'"):
        check_columns(_t("classification"), "text", ["text", "label"])


def _meta(**kw: Any) -> dict[str, Any]:
    base = {
        "record_id": "ab12",
        "dataset": "tickets",
        "source": "tickets.jsonl:7",
        "original": "{...}",
        "id": "T7",
        "cluster": "ab12",
        "meta": "{}",
    }
    return base | kw


def test_task_data_for_each_kind() -> None:
    text = task_data(_t("classification"), _meta(text="我的快递还没到", label=None))
    assert text == {
        "text": "我的快递还没到",
        "record_id": "ab12",
        "dataset": "tickets",
        "source": "tickets.jsonl:7",
        "id": "T7",
    }
    sft = task_data(
        _t("sft_review"), _meta(system="be brief", instruction="2+2?", response="4", id=None)
    )
    assert sft == {
        "instruction": "2+2?",
        "response": "4",
        "record_id": "ab12",
        "dataset": "tickets",
        "source": "tickets.jsonl:7",
    }
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    conv = task_data(_t("conversation_review"), _meta(messages=messages, label="other"))
    assert conv["messages"] == messages and conv["record_id"] == "ab12"
    assert conv["messages"] is not messages
    json.dumps(conv)


def test_task_data_refuses_rows_it_cannot_show() -> None:
    with pytest.raises(DataError) as err:
        task_data(_t("sft_review"), _meta(instruction="2+2?", response=None))
    assert "ab12" in err.value.message and "'response'" in err.value.message
    with pytest.raises(DataError, match="record_id"):
        task_data(_t("ner"), {"text": "x"})


# --------------------------------------------------------------------------- results


def _item(from_name: str, to_name: str, kind: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "r1",
        "from_name": from_name,
        "to_name": to_name,
        "type": kind,
        "value": value,
        "origin": "manual",
    }


def test_labels_from_result_classification() -> None:
    t = _t("classification")
    assert labels_from_result(
        t, [_item("category", "text", "choices", {"choices": ["billing"]})]
    ) == {"label": "billing"}
    assert labels_from_result(t, []) == {"label": None}


def test_labels_from_result_ner_sorts_spans_and_ignores_relations() -> None:
    result = [
        _item(
            "label",
            "text",
            "labels",
            {"start": 10, "end": 18, "text": "Shanghai", "labels": ["LOC"]},
        ),
        _item(
            "label", "text", "labels", {"start": 0, "end": 4, "text": "Emma", "labels": ["PERSON"]}
        ),
        {"type": "relation", "from_id": "a", "to_id": "b", "direction": "right"},
    ]
    assert labels_from_result(_t("ner"), result) == {
        "entities": [
            {"start": 0, "end": 4, "label": "PERSON", "text": "Emma"},
            {"start": 10, "end": 18, "label": "LOC", "text": "Shanghai"},
        ]
    }


def test_labels_from_result_sft_review() -> None:
    result = [
        _item("rating", "response", "rating", {"rating": 4}),
        _item("verdict", "response", "choices", {"choices": ["reject"]}),
        _item("edited_response", "response", "textarea", {"text": ["Four.", "2 + 2 = 4"]}),
    ]
    assert labels_from_result(_t("sft_review"), result) == {
        "rating": 4,
        "verdict": "reject",
        "edited_response": "Four.\n2 + 2 = 4",
    }
    blank = [_item("edited_response", "response", "textarea", {"text": ["  "]})]
    assert labels_from_result(_t("sft_review"), blank) == {
        "rating": None,
        "verdict": None,
        "edited_response": None,
    }


def test_labels_from_result_conversation_review() -> None:
    result = [
        _item("verdict", "dialogue", "choices", {"choices": ["bad"]}),
        _item("category", "dialogue", "choices", {"choices": ["refund"]}),
        _item("note", "dialogue", "textarea", {"text": ["agent never answers"]}),
    ]
    assert labels_from_result(_t("conversation_review"), result) == {
        "verdict": "bad",
        "category": "refund",
        "note": "agent never answers",
    }


@pytest.mark.parametrize(
    ("name", "item"),
    [
        (
            "classification",
            _item("category", "text", "choices", {"choices": ["billing", "refund"]}),
        ),
        ("sft_review", _item("rating", "response", "rating", {"rating": "four"})),
        ("ner", _item("label", "text", "labels", {"start": 0, "labels": ["ORG"]})),
        ("ner", {"from_name": "label", "value": None}),
    ],
)
def test_malformed_result_items_are_data_errors(name: str, item: dict[str, Any]) -> None:
    with pytest.raises(DataError, match="result item 0"):
        labels_from_result(_t(name), [item])


# --------------------------------------------------------------------------- keyword rules


def _predicted(prediction: dict[str, Any] | None) -> str | None:
    return None if prediction is None else prediction["result"][0]["value"]["choices"][0]


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("我的快递还没到", "shipping"),
        ("invoice is wrong", "billing"),
        ("The INVOICE is wrong and I was charged twice", "billing"),
        ("I forgot my password and cannot log in", "account"),
        ("登录时收不到验证码，无法使用", "account"),
        ("The app keeps restarting, error 0x80", "technical"),
        ("Ｔｈｅ ａｐｐ ｆｒｅｅｚｅｓ", "technical"),
        ("我要退款，东西坏了", "refund"),
        ("I want my money back", "refund"),
        ("包裹显示已配送但我没收到", "shipping"),
        ("payment refund", "billing"),  # one hit each: the earlier category wins
        ("周六客服几点上班？", None),
        ("Do you have a store in Berlin?", None),
    ],
)
def test_keyword_rules_label_bilingual_tickets(text: str, category: str | None) -> None:
    assert _predicted(keyword_prediction(_t("classification"), {"text": text})) == category


def test_keyword_prediction_shape_score_and_fallback() -> None:
    t = _t("classification")
    prediction = keyword_prediction(t, {"text": "invoice for the parcel, invoice again"})
    assert prediction == {
        "model_version": KEYWORD_MODEL,
        "score": round(2 / 3, 4),
        "result": [
            {
                "from_name": "category",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": ["billing"]},
            }
        ],
    }
    fallback = keyword_prediction(t, {"text": "hello"}, fallback="other")
    assert fallback is not None and _predicted(fallback) == "other" and fallback["score"] == 0.0
    assert labels_from_result(t, fallback["result"]) == {"label": "other"}


def test_keyword_prediction_reads_conversations_and_custom_rules() -> None:
    t = _t("conversation_review")
    row = {
        "messages": [
            {"role": "user", "content": "我的账号登录不了"},
            {"role": "assistant", "content": "请重置密码"},
        ]
    }
    prediction = keyword_prediction(t, row)
    assert prediction is not None and prediction["result"][0]["from_name"] == "category"
    assert _predicted(prediction) == "account"
    rules = keyword_rules({"refund": ["return"], "billing": ["bill"]})
    assert (
        _predicted(
            keyword_prediction(
                t, {"messages": [{"role": "user", "content": "bill and return"}]}, rules
            )
        )
        == "refund"
    )
    with pytest.raises(ConfigError, match="spam"):
        keyword_prediction(t, row, keyword_rules({"spam": ["win"]}))
    with pytest.raises(ConfigError, match="'ner'"):
        keyword_prediction(_t("ner"), {"text": "invoice"})


def test_keyword_rules_get_every_sample_ticket_right() -> None:
    t = _t("classification")
    tickets = [r for r in iter_tickets(600, seed=11) if isinstance(r.get("text"), str)]
    assert len(tickets) > 550
    wrong = [
        (r["category"], _predicted(keyword_prediction(t, r)))
        for r in tickets
        if _predicted(keyword_prediction(t, r))
        != (None if r["category"] == "other" else r["category"])
    ]
    assert wrong == []


def test_predictions_validate_in_the_label_studio_sdk() -> None:
    sdk = pytest.importorskip("label_studio_sdk.label_interface")
    t = _t("classification")
    interface = sdk.LabelInterface(t.label_config)
    for text in ("invoice", "快递", "密码"):
        prediction = keyword_prediction(t, {"text": text})
        assert interface.validate_prediction(prediction, return_errors=True) == []


# --------------------------------------------------------------------------- predictions file


def test_predictions_from_file(tmp_path: Path) -> None:
    t = _t("classification")
    path = tmp_path / "preds.jsonl"
    result = [
        {
            "from_name": "category",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["refund"]},
        }
    ]
    lines = [
        {"record_id": "a1", "label": "billing", "score": 0.9},
        {},
        {"record_id": "b2", "result": result, "model_version": "bert-3"},
    ]
    path.write_text("\n".join("" if not x else json.dumps(x) for x in lines) + "\n")
    assert predictions_from_file(path, t) == {
        "a1": label_prediction(t, "billing", score=0.9, model_version="file:preds.jsonl"),
        "b2": {"model_version": "bert-3", "result": result},
    }


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        ("{not json", "not a JSON line"),
        ('{"record_id": "c", "label": "spam"}', "'spam'"),
        ('{"record_id": "c"}', "exactly one of"),
        ('{"label": "billing"}', "record_id"),
        ('{"record_id": "c", "label": "billing", "score": "high"}', "score"),
        ('{"record_id": "c", "result": [{"from_name": "x", "value": {}}]}', "'x'"),
        ('{"record_id": "a1", "label": "refund"}', "already on line 1"),
    ],
)
def test_bad_prediction_lines_name_the_line(tmp_path: Path, line: str, expect: str) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_text('{"record_id": "a1", "label": "billing"}\n\n' + line + "\n")
    with pytest.raises(ConfigError) as err:
        predictions_from_file(path, _t("classification"))
    assert f"{path}:3:" in err.value.message and expect in err.value.message


def test_predictions_file_missing_or_for_a_template_without_labels(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        predictions_from_file(tmp_path / "none.jsonl", _t("classification"))
    path = tmp_path / "p.jsonl"
    path.write_text('{"record_id": "a", "label": "PERSON"}\n')
    with pytest.raises(ConfigError, match="no label control"):
        predictions_from_file(path, _t("ner"))
