"""The dossier's readable page: one self-contained HTML file (no script, font or stylesheet
fetched), generated from the same documents the JSON files hold."""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from offline.evidence.build import ModelParts

# the card's fields only a person states (build imports this module, so they live here)
HUMAN_FIELDS = (
    "owner",
    "description",
    "intended_use",
    "out_of_scope",
    "users",
    "limitations",
    "human_oversight",
    "risks",
)

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}code{font-size:.9em}
.gap{color:#8a1c00}.ok{color:#1c6b00}.note{color:#555;font-size:.92em}
"""


def _table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["<table><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return "<br>".join(escape(str(v)) for v in value)
    if isinstance(value, dict):
        return escape(json.dumps(value, ensure_ascii=False))
    if isinstance(value, float):
        return escape(f"{value:.4g}")
    return escape("" if value is None else str(value))


def render(
    index: dict[str, Any],
    docs: dict[str, bytes],
    table: list[dict[str, Any]],
    parts: list[ModelParts],
    lineage: dict[str, Any],
) -> str:
    card = index["card"]
    name = str(card.get("name") or parts[0].name)
    h: list[str] = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(name)}: model card and evidence</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(name)}: model card and evidence</h1>",
        f"<p>Built {escape(index['created'])} by deepseek-offline {escape(index['toolkit'])};"
        f" signed by site key <code>{escape(index['key']['id'])}</code>."
        " Check it: <code>sha256sum -c SHA256SUMS</code> and <code>openssl pkeyutl -verify"
        " -pubin -inkey signing.pub.pem -rawin -in index.json -sigfile index.sig</code>, or"
        " <code>offline evidence verify DOSSIER</code>.</p>",
        "<h2>Model card</h2>",
        _table(
            ["field", "stated"],
            [[k, card.get(k, "")] for k in HUMAN_FIELDS],
        ),
        "<h2>Known gaps</h2>",
        "<ul>" + "".join(f"<li class=gap>{escape(g)}</li>" for g in index["gaps"]) + "</ul>"
        if index["gaps"]
        else "<p class=ok>none found</p>",
        "<h2>Models</h2>",
    ]
    for part in parts:
        h.append(f"<h3>{escape(part.name)}</h3>")
        tc = part.training_card or {}
        h.append(
            _table(
                ["", ""],
                [
                    ["kind", part.export_card.get("kind")],
                    ["trained from", tc.get("base_model")],
                    ["training run", tc.get("run_id")],
                    ["seed", tc.get("seed")],
                    ["precision / accelerator", f"{tc.get('precision')} / {tc.get('accelerator')}"],
                    ["rollbacks", len(tc.get("rollbacks") or [])],
                    ["training metrics", tc.get("metrics")],
                    ["package versions", tc.get("versions")],
                ],
            )
        )
        arts = part.export_card.get("artifacts", [])
        h.append(
            _table(
                ["format", "quantize", "target", "bytes", "top-1 vs eager", "gate"],
                [
                    [
                        a["format"],
                        a["quantize"],
                        a["target"],
                        a["bytes"],
                        a.get("parity", {}).get("top1_agreement"),
                        a["gate"],
                    ]
                    for a in arts
                ],
            )
        )
        if part.evaluation:
            ev = part.evaluation
            rows = [
                [b, *(f"{k} {v:.4g}" for k, v in m.items() if isinstance(v, int | float))]
                for b, m in ev["backends"].items()
            ]
            width = max(len(r) for r in rows)
            h.append(
                f"<p>Evaluated on {escape(str(ev.get('rows')))} rows of"
                f" <code>{escape(str(ev.get('data')))}</code>; deployed backend"
                f" {escape(str(ev.get('deployed')))}.</p>"
            )
            h.append(
                _table(
                    ["backend", *["figure"] * (width - 1)],
                    [r + [""] * (width - len(r)) for r in rows],
                )
            )
    h.append("<h2>Data</h2>")
    cleaning = json.loads(docs["cleaning.json"])
    h.append(
        _table(
            ["dataset", "rows in", "kept", "rejected", "rejected by step", "PII masked"],
            [
                [
                    n,
                    d["rows_in"],
                    d["rows_out"],
                    d["rejected"],
                    [
                        f"{s}: {v['rejected']} {v['reasons']}"
                        for s, v in d["rejected_by_step"].items()
                    ],
                    d["pii_masked_by_type"],
                ]
                for n, d in cleaning["datasets"].items()
            ],
        )
    )
    labels = json.loads(docs["labeling.json"])
    if labels:
        h.append(
            _table(
                [
                    "labeling",
                    "tasks",
                    "annotated",
                    "annotators",
                    "accepted unreviewed",
                    "agreement",
                ],
                [
                    [
                        t,
                        m["tasks"],
                        m["annotated_tasks"],
                        m["annotators"],
                        m["accepted_predictions_unreviewed"],
                        m["agreement"],
                    ]
                    for t, m in labels.items()
                ],
            )
        )
    h.append("<h2>Lineage (dvc.lock)</h2>")
    h.append(
        _table(
            ["stage", "command", "inputs", "outputs"],
            [
                [
                    s,
                    v["cmd"],
                    [f"{d['path']} {d.get('md5', '')}" for d in v["deps"]],
                    [f"{o['path']} {o.get('md5', '')}" for o in v["outs"]],
                ]
                for s, v in lineage["stages"].items()
            ],
        )
    )
    h.append("<h2>Audit logs</h2>")
    audit = json.loads(docs["audit.json"])["logs"]
    h.append(
        _table(
            ["kind", "log", "lines", "checkpoints (signed)", "verdict"],
            [
                [
                    log["kind"],
                    log["path"],
                    log["verdict"]["lines"],
                    f"{log['verdict']['checkpoints']} ({log['verdict']['signed_checkpoints']})",
                    "intact, closed"
                    if log["verdict"]["ok"] and log["verdict"]["closed"]
                    else (
                        log["verdict"]["tail"]
                        or "; ".join(
                            f"{p['where']}: {p['what']}" for p in log["verdict"]["problems"]
                        )
                        or "intact"
                    ),
                ]
                for log in audit
            ],
        )
    )
    h.append("<h2>Where each regulatory item is answered</h2>")
    from offline.evidence.mapping import NOTICE

    h.append(f"<p class=note>{escape(NOTICE)}</p>")
    h.append(
        _table(
            ["framework", "item", "summary", "answered by", "status", "note"],
            [
                [r["framework"], r["item"], r["title"], r["files"], r["status"], r["note"]]
                for r in table
            ],
        )
    )
    h.append("<h2>Artifacts named (sha256)</h2>")
    h.append(
        f"<p>{len(index['artifacts'])} files of the workspace; the list is"
        " <code>ARTIFACTS.sha256</code> (<code>cd WORKSPACE; sha256sum -c"
        " evidence/ARTIFACTS.sha256</code>).</p></body></html>\n"
    )
    return "\n".join(h)
