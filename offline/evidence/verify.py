"""``offline evidence verify DOSSIER``: the signature, every dossier file, every artifact the
dossier names that is present, the lineage against today's ``dvc.lock``, and every audit chain.

What differs is named (a file, an artifact, a stage, a log line); what is absent (a dossier
carried to an auditor without the workspace) is counted, not failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from offline.audit import chain
from offline.bundle.sign import load_public_key, public_pem
from offline.errors import ConfigError
from offline.evidence.build import FORMAT, INDEX, PUB, SIG, SUMS, chain_files, lineage
from offline.fsutil import sha256_bytes, sha256_file


@dataclass
class Finding:
    where: str
    what: str


@dataclass
class Report:
    dossier: Path
    key_id: str = ""
    anchored: bool = False  # checked against a key given, not only the dossier's own
    problems: list[Finding] = field(default_factory=list)
    files: int = 0
    artifacts: int = 0
    absent: list[str] = field(default_factory=list)
    logs: int = 0
    gaps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, what: str) -> None:
        self.problems.append(Finding(where, what))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dossier": str(self.dossier),
            "key": self.key_id,
            "anchored": self.anchored,
            "files": self.files,
            "artifacts_checked": self.artifacts,
            "absent": self.absent,
            "logs": self.logs,
            "gaps": self.gaps,
            "notes": self.notes,
            "problems": [{"where": p.where, "what": p.what} for p in self.problems],
        }


def verify(dossier: Path, pubkey: Path | None = None, workspace: Path | None = None) -> Report:
    """Check ``dossier`` (see the module); ``pubkey`` anchors the signature in a key the auditor
    trusts instead of the one the dossier carries."""
    report = Report(dossier)
    index_path = dossier / INDEX
    if not index_path.is_file():
        raise ConfigError(
            f"{dossier}: no {INDEX}, so not an evidence dossier",
            fix="pass the directory `offline evidence build --out` wrote",
        )
    raw = index_path.read_bytes()
    try:
        index: dict[str, Any] = json.loads(raw)
    except ValueError:
        report.add(INDEX, "not JSON: edited or damaged")
        return report
    if index.get("format") != FORMAT:
        report.add(INDEX, f"format {index.get('format')!r}, expected {FORMAT!r}")
        return report
    report.gaps = list(index.get("gaps", []))
    _signature(dossier, raw, pubkey, report)
    _files(dossier, index, report)
    ws = workspace or _workspace(dossier, index)
    _artifacts(ws, index, report)
    _lineage(ws, dossier, report)
    _logs(ws, index, dossier, report)
    return report


def _signature(dossier: Path, raw: bytes, pubkey: Path | None, report: Report) -> None:
    carried = dossier / PUB
    key = load_public_key(pubkey) if pubkey else None
    if key is None:
        if not carried.is_file():
            report.add(PUB, "missing: no key to check the signature with (pass --pubkey)")
            return
        key = load_public_key(carried)
    else:
        report.anchored = True
        if carried.is_file() and carried.read_bytes() != public_pem(key):
            report.add(PUB, "is not the key given with --pubkey: signed by another key")
    report.key_id = chain.key_id(key)
    if not (dossier / SIG).is_file():
        report.add(SIG, "missing: the dossier is not signed")
        return
    try:
        key.verify((dossier / SIG).read_bytes(), raw)
    except InvalidSignature:
        report.add(INDEX, "the signature does not match: it was changed, or another key signed it")


def _files(dossier: Path, index: dict[str, Any], report: Report) -> None:
    listed: dict[str, str] = index.get("files", {})
    for name, want in sorted(listed.items()):
        path = dossier / name
        report.files += 1
        if not path.is_file():
            report.add(name, "missing from the dossier (deleted)")
        elif sha256_file(path) != want:
            report.add(name, "sha256 differs from index.json's (edited)")
    known = {*listed, INDEX, SIG, SUMS}
    for path in sorted(p for p in dossier.rglob("*") if p.is_file()):
        rel = path.relative_to(dossier).as_posix()
        if rel not in known:
            report.add(rel, "not named by index.json (added)")
    sums = dossier / SUMS
    if not sums.is_file():
        report.add(SUMS, "missing")
        return
    for line in sums.read_text(errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        path = dossier / name
        if name not in known:
            report.add(SUMS, f"names {name!r}, which index.json does not")
        elif path.is_file() and sha256_file(path) != digest:
            report.add(SUMS, f"its sha256 for {name} does not match the file")


def _workspace(dossier: Path, index: dict[str, Any]) -> Path:
    """The dossier's parent when it sits in a workspace, else where it was built."""
    if (dossier.resolve().parent / "dvc.yaml").is_file():
        return dossier.resolve().parent
    return Path(index.get("workspace", "."))


def _locate(ws: Path, rel: str) -> Path:
    return Path(rel) if rel.startswith("/") else ws / rel


def _artifacts(ws: Path, index: dict[str, Any], report: Report) -> None:
    for art in index.get("artifacts", []):
        path = _locate(ws, art["path"])
        if not path.is_file():
            report.absent.append(art["path"])
            continue
        report.artifacts += 1
        if path.stat().st_size != art["bytes"] or sha256_file(path) != art["sha256"]:
            report.add(art["path"], "sha256 differs from the dossier's: changed since it was built")


def _lineage(ws: Path, dossier: Path, report: Report) -> None:
    if not (ws / "dvc.lock").is_file() or not (dossier / "lineage.json").is_file():
        return
    recorded = json.loads((dossier / "lineage.json").read_text())["stages"]
    try:
        now = lineage(ws)["stages"]
    except Exception as exc:  # an unreadable lock is a difference, named
        report.add("dvc.lock", f"not readable: {exc}")
        return
    for name in sorted(set(recorded) | set(now)):
        if name not in now:
            report.add(f"dvc.lock:{name}", "stage gone since the dossier was built")
        elif name not in recorded:
            report.add(f"dvc.lock:{name}", "stage added since the dossier was built")
        elif now[name] != recorded[name]:
            report.add(f"dvc.lock:{name}", "stage re-run or changed since the dossier was built")


def _logs(ws: Path, index: dict[str, Any], dossier: Path, report: Report) -> None:
    audit = (
        json.loads((dossier / "audit.json").read_text())
        if (dossier / "audit.json").is_file()
        else {}
    )
    built = {log["path"]: log for log in audit.get("logs", [])}
    key = load_public_key(dossier / PUB) if (dossier / PUB).is_file() else None
    for log in index.get("logs", []):
        live = _locate(ws, log["path"])
        present = False
        for entry in log["files"]:
            found = _find(_locate(ws, entry["path"]), live, entry["first_line_sha256"])
            if found is None:
                report.absent.append(entry["path"])
                continue
            present = True
            data, where = found.read_bytes(), _inside(str(found), ws)
            if len(data) < entry["bytes"]:
                kept = data.count(b"\n")
                report.add(
                    where,
                    f"cut: {entry['bytes'] - len(data)} bytes shorter than when the dossier was"
                    f" built ({kept} of {entry['lines']} lines left): lines were removed",
                )
            elif sha256_bytes(data[: entry["bytes"]]) != entry["sha256"]:
                report.add(where, "changed since the dossier was built (see the chain below)")
        if not present:
            continue
        report.logs += 1
        signed = log.get("signed_by_site_key") and key is not None
        verdict = chain.verify(chain_files(live), key if signed else None)
        was = built.get(log["path"], {}).get("verdict", {})
        before = [(_inside(p["where"], ws), p["what"]) for p in was.get("problems", [])]
        for problem in verdict.problems:
            where = _inside(problem.where, ws)
            if (where, problem.what) in before:  # already a gap when it was built
                report.notes.append(f"{where}: {problem.what} (as when built)")
            else:
                report.add(where, problem.what)
        if verdict.ok and was.get("closed") and not verdict.closed:
            report.add(log["path"], f"was closed when the dossier was built; now {verdict.tail}")


def _inside(where: str, ws: Path) -> str:
    """A log's ``FILE[:LINE]`` (a chain problem's, or a file's) with the workspace's own
    prefix taken off."""
    for root in {str(ws.resolve()), str(ws.absolute())}:
        if where.startswith(root + "/"):
            return where[len(root) + 1 :]
    return where


def _find(path: Path, live: Path, first: str) -> Path | None:
    """The file holding a log's lines from ``first`` on: where it was, or rotated since (a
    file still where it was whose first line differs is returned too: it was edited)."""
    for candidate in [path, *chain_files(live)]:
        if candidate.is_file():
            with candidate.open("rb") as fh:
                if chain.line_hash(fh.readline().rstrip(b"\n")) == first:
                    return candidate
    return path if path.is_file() else None
