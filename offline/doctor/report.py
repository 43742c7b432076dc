"""Render a doctor Report: a text table grouped by group, JSON, self-contained HTML, JUnit XML."""

from __future__ import annotations

import html
import json
from itertools import groupby
from xml.etree import ElementTree as ET

from offline.doctor.model import Finding
from offline.doctor.runner import Report

_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP", "error": "ERROR"}


def _summary_line(report: Report) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
    verdict = "ready" if report.ok else "NOT ready"
    return f"{verdict}: {counts} ({len(report.findings)} checks, {report.duration_s:.1f} s)"


def _by_group(findings: list[Finding]) -> list[tuple[str, list[Finding]]]:
    return [(g, list(fs)) for g, fs in groupby(findings, key=lambda f: f.group)]


def to_text(report: Report, *, verbose: bool = False) -> str:
    """Problems in full with their fix; passes one line each (or folded per group)."""
    lines = [f"deepseek-doctor — bundle {report.context.bundle or '(none)'}", ""]
    width = max((len(f.id) for f in report.findings), default=10)
    for group, findings in _by_group(report.findings):
        lines.append(f"{group}")
        quiet = [f for f in findings if f.status == "pass"] if not verbose else []
        for f in findings:
            if f in quiet and len(quiet) > 8:
                continue
            lines.append(f"  {_MARK[f.status]:<5} {f.id:<{width}}  {f.message}")
            if f.fix and f.status != "pass":
                lines.append(f"  {'':<5} {'':<{width}}  fix: {f.fix}")
        if len(quiet) > 8:
            lines.append(f"  PASS  {len(quiet)} checks ({quiet[0].id} … {quiet[-1].id})")
        lines.append("")
    lines.append(_summary_line(report))
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2) + "\n"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;width:100%;margin-bottom:1.5em}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
.pass{color:#1a7f37}.warn{color:#9a6700}.fail,.error{color:#cf222e;font-weight:bold}
.skip{color:#6e7781}code{background:#f6f8fa;padding:1px 4px}
"""


def to_html(report: Report) -> str:
    """One file, no external assets: opens on the isolated host as it is."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>deepseek-doctor {esc(report.created)}</title><style>{_CSS}</style></head><body>",
        f"<h1>deepseek-doctor</h1><p>{esc(_summary_line(report))}</p>",
        f"<p>host {esc(report.host.get('hostname', ''))} · bundle "
        f"{esc(str(report.context.bundle or '(none)'))} · {esc(report.created)}</p>",
    ]
    for group, findings in _by_group(report.findings):
        parts.append(f"<h2>{esc(group)}</h2><table><tr><th>status</th><th>check</th>")
        parts.append("<th>message</th><th>fix</th></tr>")
        for f in findings:
            fix = f"<code>{esc(f.fix)}</code>" if f.fix and f.status != "pass" else ""
            parts.append(
                f"<tr><td class='{f.status}'>{_MARK[f.status]}</td><td>{esc(f.id)}</td>"
                f"<td>{esc(f.message)}</td><td>{fix}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def to_junit(report: Report) -> str:
    """One testsuite per group, one testcase per check (CI dashboards read this)."""
    suites = ET.Element("testsuites", name="deepseek-doctor", time=f"{report.duration_s:.3f}")
    for group, findings in _by_group(report.findings):
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=group,
            tests=str(len(findings)),
            failures=str(sum(f.status == "fail" for f in findings)),
            errors=str(sum(f.status == "error" for f in findings)),
            skipped=str(sum(f.status == "skip" for f in findings)),
        )
        for f in findings:
            case = ET.SubElement(
                suite, "testcase", classname=group, name=f.id, time=f"{f.duration_s:.3f}"
            )
            text = f"{f.message}\nfix: {f.fix}" if f.fix else f.message
            if f.status in ("fail", "error"):
                ET.SubElement(
                    case, "failure" if f.status == "fail" else "error", message=f.message
                ).text = text
            elif f.status == "skip":
                ET.SubElement(case, "skipped", message=f.message)
            elif f.status == "warn":
                ET.SubElement(case, "system-out").text = f"WARNING: {text}"
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
