"""The validate stage: schema and quality checks on the raw datasets, against params thresholds.

Every dataset is read the way the clean stage reads it; the report (``metrics/validate.json``)
lists each check with its measured value, its limit and whether it passed. The report is written
first; then, when any check failed, :class:`~offline.errors.DataError` lists every failure.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from offline.data import tabular
from offline.data.io import MALFORMED, MISSING, OVERSIZED, WRONG_TYPE, read_dataset
from offline.data.layout import LAYOUT
from offline.data.params import Dataset, Params, ValidateParams, load_params
from offline.errors import DataError
from offline.fsutil import atomic_write_text

REPORT = Path(LAYOUT.metric("validate"))
ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class Check:
    """One measured value against its limit."""

    dataset: str
    name: str
    value: float
    limit: float
    ok: bool
    detail: str = ""


@dataclass
class ValidateReport:
    checks: list[Check]
    stats: dict[str, dict[str, Any]]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.failed,
            "failed": len(self.failed),
            "checks": [asdict(c) for c in self.checks],
            "datasets": self.stats,
        }


def role_error(messages: list[dict[str, str]] | None) -> str | None:
    """The first role problem of a conversation, or None when its roles are in order."""
    if not messages:
        return "no messages"
    prev = None
    for i, msg in enumerate(messages):
        role = msg["role"]
        if role not in ROLES:
            return f"unknown role {role!r} at turn {i}"
        if role == "system" and i != 0:
            return f"system message at turn {i}"
        if role != "system" and role == prev:
            return f"two {role} turns in a row at turn {i}"
        prev = role
    return None


def _empty(array: pa.Array) -> int:
    if pa.types.is_list(array.type):
        return int(
            pc.sum(pc.or_kleene(array.is_null(), pc.equal(pc.list_value_length(array), 0))).as_py()
            or 0
        )
    blank = pc.equal(pc.utf8_trim_whitespace(array.fill_null("")), "")
    return int(pc.sum(blank).as_py() or 0)


REQUIRED = {
    "text": ["text"],
    "instruction": ["instruction", "response"],
    "conversation": ["messages"],
}


def _stream_stats(root: Path, name: str, ds: Dataset, limits: ValidateParams) -> dict[str, Any]:
    categories: Counter[str] = Counter()
    empty: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    rows = records = 0
    for chunk in read_dataset(
        root, name, ds, batch_rows=8192, max_record_bytes=limits.max_record_bytes
    ):
        batch = chunk.batch
        rows += batch.num_rows + len(chunk.quarantined)
        records += batch.num_rows
        categories.update(q.category for q in chunk.quarantined)
        for field in REQUIRED[ds.kind]:
            empty[field] += _empty(batch.column(field))
        if ds.kind == "conversation":
            for messages in batch.column("messages").to_pylist():
                problem = role_error(messages)
                if problem:
                    roles[problem.split(" at ")[0]] += 1
    missing = {f: empty[f] + categories[MISSING] for f in REQUIRED[ds.kind]}
    return {
        "kind": ds.kind,
        "rows": rows,
        "records": records,
        "quarantined": dict(sorted(categories.items())),
        "empty_or_missing": missing,
        "role_errors": dict(sorted(roles.items())),
    }


def _stream_checks(name: str, stats: dict[str, Any], limits: ValidateParams) -> list[Check]:
    rows = max(stats["rows"], 1)
    q = stats["quarantined"]
    malformed = (q.get(MALFORMED, 0) + q.get(OVERSIZED, 0)) / rows
    checks = [
        Check(name, "min_rows", stats["rows"], limits.min_rows, stats["rows"] >= limits.min_rows),
        Check(
            name,
            "malformed_rate",
            malformed,
            limits.max_malformed_rate,
            malformed <= limits.max_malformed_rate,
        ),
    ]
    type_rate = q.get(WRONG_TYPE, 0) / rows
    checks.append(
        Check(
            name,
            "type_error_rate",
            type_rate,
            limits.max_type_error_rate,
            type_rate <= limits.max_type_error_rate,
        )
    )
    for field, n in stats["empty_or_missing"].items():
        rate = n / rows
        checks.append(
            Check(
                name, f"null_rate.{field}", rate, limits.max_null_rate, rate <= limits.max_null_rate
            )
        )
    if stats["kind"] == "conversation":
        rate = sum(stats["role_errors"].values()) / rows
        detail = ", ".join(f"{k}: {v}" for k, v in stats["role_errors"].items())
        checks.append(
            Check(
                name,
                "role_error_rate",
                rate,
                limits.max_role_error_rate,
                rate <= limits.max_role_error_rate,
                detail,
            )
        )
    return checks


def _table_checks(
    root: Path, name: str, ds: Dataset, params: Params
) -> tuple[dict[str, Any], list[Check]]:
    limits = params.validate_
    result = tabular.clean_table(
        root, name, ds, params.clean.tabular.model_copy(update={"steps": ["coerce"]})
    )
    rows = max(result.rows_in, 1)
    stats = {
        "kind": "tabular",
        "rows": result.rows_in,
        "unparseable_time": len(result.rejected),
        **result.counts,
    }
    bad_time = len(result.rejected) / rows
    missing = (
        result.counts.get("missing_values", 0) + result.counts.get("unparseable_values", 0)
    ) / (rows * max(len(result.table.column_names) - 2, 1))
    checks = [
        Check(name, "min_rows", result.rows_in, limits.min_rows, result.rows_in >= limits.min_rows),
        Check(
            name,
            "malformed_rate",
            bad_time,
            limits.max_malformed_rate,
            bad_time <= limits.max_malformed_rate,
        ),
        Check(
            name, "null_rate.values", missing, limits.max_null_rate, missing <= limits.max_null_rate
        ),
    ]
    return stats, checks


def validate(root: Path, params: Params | None = None) -> ValidateReport:
    """Check every dataset of the workspace and write ``metrics/validate.json``.

    Raises:
        DataError: when any check failed (after the report is written), listing every failure.
    """
    params = params or load_params(root / "params.yaml")
    checks: list[Check] = []
    stats: dict[str, dict[str, Any]] = {}
    for name in sorted(params.datasets):
        ds = params.datasets[name]
        if ds.kind == "tabular":
            stats[name], found = _table_checks(root, name, ds, params)
        else:
            stats[name] = _stream_stats(root, name, ds, params.validate_)
            found = _stream_checks(name, stats[name], params.validate_)
        checks.extend(found)
    report = ValidateReport(checks, stats)
    (root / REPORT.parent).mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        root / REPORT, json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"
    )
    if report.failed:
        lines = "\n".join(
            f"  {c.dataset}: {c.name} = {c.value:.4g} (limit {c.limit:g})"
            + (f" [{c.detail}]" if c.detail else "")
            for c in report.failed
        )
        raise DataError(
            f"validation failed ({len(report.failed)} check(s)); report in {REPORT}:\n{lines}",
            fix="fix the named dataset, or relax the limit under `validate:` in params.yaml",
        )
    return report
