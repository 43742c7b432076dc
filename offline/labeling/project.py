"""Push cleaned rows to a Label Studio project and pull the annotations back as Parquet.

A project is named after its template (or ``--project``) and remembered in
``.labelstudio/projects.json``. Every task carries the row's ``record_id``; a push first lists
the record ids the project already holds and imports only the others, so pushing again, or
re-running a push that was interrupted half way, never duplicates a task. A pull writes one
Parquet row per annotation and the agreement figures to ``metrics/label.json``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from offline.data.layout import LAYOUT
from offline.errors import ConfigError, NetworkError, NotFoundError
from offline.fsutil import atomic_write_text, replace_dir
from offline.labeling import agreement, rules, templates
from offline.labeling.server import require_running, state_dir, status

IMPORT_CHUNK = 500
LABELED_DIR = Path(LAYOUT.labeled)
METRICS = Path(LAYOUT.metric("label"))


@dataclass
class PushReport:
    project: str
    project_id: int
    url: str
    rows: int
    already: int
    imported: int
    predictions: int


@dataclass
class PullReport:
    projects: dict[str, int] = field(default_factory=dict)  # title -> annotations written
    metrics: dict[str, Any] = field(default_factory=dict)
    kept: str | None = None  # why the last snapshot was kept instead of a fresh pull


def client(workspace: Path) -> Any:
    """An SDK client for the workspace's running server (NetworkError with the start command).

    Typed ``Any``: the SDK's generated models are looser than its annotations say.
    """
    from label_studio_sdk.client import LabelStudio
    from label_studio_sdk.core.api_error import ApiError

    url, secret = require_running(workspace)
    factory: Any = LabelStudio
    ls = factory(base_url=url, api_key=secret.token)
    try:
        ls.users.whoami()
    except ApiError as exc:
        if exc.status_code in (401, 403):
            raise ConfigError(
                f"Label Studio at {url} refused the API token"
                f" in {state_dir(workspace) / 'secret.json'}",
                fix="put the admin's token (Account & Settings in the Label Studio page) under"
                " `token` in that file",
            ) from None
        raise NetworkError(
            f"Label Studio at {url} answered {exc.status_code}: {exc.body}"
        ) from None
    return ls


def _registry_path(workspace: Path) -> Path:
    return state_dir(workspace) / "projects.json"


def _registry(workspace: Path) -> dict[str, dict[str, Any]]:
    path = _registry_path(workspace)
    if not path.is_file():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _remember(workspace: Path, title: str, project_id: int, template: str) -> None:
    reg = _registry(workspace)
    reg[title] = {"id": project_id, "template": template}
    atomic_write_text(_registry_path(workspace), json.dumps(reg, indent=2, sort_keys=True) + "\n")


def read_rows(source: Path, dataset: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The cleaned rows under ``source`` (a shard or a directory of ``<dataset>-*.parquet``)."""
    from offline.data.records import kind_of

    if source.is_file():
        shards = [source]
    else:
        pattern = f"{dataset}-*.parquet" if dataset else "*.parquet"
        shards = sorted(source.glob(pattern))
    if not shards:
        raise NotFoundError(
            f"no Parquet shards under {source}" + (f" for dataset {dataset!r}" if dataset else ""),
            fix="run `offline data clean` (or `dvc repro`) first, or pass --input/--dataset",
        )
    tables = [pq.read_table(p) for p in shards]
    kinds = {kind_of(t.to_batches()[0]) if t.num_rows else None for t in tables} - {None}
    if len(kinds) > 1:
        raise ConfigError(
            f"{source} mixes datasets of kinds {sorted(k for k in kinds if k)}",
            fix="choose one with --dataset NAME",
        )
    kind = kinds.pop() if kinds else "text"
    rows: list[dict[str, Any]] = []
    for table in tables:
        rows.extend(table.to_pylist())
    return str(kind), rows


def _find_project(ls: Any, title: str) -> Any | None:
    for project in ls.projects.list():
        if project.title == title:
            return project
    return None


def _existing_record_ids(ls: Any, project_id: int) -> set[str]:
    ids = set()
    for task in ls.tasks.list(project=project_id, fields="all", page_size=1000):
        rid = (task.data or {}).get("record_id")
        if rid:
            ids.add(str(rid))
    return ids


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def push(
    workspace: Path,
    template_name: str,
    source: Path,
    *,
    dataset: str | None = None,
    project: str | None = None,
    predictions_file: Path | None = None,
    keyword_rules: bool = False,
) -> PushReport:
    """Create or update the project and import the rows it does not hold yet.

    Raises:
        ConfigError: the template's fields do not match the data (before anything is created).
        NetworkError: the server is not running (the error shows the start command).
    """
    template = templates.load_template(template_name, templates.templates_dir(workspace))
    kind, rows = read_rows(source, dataset)
    columns = rows[0].keys() if rows else []
    templates.check_columns(template, kind, columns)
    by_file = rules.predictions_from_file(predictions_file, template) if predictions_file else {}
    ls = client(workspace)
    title = project or template_name
    project_id = _open_project(workspace, ls, title, template)

    def make_task(row: dict[str, Any]) -> dict[str, Any]:
        task: dict[str, Any] = {"data": templates.task_data(template, row)}
        prediction = by_file.get(str(row["record_id"]))
        if prediction is None and keyword_rules:
            prediction = rules.keyword_prediction(template, row)
        if prediction is not None:
            task["predictions"] = [prediction]
        return task

    return _import_new(workspace, ls, title, project_id, rows, make_task)


def _open_project(workspace: Path, ls: Any, title: str, template: templates.Template) -> int:
    """The id of the project titled ``title``, created (or its label config brought up to
    date) from ``template``, and remembered for ``pull``."""
    found = _find_project(ls, title)
    if found is None:
        found = ls.projects.create(title=title, label_config=template.label_config)
    elif (found.label_config or "").strip() != template.label_config.strip():
        ls.projects.update(id=found.id, label_config=template.label_config)
    _remember(workspace, title, int(found.id), template.name)
    return int(found.id)


def _import_new(
    workspace: Path,
    ls: Any,
    title: str,
    project_id: int,
    rows: list[dict[str, Any]],
    make_task: Callable[[dict[str, Any]], dict[str, Any]],
) -> PushReport:
    """Import the rows whose ``record_id`` the project does not hold yet, in chunks."""
    have = _existing_record_ids(ls, project_id)
    tasks = []
    for row in rows:
        rid = str(row["record_id"])
        if rid not in have:
            tasks.append(make_task(row))
            have.add(rid)
    for chunk in _chunks(tasks, IMPORT_CHUNK):
        ls.projects.import_tasks(id=project_id, request=chunk)
    url, _ = require_running(workspace)
    predicted = sum(1 for t in tasks if "predictions" in t)
    return PushReport(
        title,
        project_id,
        f"{url}/projects/{project_id}",
        len(rows),
        len(rows) - len(tasks),
        len(tasks),
        predicted,
    )


def _users(ls: Any) -> dict[int, str]:
    return {int(u.id): str(u.email or u.username) for u in ls.users.list()}


def _annotation_rows(
    template: templates.Template, task: Any, users: dict[int, str]
) -> Iterator[dict[str, Any]]:
    data = task.data or {}
    for ann in task.annotations or []:
        ann = ann if isinstance(ann, dict) else ann.dict()
        if ann.get("was_cancelled"):
            continue
        labels = templates.labels_from_result(template, ann.get("result") or [])
        who = ann.get("completed_by")
        who_id = who.get("id") if isinstance(who, dict) else who
        yield {
            "task_id": int(task.id),
            "annotation_id": int(ann["id"]),
            "record_id": data.get("record_id"),
            "dataset": data.get("dataset"),
            "text": data.get("text"),
            "data": json.dumps(data, ensure_ascii=False, sort_keys=True),
            "labels": json.dumps(labels, ensure_ascii=False, sort_keys=True),
            **{k: v for k, v in labels.items() if isinstance(v, str | int | float) or v is None},
            "annotator": users.get(int(who_id), str(who_id)) if who_id is not None else None,
            "created": str(ann.get("created_at")),
            "lead_time": ann.get("lead_time"),
            # made from a prediction (accept-predictions), not labelled by a person
            "from_prediction": ann.get("parent_prediction") is not None,
        }


def _keep_last(workspace: Path, out: Path, why: str) -> PullReport:
    """The snapshot already in ``out`` stays; ``metrics/label.json`` says since when and why."""
    metrics_path = workspace / METRICS
    try:
        metrics: dict[str, Any] = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        metrics = {}
    first = metrics.get("kept_last", {}).get("since")  # kept again: the snapshot's age stays
    written = max((p.stat().st_mtime for p in out.glob("*.parquet")), default=0.0)
    since = first or datetime.datetime.fromtimestamp(written, datetime.UTC).isoformat()
    metrics["kept_last"] = {"since": since, "reason": why}
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    projects = {p.stem: pq.read_metadata(p).num_rows for p in sorted(out.glob("*.parquet"))}
    return PullReport(projects, metrics, kept=why)


def pull(workspace: Path, out: Path | None = None, keep_last: bool = False) -> PullReport:
    """Write ``data/labeled/<project>.parquet`` per pushed project and ``metrics/label.json``.

    With ``keep_last``, a snapshot already in ``out`` is kept (and said to be kept) when Label
    Studio cannot be asked: its server is not running, or this checkout has no pushed project
    (a fresh clone whose ``dvc pull`` brought the labels). Without one, as without the flag.
    """
    reg = _registry(workspace)
    out = out or workspace / LABELED_DIR
    has_snapshot = out.is_dir() and any(out.glob("*.parquet"))
    if keep_last and has_snapshot:
        if not reg:
            return _keep_last(workspace, out, "no project was pushed from this checkout")
        current = status(workspace)
        if not current.running:
            return _keep_last(workspace, out, f"Label Studio is not running ({current.detail})")
    if not reg:
        # Nothing pushed yet: an empty snapshot, so the pipeline runs before labeling starts.
        out.mkdir(parents=True, exist_ok=True)
        (workspace / METRICS.parent).mkdir(parents=True, exist_ok=True)
        atomic_write_text(workspace / METRICS, "{}\n")
        return PullReport()
    ls = client(workspace)
    users = _users(ls)
    tmp = out.with_name(f".{out.name}.tmp")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    report = PullReport()
    for title, info in sorted(reg.items()):
        template = templates.load_template(
            str(info["template"]), templates.templates_dir(workspace)
        )
        try:
            tasks = list(ls.tasks.list(project=int(info["id"]), fields="all", page_size=1000))
        except Exception as exc:  # the SDK raises its own ApiError for a deleted project
            raise NetworkError(f"cannot list the tasks of project {title!r}: {exc}") from None
        rows = [r for t in tasks for r in _annotation_rows(template, t, users)]
        table = (
            pa.Table.from_pylist(rows) if rows else pa.table({"task_id": pa.array([], pa.int64())})
        )
        pq.write_table(table, tmp / f"{title}.parquet", compression="zstd")
        report.projects[title] = len(rows)
        if template.name == REVIEW_TEMPLATE:
            report.metrics.setdefault("cleaning_precision", {}).update(step_precision(rows))
        report.metrics[title] = {
            "tasks": len(tasks),
            "annotations": len(rows),
            "annotated_tasks": len({r["task_id"] for r in rows}),
            # for a person to review: annotated only with accepted predictions
            "from_predictions_only": len(
                {r["task_id"] for r in rows}
                - {r["task_id"] for r in rows if not r["from_prediction"]}
            ),
            "agreement": agreement.agreement(
                template, [{"id": t.id, "annotations": t.annotations or []} for t in tasks]
            ),
        }
    replace_dir(tmp, out)
    (workspace / METRICS.parent).mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        workspace / METRICS, json.dumps(report.metrics, indent=2, ensure_ascii=False) + "\n"
    )
    return report


def accept_predictions(workspace: Path, project: str | None = None) -> dict[str, int]:
    """Turn each unannotated task's prediction into an annotation by the admin.

    One Label Studio data-manager action per project (``predictions_to_annotations``) over the
    tasks that have exactly one prediction and no annotation, so the whole project takes one
    request; a task with several predictions gets its first, one request each. Tasks a person
    has annotated are never touched. The annotations keep a link to their prediction, which
    ``pull`` reports as ``from_prediction``.

    For demos and bootstrapping only: the labels are the model's or the rules', not a person's.
    """
    reg = _registry(workspace)
    titles = [project] if project else sorted(reg)
    missing = [t for t in titles if t not in reg]
    if missing:
        raise NotFoundError(
            f"no pushed project named {missing[0]!r}", fix="see `offline label push`"
        )
    ls = client(workspace)
    return {title: _accept(ls, int(reg[title]["id"])) for title in titles}


def _accept(ls: Any, project_id: int) -> int:
    single: list[Any] = []
    several: list[Any] = []
    for task in ls.tasks.list(project=project_id, fields="all", page_size=1000):
        preds = task.predictions or []
        if task.annotations or not preds:
            continue
        (single if len(preds) == 1 else several).append(task)
    if single:
        ls.actions.create(
            id="predictions_to_annotations",
            project=project_id,
            selected_items={"all": False, "included": [int(t.id) for t in single]},
        )
    for task in several:
        first = task.predictions[0]
        first = first if isinstance(first, dict) else first.dict()
        ls.annotations.create(
            id=int(task.id),
            result=first.get("result") or [],
            lead_time=0.0,
            parent_prediction=first.get("id"),
        )
    return len(single) + len(several)


REVIEW_TEMPLATE = "cleaning_review"
KEPT = "kept"


def _order_key(seed: int, *parts: object) -> str:
    import hashlib

    return hashlib.blake2b(f"{seed}\x00{parts}".encode(), digest_size=8).hexdigest()


def review_rows(workspace: Path, per_step: int, seed: int = 0) -> list[dict[str, Any]]:
    """A stratified sample of cleaning decisions: ``per_step`` rejected rows of every step from
    the ledger, and ``per_step`` kept rows of every dataset; the same seed gives the same rows."""
    from offline.data.clean import CLEAN_DIR, REJECTED_DIR
    from offline.data.records import joined_text

    ledger_files = sorted((workspace / REJECTED_DIR).glob("*.parquet"))
    if not ledger_files:
        raise NotFoundError(
            f"no ledger under {workspace / REJECTED_DIR}", fix="run `offline data clean` first"
        )
    picked: list[dict[str, Any]] = []
    ledger = pa.concat_tables([pq.read_table(p) for p in ledger_files]).to_pylist()
    by_step: dict[str, list[dict[str, Any]]] = {}
    for row in ledger:
        by_step.setdefault(str(row["step"]), []).append(row)
    for step, rows in sorted(by_step.items()):
        rows.sort(key=lambda r: _order_key(seed, r["dataset"], r["source"], step))
        for r in rows[:per_step]:
            picked.append(
                _review(r["dataset"], r["source"], step, "rejected", r["reason"], r["original"])
            )
    for shard in sorted((workspace / CLEAN_DIR).glob("*.parquet")):
        table = pq.read_table(shard)
        if "record_id" not in table.column_names or not table.num_rows:
            continue  # time series: nothing to read
        texts = joined_text(table.combine_chunks().to_batches()[0])
        kept = list(zip(table.to_pylist(), texts, strict=True))
        kept.sort(key=lambda rt: _order_key(seed, rt[0]["dataset"], rt[0]["source"], KEPT))
        for r, text in kept[:per_step]:
            picked.append(
                _review(r["dataset"], r["source"], KEPT, "kept", "passed every step", text)
            )
    return picked


def _review(
    dataset: str, source: str, step: str, decision: str, reason: str, text: str
) -> dict[str, Any]:
    import hashlib

    ident = hashlib.blake2b(f"{dataset}\x00{source}\x00{step}".encode(), digest_size=10).hexdigest()
    return {
        "record_id": ident,
        "dataset": dataset,
        "source": source,
        "step": step,
        "decision": decision,
        "reason": reason,
        "text": text,
    }


def sample(workspace: Path, per_step: int, seed: int = 0) -> PushReport:
    """Push :func:`review_rows` as tasks of the ``cleaning_review`` project (idempotent)."""
    template = templates.load_template(REVIEW_TEMPLATE, templates.templates_dir(workspace))
    rows = review_rows(workspace, per_step, seed)
    ls = client(workspace)
    project_id = _open_project(workspace, ls, REVIEW_TEMPLATE, template)
    return _import_new(workspace, ls, REVIEW_TEMPLATE, project_id, rows, lambda r: {"data": r})


def step_precision(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per cleaning step: reviews, how many said the decision was right, and that share (the
    step's precision for rejections; for ``kept`` rows, the share rightly kept)."""
    tally: dict[str, list[int]] = {}
    for row in rows:
        verdict = row.get("verdict")
        if verdict not in ("correct", "wrong"):
            continue
        step = str(json.loads(row["data"]).get("step"))
        counts = tally.setdefault(step, [0, 0])
        counts[0] += 1
        counts[1] += verdict == "correct"
    return {
        step: {"reviewed": n, "correct": c, "precision": round(c / n, 4)}
        for step, (n, c) in sorted(tally.items())
    }
