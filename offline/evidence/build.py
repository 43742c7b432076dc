"""``offline evidence build``: one signed dossier from raw data to the deployed model.

The dossier (a directory) holds what an auditor reads, and names by sha256 what stays where it
is (data, weights, exports, the installed bundle, the audit logs)::

    index.json          what is here and what is named, with every sha256; signed
    index.sig           ed25519 over index.json (openssl pkeyutl -verify -rawin ...)
    signing.pub.pem     the public half of the site key that signed it
    SHA256SUMS          every file of the dossier (sha256sum -c SHA256SUMS)
    ARTIFACTS.sha256    every workspace artifact named (cd WORKSPACE; sha256sum -c ...)
    model-card.cdx.json CycloneDX 1.6 ML-BOM: the models' cards, datasets, base model, packages
    model-card.html     the same, readable, one self-contained page
    mapping.json        Annex IV / Art. 12 / MLPS level-3 items -> the files answering them
    lineage.json        every dvc.lock stage: command, params, input and output hashes
    cleaning.json       rows rejected by step and reason, PII found by type (counts only)
    labeling.json       tasks, annotators, agreement, labels accepted without review
    training/NAME.json  each model's training card
    evaluation/NAME.json, export/NAME.json   evaluation figures; the export card and its gate
    bundle/             the installed bundle's manifest, signature, SBOM and install record
    host/doctor.json, host/firewall.json     the newest doctor report and firewall verify
    audit.json          every hash-chained log: its files, head at build time, verdict

No data row is copied: the cleaning and labeling summaries are counts, and the ledger's rows
(which hold the rejected text) are named by hash only.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from offline import __version__
from offline.audit import chain
from offline.audit.site import WORKSPACE_KEY, log_dir, site_key, site_key_path
from offline.bundle.sign import public_pem, sign
from offline.data.layout import LAYOUT
from offline.errors import ConfigError, NotFoundError
from offline.evidence import mapping, page
from offline.fsutil import build_dir, sha256_bytes, sha256_file, sha256_many

FORMAT = "deepseek-offline-evidence/1"
INDEX, SIG, PUB, SUMS, ARTIFACT_SUMS = (
    "index.json",
    "index.sig",
    "signing.pub.pem",
    "SHA256SUMS",
    "ARTIFACTS.sha256",
)
CARD = "model-card.yaml"
STAGE = "evidence"  # its own dvc.yaml stage: left out of the lineage it records
TODO = "TODO"
HUMAN_FIELDS = page.HUMAN_FIELDS


@dataclass
class Sources:
    """Where ``build`` looks; None: the default place (see ``offline evidence build --help``)."""

    workspace: Path
    models: list[Path]
    out: Path
    card: Path | None = None
    audit_logs: list[str] = field(default_factory=list)
    doctor_log: Path | None = None
    firewall_log: Path | None = None
    bundle: Path | None = None
    key: Path | None = None


@dataclass
class Built:
    out: Path
    files: int
    artifacts: int
    logs: int
    key_id: str
    gaps: list[str]
    mapping: list[dict[str, Any]]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})") from None


def _maybe_json(path: Path) -> Any:
    return _json(path) if path.is_file() else None


def _dump(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode()


def _rel(path: Path, ws: Path) -> str:
    """A workspace path relative to it; anything else absolute."""
    try:
        return path.resolve().relative_to(ws.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


# --- the parts --------------------------------------------------------------------------------


def read_card(path: Path) -> dict[str, Any]:
    """The user's model card YAML (the fields only a person can fill in)."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", fix=f"fix {path}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of fields", fix=f"see `offline init`'s {CARD}"
        )
    for name in HUMAN_FIELDS:
        value = data.get(name)
        items = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(v, str | int | float) for v in items):
            # the usual cause: an unquoted "a: b" in a value, which YAML reads as a mapping
            raise ConfigError(
                f"{path}: {name} must be text or a list of texts, not {value!r}",
                fix=f'quote the value in {path} (a ": " inside it starts a mapping): {name}: "..."',
            )
    return data


def _unfilled(value: Any) -> bool:
    if value is None or value == "" or value == []:
        return True
    if isinstance(value, str):
        return value.strip().upper().startswith(TODO)
    if isinstance(value, list):
        return all(_unfilled(v) for v in value)
    return False


def lineage(ws: Path) -> dict[str, Any]:
    """Every stage of ``dvc.lock`` but this one: command, params and hashed deps/outs."""
    lock_path = ws / "dvc.lock"
    if not lock_path.is_file():
        raise NotFoundError(
            f"{lock_path} not found: the pipeline has not run here",
            fix="run `dvc repro` in the workspace first (the evidence stage runs last)",
        )
    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    stages = {}
    for name, stage in (lock.get("stages") or {}).items():
        if name == STAGE:
            continue
        stages[name] = {
            "cmd": stage.get("cmd"),
            "params": stage.get("params", {}),
            "deps": [_entry(d) for d in stage.get("deps", [])],
            "outs": [_entry(o) for o in stage.get("outs", [])],
        }
    return {"source": "dvc.lock", "schema": lock.get("schema"), "stages": stages}


def _entry(item: dict[str, Any]) -> dict[str, Any]:
    keys = ("path", "md5", "hash", "size", "nfiles")
    return {k: item[k] for k in keys if k in item}


def cleaning(ws: Path) -> dict[str, Any]:
    """Rows in/out/rejected by step and reason, PII found by type: from the ledger itself
    (``data/rejected``, counted by step and reason) and ``metrics/clean.json``."""
    metrics = _maybe_json(ws / LAYOUT.metric("clean")) or {}
    out: dict[str, Any] = {"datasets": {}, "ledger": {}}
    for name, d in (metrics.get("datasets") or {}).items():
        steps = d.get("steps", {})
        out["datasets"][name] = {
            "kind": d.get("kind"),
            "rows_in": d.get("rows_in"),
            "rows_out": d.get("rows_out"),
            "rejected": d.get("rejected"),
            "rejected_by_step": {
                s: {"rejected": v.get("rejected", 0), "reasons": v.get("reasons", {})}
                for s, v in steps.items()
                if v.get("rejected")
            },
            "pii_masked_by_type": steps.get("pii", {}).get("counts", {}),
            "dedup": d.get("summary", {}),
        }
    ledger_files = sorted((ws / LAYOUT.rejected).glob("*.parquet"))
    if ledger_files:
        import pyarrow.parquet as pq

        counts: Counter[tuple[str, str, str]] = Counter()
        for path in ledger_files:
            table = pq.read_table(path, columns=["dataset", "step", "reason"])
            for row in zip(
                *(table[c].to_pylist() for c in ("dataset", "step", "reason")), strict=True
            ):
                counts[(str(row[0]), str(row[1]), str(row[2]))] += 1
        by: dict[str, Any] = {}
        for (dataset, step, reason), n in sorted(counts.items()):
            by.setdefault(dataset, {}).setdefault(step, {})[reason] = n
        out["ledger"] = {
            "files": [_rel(p, ws) for p in ledger_files],
            "rows": sum(counts.values()),
            "by_dataset_step_reason": by,
        }
    return out


def labeling(ws: Path) -> dict[str, Any]:
    data = _maybe_json(ws / LAYOUT.metric("label")) or {}
    out: dict[str, Any] = {}
    for template, m in data.items():
        if not isinstance(m, dict):
            continue
        agreement = m.get("agreement") or {}
        out[template] = {
            "tasks": m.get("tasks"),
            "annotated_tasks": m.get("annotated_tasks"),
            "annotations": m.get("annotations"),
            "accepted_predictions_unreviewed": m.get("from_predictions_only"),
            "annotators": agreement.get("annotators"),
            "tasks_with_2plus_annotators": agreement.get("tasks_with_2plus"),
            "agreement": agreement.get("fields"),
        }
    return out


@dataclass
class ModelParts:
    name: str
    export_dir: Path
    export_card: dict[str, Any]
    training_card: dict[str, Any] | None
    training_dir: Path | None
    evaluation: dict[str, Any] | None
    evaluation_file: Path | None


def model_parts(ws: Path, export_dir: Path) -> ModelParts:
    card_path = export_dir / "export_card.json"
    if not card_path.is_file():
        raise NotFoundError(
            f"{export_dir}: no export_card.json, so not an `offline export` directory",
            fix="pass --model models/export/NAME (a directory `offline export --out` wrote)",
        )
    card = _json(card_path)
    source = ws / str(card.get("model", ""))
    training = _maybe_json(source / "training_card.json") if card.get("model") else None
    evaluation, evaluation_file = None, None
    for path in sorted((ws / LAYOUT.metrics).glob("eval_*.json")):
        data = _maybe_json(path)
        if isinstance(data, dict) and data.get("model") == export_dir.name and "backends" in data:
            evaluation, evaluation_file = data, path
    return ModelParts(
        export_dir.name,
        export_dir,
        card,
        training,
        source if training is not None else None,
        evaluation,
        evaluation_file,
    )


def _latest(path: Path | None, want: str) -> dict[str, Any] | None:
    """The newest record of the chained event log ``path`` holding ``want``."""
    if path is None or not path.is_file():
        return None
    found = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and want in record:
            found = record
    return found


# --- audit logs --------------------------------------------------------------------------------


def chain_files(path: Path) -> list[Path]:
    """A chained log and its rotated files (``NAME.SEQ``), oldest first."""
    rotated = sorted(p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit())
    return [*rotated, *([path] if path.is_file() else [])]


def snapshot(path: Path, kind: str, ws: Path, key: Any) -> dict[str, Any]:
    """One log as it is now: each file's size and the sha256 of those bytes (it may grow
    later; it may not change), its first line's hash, and the chain's verdict."""
    files = []
    for f in chain_files(path):
        data = f.read_bytes()
        first = data.split(b"\n", 1)[0]
        files.append(
            {
                "path": _rel(f, ws),
                "bytes": len(data),
                "lines": data.count(b"\n"),
                "sha256": sha256_bytes(data),
                "first_line_sha256": chain.line_hash(first),
            }
        )
    verdict = chain.verify(chain_files(path))
    signed = verdict.ok and verdict.checkpoints > 0 and verdict.signed == verdict.checkpoints
    by_site = signed and chain.verify(chain_files(path), key).ok
    return {
        "kind": kind,
        "path": _rel(path, ws),
        "files": files,
        "verdict": verdict.as_dict(),
        "signed_by_site_key": by_site,
    }


# --- CycloneDX ---------------------------------------------------------------------------------


def _hashes(sha: str) -> list[dict[str, str]]:
    return [{"alg": "SHA-256", "content": sha}]


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def ml_bom(
    human: dict[str, Any],
    parts: list[ModelParts],
    datasets: list[dict[str, Any]],
    sbom: dict[str, Any] | None,
    created: str,
    digests: dict[str, str],
) -> dict[str, Any]:
    """A CycloneDX 1.6 BOM: each exported model a ``machine-learning-model`` with its
    ``modelCard``, its base model and datasets as components, the bundle's packages beside."""
    components: list[dict[str, Any]] = []
    dataset_refs = []
    for ds in datasets:
        ref = f"dataset:{ds['name']}"
        dataset_refs.append({"ref": ref})
        components.append(
            {
                "type": "data",
                "bom-ref": ref,
                "name": ds["name"],
                "hashes": _hashes(ds["sha256"]),
                "data": [
                    {
                        "type": "dataset",
                        "name": ds["name"],
                        "description": ds["description"],
                        "classification": "internal",
                        "contents": {"url": f"file:{ds['path']}"},
                    }
                ],
            }
        )
    bases: dict[str, dict[str, Any]] = {}
    for part in parts:
        base = (part.training_card or {}).get("base_model")
        if base and base not in bases:
            bases[base] = {
                "type": "machine-learning-model",
                "bom-ref": f"base-model:{base}",
                "name": str(base),
                "description": "the base model the training started from",
            }
            if digests.get(f"{base}/model.safetensors"):
                bases[base]["hashes"] = _hashes(digests[f"{base}/model.safetensors"])
    components += bases.values()
    considerations: dict[str, Any] = {}
    for key, field_ in (
        ("users", "users"),
        ("useCases", "intended_use"),
        ("technicalLimitations", "limitations"),
    ):
        if not _unfilled(human.get(field_)):
            considerations[key] = _list(human.get(field_))
    if not _unfilled(human.get("risks")):
        considerations["ethicalConsiderations"] = [
            {"name": r, "mitigationStrategy": _text(human.get("human_oversight"))}
            for r in _list(human.get("risks"))
        ]
    dependencies = []
    for part in parts:
        ref = f"model:{part.name}"
        metrics = []
        if part.evaluation:
            deployed_name = part.evaluation.get("deployed")
            deployed = part.evaluation["backends"].get(deployed_name, {})
            for name, value in deployed.items():
                if isinstance(value, int | float):
                    metrics.append(
                        {
                            "type": name,
                            "value": f"{value:.6g}",
                            "slice": f"{part.evaluation.get('data')} ({deployed_name})",
                        }
                    )
        card: dict[str, Any] = {
            "modelParameters": {
                "approach": {"type": "supervised"},
                "task": part.export_card.get("kind") or "",
                "architectureFamily": "transformer",
                "datasets": dataset_refs,
                "inputs": [{"format": "text"}],
                "outputs": [{"format": "label" if part.export_card.get("labels") else "text"}],
            },
            "considerations": considerations,
        }
        if metrics:
            card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
        properties = [
            {
                "name": "deepseek-offline:export-gate",
                "value": ", ".join(
                    f"{a['format']} {a['quantize']} {a['target']}: {a['gate']}"
                    for a in part.export_card.get("artifacts", [])
                ),
            },
        ]
        if part.training_card:
            properties.append(
                {
                    "name": "deepseek-offline:training-run",
                    "value": str(part.training_card.get("run_id")),
                }
            )
        files = [
            {"type": "file", "bom-ref": f"{ref}/{rel}", "name": rel, "hashes": _hashes(sha)}
            for rel, sha in sorted((part.export_card.get("_files") or {}).items())
        ]
        component = {
            "type": "machine-learning-model",
            "bom-ref": ref,
            "name": part.name,
            "version": str(part.export_card.get("source_sha256", ""))[:12] or "0",
            "description": _text(human.get("description")) or part.export_card.get("kind", ""),
            "modelCard": card,
            "properties": properties,
            "components": files,
        }
        components.append(component)
        depends = [d["ref"] for d in dataset_refs]
        base = (part.training_card or {}).get("base_model")
        if base:
            depends.append(f"base-model:{base}")
        dependencies.append({"ref": ref, "dependsOn": depends})
    if sbom:
        components += [c for c in sbom.get("components", []) if "bom-ref" in c]
    name = str(human.get("name") or parts[0].name)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {
                "components": [
                    {"type": "application", "name": "deepseek-offline", "version": __version__}
                ]
            },
            "component": {
                "type": "application",
                "bom-ref": f"system:{name}",
                "name": name,
                "version": str(human.get("version") or "0"),
            },
            **(
                {"manufacturer": {"name": _text(human["owner"])}}
                if not _unfilled(human.get("owner"))
                else {}
            ),
        },
        "components": components,
        "dependencies": [
            {"ref": f"system:{name}", "dependsOn": [f"model:{p.name}" for p in parts]},
            *dependencies,
        ],
    }


# --- build -------------------------------------------------------------------------------------


def _default_bundle() -> Path | None:
    prefix = log_dir()
    if prefix is None:
        return None
    bundle = prefix.parent.parent / "bundle"  # PREFIX/var/log -> PREFIX/bundle
    return bundle if (bundle / "manifest.json").is_file() else None


def _default_firewall_log() -> Path | None:
    from offline.firewall.apply import state_dir

    path = state_dir() / "events.jsonl"
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def _workspace_files(ws: Path, paths: list[str], skip: Path) -> list[Path]:
    found: list[Path] = []
    for rel in paths:
        path = ws / rel
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            for directory, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(directory) / n for n in sorted(names)]
    skip = skip.resolve()
    return sorted({p for p in found if skip not in p.resolve().parents and not p.is_symlink()})


def build(src: Sources) -> Built:
    """Collect, hash, sign and write the dossier at ``src.out`` (replacing an older one in one
    rename: nothing half-written is left on an error).

    Raises:
        NotFoundError: no dvc.lock, an export directory that is not one, no site key.
        ConfigError: an unreadable card, metrics file or key.
    """
    ws = src.workspace.resolve()
    out = src.out if src.out.is_absolute() else ws / src.out
    key_path = site_key_path(src.key, ws)
    key = site_key(src.key, ws)
    if key is None:
        raise NotFoundError(
            "no site key to sign the dossier",
            fix=f"pass --key KEY.pem, set DEEPSEEK_OFFLINE_SITE_KEY, or create {WORKSPACE_KEY}"
            f" with `offline bundle keygen --out {WORKSPACE_KEY}`",
        )
    if not src.models:
        raise ConfigError("no model named", fix="pass --model models/export/NAME (repeatable)")
    created = _now()
    human = read_card(src.card or ws / CARD)
    parts = [model_parts(ws, m if m.is_absolute() else ws / m) for m in src.models]
    lineage_doc = lineage(ws)

    # What is named, by sha256: every path the lineage names, the pipeline's own files.
    named = sorted(
        {e["path"] for s in lineage_doc["stages"].values() for e in s["deps"] + s["outs"]}
        | {"dvc.yaml", "params.yaml", "train.yaml", "train-classifier.yaml", CARD}
    )
    files = _workspace_files(ws, named, out)
    for part in parts:
        files += [p for p in part.export_dir.rglob("*") if p.is_file()]
    files = sorted(set(files))
    digests = {_rel(p, ws): d for p, d in sha256_many(files).items()}
    artifacts: list[dict[str, Any]] = [
        {"path": rel, "bytes": (ws / rel).stat().st_size, "sha256": digests[rel]}
        for rel in sorted(digests)
    ]
    for part in parts:
        prefix = _rel(part.export_dir, ws) + "/"
        part.export_card["_files"] = {
            r.removeprefix(prefix): d for r, d in digests.items() if r.startswith(prefix)
        }

    # The datasets the models were trained and tested on: the split files, by hash.
    datasets = [
        {
            "name": f"{p.parent.name}/{p.stem}",
            "path": _rel(p, ws),
            "sha256": digests.get(_rel(p, ws)) or sha256_file(p),
            "description": f"{p.parent.name}, {p.stem} split (cleaned, PII masked)",
        }
        for p in sorted((ws / LAYOUT.split).glob("*/*.parquet"))
    ]

    bundle = src.bundle or _default_bundle()
    if bundle is not None and not (bundle / "manifest.json").is_file():
        raise NotFoundError(
            f"{bundle}: no manifest.json, so not a bundle",
            fix="pass --bundle PREFIX/bundle (the directory install-offline.sh installed)",
        )
    sbom = _maybe_json(bundle / "sbom.cdx.json") if bundle else None

    docs: dict[str, bytes] = {}
    gaps = [f"model card: {f} not stated ({CARD})" for f in HUMAN_FIELDS if _unfilled(human.get(f))]
    docs["lineage.json"] = _dump(lineage_doc)
    docs["cleaning.json"] = _dump(cleaning(ws))
    label = labeling(ws)
    docs["labeling.json"] = _dump(label)
    for template, m in label.items():
        if m.get("accepted_predictions_unreviewed"):
            gaps.append(
                f"labeling: {m['accepted_predictions_unreviewed']} {template} labels are rule"
                " predictions accepted without a person's review"
            )
        if not m.get("tasks_with_2plus_annotators"):
            gaps.append(f"labeling: no {template} task has two annotators: agreement unmeasured")
    for part in parts:
        if part.training_card is not None:
            docs[f"training/{part.name}.json"] = _dump(part.training_card)
        else:
            gaps.append(f"{part.name}: no training card at {part.export_card.get('model')}")
        if part.evaluation is not None:
            docs[f"evaluation/{part.name}.json"] = _dump(part.evaluation)
        else:
            gaps.append(f"{part.name}: not evaluated (no metrics/eval_*.json names it)")
        card = {k: v for k, v in part.export_card.items() if k != "_files"}
        docs[f"export/{part.name}.json"] = _dump(card)
        refused = [a for a in card.get("artifacts", []) if a.get("gate") not in ("pass", None)]
        gaps += [
            f"{part.name}: {a['format']} {a['quantize']} {a['target']} export gate {a['gate']}"
            for a in refused
        ]
    if bundle is not None:
        for name in ("manifest.json", "manifest.sig", "sbom.cdx.json"):
            if (bundle / name).is_file():
                docs[f"bundle/{name}"] = (bundle / name).read_bytes()
        if (bundle.parent / "installed.json").is_file():
            docs["bundle/installed.json"] = (bundle.parent / "installed.json").read_bytes()
    else:
        gaps.append("no installed bundle found: the runtime packages are not in the AI-BOM")

    doctor_log = src.doctor_log or ((log_dir() or Path("/nonexistent")) / "doctor.jsonl")
    doctor = _latest(doctor_log, "report")
    if doctor is not None:
        docs["host/doctor.json"] = _dump(doctor)
    else:
        gaps.append("no doctor report (deepseek-doctor --log FILE; --doctor-log FILE)")
    firewall_log = src.firewall_log or _default_firewall_log()
    firewall = _latest(firewall_log, "verify")
    if firewall is not None:
        docs["host/firewall.json"] = _dump(firewall)
    else:
        gaps.append("no firewall verify evidence (offline firewall verify; --firewall-log FILE)")

    logs = []
    for pattern in src.audit_logs:
        matched = sorted(glob.glob(pattern if os.path.isabs(pattern) else str(ws / pattern)))
        matched = [m for m in matched if not Path(m).suffix[1:].isdigit()]  # rotated: with theirs
        if not matched and not glob.has_magic(pattern):  # a glob may match none (yet)
            raise NotFoundError(
                f"--audit-log {pattern}: no such log",
                fix="name the server's --audit-log file (a glob is fine: 'audit-*.jsonl')",
            )
        logs += [snapshot(Path(m), "serving audit", ws, key.public_key()) for m in matched]
    for train_log in sorted((ws / LAYOUT.logs).glob("*/train.jsonl")):
        logs.append(snapshot(train_log, "training", ws, key.public_key()))
    for kind, path in (("doctor", doctor_log), ("firewall", firewall_log)):
        if path is not None and path.is_file():
            logs.append(snapshot(path, kind, ws, key.public_key()))
    for log in logs:
        if not log["verdict"]["ok"]:
            first = log["verdict"]["problems"][0]
            gaps.append(f"audit log {log['path']}: {first['where']}: {first['what']}")
        elif log["verdict"]["tail"]:
            gaps.append(f"audit log {log['path']}: {log['verdict']['tail']}")
    if not any(log["kind"] == "serving audit" for log in logs):
        gaps.append("no serving audit log named (--audit-log FILE)")
    docs["audit.json"] = _dump({"logs": logs})

    docs["model-card.cdx.json"] = _dump(ml_bom(human, parts, datasets, sbom, created, digests))
    present = set(docs) | {"model-card.html", "mapping.json", SUMS, SIG, INDEX}
    table = mapping.table(present)
    docs["mapping.json"] = _dump({"notice": mapping.NOTICE, "items": table})
    docs[ARTIFACT_SUMS] = "".join(
        f"{a['sha256']}  {a['path']}\n" for a in artifacts if not a["path"].startswith("/")
    ).encode()
    pub = public_pem(key.public_key())
    docs[PUB] = pub
    key_id = chain.key_id(key.public_key())
    index: dict[str, Any] = {
        "format": FORMAT,
        "created": created,
        "toolkit": __version__,
        "workspace": str(ws),
        "models": [_rel(p.export_dir, ws) for p in parts],
        "key": {"id": key_id, "sha256": sha256_bytes(pub), "source": str(key_path)},
        "card": human,
        "gaps": gaps,
        "files": {},  # filled below: every dossier file but index.json, index.sig, SHA256SUMS
        "artifacts": artifacts,
        "logs": [{"kind": log["kind"], "path": log["path"], "files": log["files"],
                  "signed_by_site_key": log["signed_by_site_key"]} for log in logs],
    }  # fmt: skip
    html = page.render(index, docs, table, parts, lineage_doc)
    docs["model-card.html"] = html.encode()
    index["files"] = {name: sha256_bytes(data) for name, data in sorted(docs.items())}
    raw_index = _dump(index)
    signature = sign(raw_index, key)
    with build_dir(out) as tmp:
        for name, data in {**docs, INDEX: raw_index, SIG: signature}.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        sums = "".join(
            f"{sha256_bytes(data)}  {name}\n"
            for name, data in sorted({**docs, INDEX: raw_index, SIG: signature}.items())
        )
        (tmp / SUMS).write_text(sums)
    return Built(out, len(docs) + 3, len(artifacts), len(logs), key_id, gaps, table)
