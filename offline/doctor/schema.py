"""The JSON report's schema (JSON Schema draft 2020-12), versioned by ``schema_version``."""

from __future__ import annotations

from typing import Any

from offline.doctor.model import STATUSES

_CHECK: dict[str, Any] = {
    "type": "object",
    "required": [
        "id", "group", "severity", "title", "status", "message", "evidence", "fix", "duration_s",
    ],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": r"^[a-z0-9]+(\.[A-Za-z0-9_.+-]+)+$"},
        "group": {"type": "string"},
        "severity": {"enum": ["critical", "warning", "info"]},
        "title": {"type": "string"},
        "status": {"enum": list(STATUSES)},
        "message": {"type": "string"},
        "evidence": {"type": "object"},
        "fix": {"type": ["string", "null"]},
        "duration_s": {"type": "number", "minimum": 0},
    },
    # Every failure, warning and error says how to fix it.
    "if": {"properties": {"status": {"enum": ["fail", "warn", "error"]}}},
    "then": {"properties": {"fix": {"type": "string", "minLength": 1}}},
}  # fmt: skip

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "deepseek-offline/doctor-report/1",
    "title": "deepseek-doctor report",
    "type": "object",
    "required": [
        "schema_version", "tool", "toolkit_version", "created", "duration_s", "host", "bundle",
        "strict", "ok", "summary", "checks",
    ],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": 1},
        "tool": {"const": "deepseek-doctor"},
        "toolkit_version": {"type": "string"},
        "created": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
        "duration_s": {"type": "number", "minimum": 0},
        "host": {"type": "object", "additionalProperties": {"type": "string"}},
        "bundle": {"type": ["string", "null"]},
        "strict": {"type": "boolean"},
        "ok": {"type": "boolean"},
        "summary": {
            "type": "object",
            "required": list(STATUSES),
            "additionalProperties": False,
            "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES},
        },
        "checks": {"type": "array", "items": _CHECK},
    },
}  # fmt: skip
