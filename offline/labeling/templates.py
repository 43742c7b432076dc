"""Label Studio label-config templates, their field contract, and the task data they label.

A template is two files in the labeling directory (:func:`templates_dir`): ``<name>.xml``, the
label config Label Studio renders, and its ``[<name>]`` table in ``templates.toml``, which says
which dataset kinds it accepts, which canonical column fills each ``$field`` of the XML, and the
controls (name, toName, type, allowed values) an annotation comes back with. Every load checks the
two against each other, so an edit to one that the other does not follow is an error at once,
not a project on the server whose annotations nothing can read.

Nothing here talks to a server: :func:`check_columns` refuses a dataset before anything is created,
:func:`task_data` builds one task's ``data`` and :func:`labels_from_result` flattens one pulled
annotation or prediction ``result``.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from offline import airgap
from offline.config import Strict, read_toml, validate
from offline.errors import ConfigError, DataError, NotFoundError

__all__ = [
    "CONTRACT_FILE",
    "ENV_DIR",
    "META_FIELDS",
    "Control",
    "Template",
    "check_columns",
    "labels_from_result",
    "load_template",
    "load_templates",
    "task_data",
    "template_names",
    "templates_dir",
]

CONTRACT_FILE = "templates.toml"
ENV_DIR = "DEEPSEEK_OFFLINE_LABELING_DIR"
# Id metadata every task carries besides the template's fields; record_id de-duplicates re-pushes.
META_FIELDS = ("record_id", "dataset", "source", "id")
DatasetKind = Literal["text", "instruction", "conversation", "ledger"]
ControlType = Literal["choices", "labels", "rating", "textarea"]
# The XML tag of each control type, and the child tag that carries its allowed values.
_TAGS: dict[str, str] = {
    "choices": "Choices",
    "labels": "Labels",
    "rating": "Rating",
    "textarea": "TextArea",
}
_VALUE_TAGS = {"choices": "Choice", "labels": "Label"}
_FIELD_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_DEFAULT_MAX_RATING = 5  # Label Studio's own default for maxRating


# --------------------------------------------------------------------------- the contract


class _ControlSpec(Strict):
    name: str = Field(min_length=1)
    to_name: str = Field(min_length=1)
    type: ControlType
    field: str = Field(min_length=1)
    values: list[str] | None = None
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _by_type(self) -> _ControlSpec:
        if self.type in _VALUE_TAGS and not self.values:
            raise ValueError(f"control {self.name!r} ({self.type}) needs a non-empty `values` list")
        if self.type not in _VALUE_TAGS and self.values is not None:
            raise ValueError(f"control {self.name!r} ({self.type}) takes no `values`")
        if self.type == "rating" and self.max is None:
            raise ValueError(f"control {self.name!r} (rating) needs `max`")
        if self.type != "rating" and self.max is not None:
            raise ValueError(f"control {self.name!r} ({self.type}) takes no `max`")
        if self.values is not None and len(set(self.values)) != len(self.values):
            raise ValueError(f"control {self.name!r} lists a value twice")
        return self


class _TemplateSpec(Strict):
    description: str = ""
    file: str | None = None
    kinds: list[DatasetKind] = Field(min_length=1)
    label_control: str | None = None
    fields: dict[str, str] = Field(min_length=1)
    controls: list[_ControlSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> _TemplateSpec:
        names = [c.name for c in self.controls]
        outputs = [c.field for c in self.controls]
        if len(set(names)) != len(names) or len(set(outputs)) != len(outputs):
            raise ValueError("two controls share a `name` or a `field`")
        clash = sorted(set(self.fields) & set(META_FIELDS))
        if clash:
            raise ValueError(f"fields {clash} clash with the id metadata every task carries")
        if self.label_control is not None:
            by_name = {c.name: c for c in self.controls}
            control = by_name.get(self.label_control)
            if control is None or control.type != "choices":
                raise ValueError(f"label_control {self.label_control!r} is not a choices control")
        if self.file is not None and Path(self.file).name != self.file:
            raise ValueError(f"file {self.file!r} must be a plain file name in this directory")
        return self


@dataclass(frozen=True)
class Control:
    """One control tag: Label Studio's ``from_name``/``to_name``/``type`` and what it may hold.

    Attributes:
        name: The tag's ``name``, a result item's ``from_name``.
        to_name: The object tag it labels, a result item's ``to_name``.
        type: ``choices``, ``labels``, ``rating`` or ``textarea`` (a result item's ``type``).
        field: The key :func:`labels_from_result` flattens it into.
        values: The allowed choices or labels, in display order; empty for rating and textarea.
        max: The highest rating, for a rating control.
    """

    name: str
    to_name: str
    type: str
    field: str
    values: tuple[str, ...] = ()
    max: int | None = None


@dataclass(frozen=True)
class Template:
    """A label config checked against its contract.

    Attributes:
        name: The template's name (its table in ``templates.toml``).
        label_config: The XML text, as sent to Label Studio.
        kinds: The cleaned dataset kinds it accepts.
        fields: Task data field -> the canonical column it is read from.
        controls: Its control tags, in contract order.
        label_control: The single-choice control a plain label fills in (dataset ``label``
            column, keyword rules, a predictions file's ``label``), when it has one.
        description: One line saying what it labels.
        path: The XML file it was read from.
    """

    name: str
    label_config: str
    kinds: tuple[str, ...]
    fields: Mapping[str, str]
    controls: tuple[Control, ...]
    label_control: str | None
    description: str
    path: Path

    def control(self, name: str) -> Control:
        """The control called ``name``; ``KeyError`` when there is none."""
        for control in self.controls:
            if control.name == name:
                return control
        raise KeyError(name)


# --------------------------------------------------------------------------- where they live


def _candidates(workspace: Path | None) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    if workspace is not None:
        out.append(("the workspace", Path(workspace) / "labeling"))
    # the override ($DEEPSEEK_OFFLINE_LABELING_DIR) is used as is: see templates_dir
    return out + airgap.shipped_places("labeling", with_override=False)


def templates_dir(workspace: Path | None = None) -> Path:
    """Where the labeling templates are.

    Looks at ``$DEEPSEEK_OFFLINE_LABELING_DIR`` (used as is when set), then
    ``<workspace>/labeling``, the source checkout's ``labeling/``, the bundle's
    ``files/labeling`` and ``<prefix>/share/deepseek-offline/labeling``; the first holding
    ``templates.toml`` wins.

    Args:
        workspace: A data workspace whose own ``labeling/`` overrides the shipped templates.

    Raises:
        NotFoundError: None of those places holds ``templates.toml``; the message lists them.
    """
    override = os.environ.get(ENV_DIR)
    if override:
        directory = Path(override)
        if not (directory / CONTRACT_FILE).is_file():
            raise NotFoundError(
                f"${ENV_DIR}={override}: no {CONTRACT_FILE} there",
                fix=f"point ${ENV_DIR} at a directory holding {CONTRACT_FILE} and its XML files,"
                " or unset it to use the shipped templates",
            )
        return directory
    looked = _candidates(workspace)
    for _, directory in looked:
        if (directory / CONTRACT_FILE).is_file():
            return directory
    places = "\n".join(f"  - {directory} ({why})" for why, directory in looked)
    raise NotFoundError(
        f"labeling templates not found; looked for {CONTRACT_FILE} in:\n{places}",
        fix=f"set ${ENV_DIR} to the labeling/ directory of the source tree or bundle",
    )


# --------------------------------------------------------------------------- loading


def _read_contract(directory: Path) -> dict[str, _TemplateSpec]:
    path = directory / CONTRACT_FILE
    if not path.is_file():
        raise NotFoundError(
            f"{path} does not exist", fix=f"set ${ENV_DIR} to a directory holding it"
        )
    raw = read_toml(path, "labeling contract")
    fix = f"see the key list at the top of {CONTRACT_FILE}"
    return {
        name: validate(_TemplateSpec, table, f"{path} [{name}]", fix=fix)
        for name, table in raw.items()
    }


def template_names(directory: Path | None = None) -> list[str]:
    """The template names in ``directory`` (default :func:`templates_dir`), in file order."""
    return list(_read_contract(directory or templates_dir()))


def load_templates(directory: Path | None = None) -> dict[str, Template]:
    """Every template in ``directory`` (default :func:`templates_dir`), each checked as by
    :func:`load_template`."""
    directory = directory or templates_dir()
    specs = _read_contract(directory)
    return {name: _build(name, spec, directory) for name, spec in specs.items()}


def load_template(name: str, directory: Path | None = None) -> Template:
    """Read template ``name`` and check its XML against its contract.

    Args:
        name: The template's table in ``templates.toml`` (e.g. ``classification``).
        directory: Where the templates are; default :func:`templates_dir`.

    Raises:
        ConfigError: Unknown ``name`` (the message lists the known ones), a contract or XML that
            does not parse, or an XML and contract that disagree (every disagreement is listed).
        NotFoundError: The templates directory or the template's XML file is missing.
    """
    directory = directory or templates_dir()
    specs = _read_contract(directory)
    if name not in specs:
        raise ConfigError(
            f"unknown labeling template {name!r}; known: {', '.join(specs) or '(none)'}",
            fix=f"choose one of them, or add [{name}] and {name}.xml to {directory}",
        )
    return _build(name, specs[name], directory)


def _build(name: str, spec: _TemplateSpec, directory: Path) -> Template:
    path = directory / (spec.file or f"{name}.xml")
    try:
        xml = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(
            f"{path}: the label config of template {name!r} is missing",
            fix=f"restore it, or remove [{name}] from {directory / CONTRACT_FILE}",
        ) from None
    controls = tuple(
        Control(c.name, c.to_name, c.type, c.field, tuple(c.values or ()), c.max)
        for c in spec.controls
    )
    template = Template(
        name=name,
        label_config=xml,
        kinds=tuple(spec.kinds),
        fields=dict(spec.fields),
        controls=controls,
        label_control=spec.label_control,
        description=spec.description,
        path=path,
    )
    _check_xml(template, directory / CONTRACT_FILE)
    return template


# --------------------------------------------------------------------------- XML vs contract


def _parse(template: Template) -> ET.Element:
    try:
        root = ET.fromstring(template.label_config)
    except ET.ParseError as err:
        raise ConfigError(
            f"{template.path}: not well-formed XML: {err}",
            fix="fix the XML (the line and column are given above)",
        ) from None
    if root.tag != "View":
        raise ConfigError(
            f"{template.path}: the root tag is <{root.tag}>, Label Studio needs <View>",
            fix="wrap the config in <View>...</View>",
        )
    return root


def _check_xml(template: Template, contract: Path) -> None:
    root = _parse(template)
    problems = _field_problems(template, root) + _control_problems(template, root)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"template {template.name!r}: {template.path} and {contract} [{template.name}]"
            f" disagree:\n{listing}",
            fix="edit one of the two files so that they say the same",
        )


def _field_problems(template: Template, root: ET.Element) -> list[str]:
    used = {m for el in root.iter() for v in el.attrib.values() for m in _FIELD_REF.findall(v)}
    wanted = set(template.fields)
    unknown = [
        f"the XML uses ${f} but the contract has no field {f!r}" for f in sorted(used - wanted)
    ]
    unused = [
        f"the contract field {f!r} is not used as ${f} in the XML" for f in sorted(wanted - used)
    ]
    return unknown + unused


def _control_problems(template: Template, root: ET.Element) -> list[str]:
    # Label Studio tells them apart the same way: a control tag has a toName, an object tag
    # (what is labeled) a name and a value.
    elements = [el for el in root.iter() if "toName" in el.attrib]
    tags = {el.get("name"): el for el in elements}
    objects = {el.get("name") for el in root.iter() if "name" in el.attrib and "value" in el.attrib}
    contracted = {c.name: c for c in template.controls}
    problems = [
        f"control <{tags[n].tag} name={n!r}> is in the XML but not the contract"
        for n in tags
        if n not in contracted
    ]
    if len(tags) != len(elements):
        problems.append("two control tags in the XML share a name")
    for name, control in contracted.items():
        element = tags.get(name)
        if element is None:
            problems.append(f"the contract control {name!r} is not in the XML")
        else:
            problems.extend(_one_control(control, element, objects))
    return problems


def _one_control(control: Control, el: ET.Element, objects: set[str | None]) -> list[str]:
    where = f"control {control.name!r}"
    problems = []
    if el.tag != _TAGS[control.type]:
        problems.append(f"{where} is <{el.tag}> in the XML but {control.type} in the contract")
    if el.get("toName") != control.to_name:
        problems.append(f"{where} has toName={el.get('toName')!r}, contract {control.to_name!r}")
    if control.to_name not in objects:
        problems.append(f"{where} labels {control.to_name!r}, which no object tag in the XML is")
    if el.get("choice") == "multiple":
        problems.append(f"{where} allows multiple choices; templates here are single-choice")
    if control.type in _VALUE_TAGS:
        problems.extend(_value_problems(control, el))
    if control.type == "rating":
        got = el.get("maxRating", str(_DEFAULT_MAX_RATING))
        if got != str(control.max):
            problems.append(f"{where} has maxRating={got}, contract max={control.max}")
    return problems


def _value_problems(control: Control, el: ET.Element) -> list[str]:
    # A result item stores a choice's alias when it has one, else its value.
    found = [c.get("alias") or c.get("value") or "" for c in el.iter(_VALUE_TAGS[control.type])]
    if found == list(control.values):
        return []
    extra = [v for v in found if v not in control.values]
    missing = [v for v in control.values if v not in found]
    where = f"control {control.name!r} values"
    if not extra and not missing:
        return [
            f"{where} are in another order or repeated: XML {found}, contract"
            f" {list(control.values)}"
        ]
    sides = [(extra, "only in the XML"), (missing, "only in the contract")]
    return [f"{where} {side}: {', '.join(map(repr, vs))}" for vs, side in sides if vs]


# --------------------------------------------------------------------------- tasks


def _kinds_for(kind: str, directory: Path) -> list[str]:
    try:
        specs = _read_contract(directory)
    except (ConfigError, NotFoundError):
        return []
    return [name for name, spec in specs.items() if kind in spec.kinds]


def check_columns(template: Template, kind: str, columns: Iterable[str]) -> None:
    """Refuse a dataset the template cannot label, before anything is created on a server.

    Args:
        template: The template the dataset would be pushed into.
        kind: The dataset's kind (``text``, ``instruction``, ``conversation``, ...).
        columns: The columns of its cleaned rows.

    Raises:
        ConfigError: The template does not accept ``kind``, or a column one of its fields (or
            ``record_id``) is read from is missing; the message names the field and the template.
    """
    if kind not in template.kinds:
        fits = _kinds_for(kind, template.path.parent)
        hint = f"use {' or '.join(fits)}" if fits else "no template here labels that kind"
        raise ConfigError(
            f"template {template.name!r} labels {'/'.join(template.kinds)} datasets;"
            f" this dataset is {kind}",
            fix=f"{hint} (kinds in {template.path.parent / CONTRACT_FILE})",
        )
    have = set(columns)
    needed = [("record_id", "record_id"), *template.fields.items()]
    for field, column in needed:
        if column not in have:
            raise ConfigError(
                f"template {template.name!r} needs task field {field!r} from column {column!r},"
                f" which this {kind} dataset lacks (it has: {', '.join(sorted(have))})",
                fix="push a cleaned dataset (`offline data clean` writes the canonical columns)",
            )


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def task_data(template: Template, row: Mapping[str, Any]) -> dict[str, Any]:
    """The Label Studio task ``data`` for one canonical cleaned row.

    Holds the template's fields (read from their columns) and the row's id metadata:
    ``record_id`` always (how a re-push is de-duplicated), ``dataset``, ``source`` and ``id`` when
    the row has them.

    Raises:
        DataError: The row has no ``record_id``, or a field's column is missing or empty.
    """
    record_id = row.get("record_id")
    if not record_id:
        raise DataError(
            f"a row for template {template.name!r} has no record_id: {dict(row)!r:.200}"
        )
    data: dict[str, Any] = {}
    for field, column in template.fields.items():
        value = row.get(column)
        if value is None or value == "" or value == []:
            where = f"record {record_id}" + (f" ({row['source']})" if row.get("source") else "")
            raise DataError(
                f"{where}: column {column!r} is empty; template {template.name!r} shows it as"
                f" ${field}",
                fix="drop or fix that row before pushing (the cleaning chain can reject it)",
            )
        data[field] = _plain(value)
    for key in META_FIELDS:
        if row.get(key) is not None:
            data[key] = row[key]
    return data


# --------------------------------------------------------------------------- results


def _empty(control: Control) -> Any:
    return [] if control.type == "labels" else None


def labels_from_result(template: Template, result: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Flatten one annotation's or prediction's ``result`` into one key per control.

    A choices control gives its choice (``str``), a rating its ``int``, a text area its text
    (lines joined by newlines; ``None`` when blank), a labels control a list of entities
    ``{"start", "end", "label", "text"}`` sorted by position. A control with nothing in the result
    gives ``None`` (labels: ``[]``). Items of other tags (relations, controls the template does
    not have) are ignored.

    Examples:
        classification: ``{"label": "billing"}``; ner: ``{"entities": [...]}``;
        sft_review: ``{"rating": 4, "verdict": "accept", "edited_response": None}``.

    Raises:
        DataError: An item of one of the template's controls is malformed (no ``value``, several
            choices in a single-choice control, a rating that is not a number, bad offsets).
    """
    by_name = {c.name: c for c in template.controls}
    out: dict[str, Any] = {c.field: _empty(c) for c in template.controls}
    for index, item in enumerate(result):
        control = by_name.get(item.get("from_name", "")) if isinstance(item, Mapping) else None
        if control is None:
            continue
        value = item.get("value")
        if not isinstance(value, Mapping):
            raise _bad_item(template, index, "its `value` is not an object")
        if control.type == "labels":
            out[control.field].extend(_entities(template, index, value))
        else:
            out[control.field] = _scalar(template, index, control, value)
    for control in template.controls:
        if control.type == "labels":
            out[control.field].sort(key=lambda e: (e["start"], e["end"], e["label"]))
    return out


def _bad_item(template: Template, index: int, why: str) -> DataError:
    return DataError(
        f"template {template.name!r}: result item {index}: {why}",
        fix="check the project's label config on the server still matches the template",
    )


def _scalar(template: Template, index: int, control: Control, value: Mapping[str, Any]) -> Any:
    if control.type == "choices":
        choices = value.get("choices") or []
        if not isinstance(choices, list) or len(choices) > 1:
            raise _bad_item(template, index, f"{control.name!r} holds {choices!r}, not one choice")
        return str(choices[0]) if choices else None
    if control.type == "rating":
        rating = value.get("rating")
        if rating is None:
            return None
        if isinstance(rating, bool) or not isinstance(rating, int | float):
            raise _bad_item(template, index, f"rating {rating!r} is not a number")
        return int(rating)
    text = value.get("text")
    joined = "\n".join(str(t) for t in text) if isinstance(text, list) else text
    return joined if isinstance(joined, str) and joined.strip() else None


def _entities(template: Template, index: int, value: Mapping[str, Any]) -> list[dict[str, Any]]:
    start, end = _offset(value.get("start")), _offset(value.get("end"))
    labels = value.get("labels")
    if start is None or end is None or not isinstance(labels, list):
        raise _bad_item(template, index, "a span needs integer start/end and a labels list")
    text = value.get("text")
    return [{"start": start, "end": end, "label": str(lb), "text": text} for lb in labels]


def _offset(value: Any) -> int | None:
    # Offsets are ints, but JSON round trips through some clients turn them into 12.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)
