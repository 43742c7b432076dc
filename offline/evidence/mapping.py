"""Which file of a dossier answers which item of the EU AI Act's Annex IV (and Art. 12) and of
MLPS 2.0 (GB/T 22239-2019) level 3's audit items.

A mapping table, stated as such: the items are summarised in this project's own words, the
regulation's text governs, and it is not legal advice. An item no file answers is listed as
"not covered" with what the organisation has to supply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NOTICE = (
    "A mapping table from regulatory items to the files of this dossier, to help an auditor find"
    " the evidence. Item titles are summaries; the regulation's text governs. Not legal advice."
)


@dataclass(frozen=True)
class Item:
    framework: str
    ref: str
    title: str
    files: tuple[str, ...]  # dossier files (prefixes: "training/" matches every file under it)
    note: str = ""


ANNEX_IV = "EU AI Act (Regulation (EU) 2024/1689), Annex IV"
ART_12 = "EU AI Act, Art. 12 (record-keeping)"
MLPS = "MLPS 2.0 level 3 (GB/T 22239-2019)"

# fmt: off
ITEMS: tuple[Item, ...] = (
    Item(
        ANNEX_IV,
        "1",
        "General description: intended purpose, provider, version, software and"
        " hardware it runs with",
        ("model-card.cdx.json", "model-card.html", "bundle/sbom.cdx.json", "bundle/manifest.json"),
    ),
    Item(
        ANNEX_IV,
        "2(a)",
        "Development methods and steps, pre-trained models and tools used",
        ("lineage.json", "training/", "model-card.cdx.json"),
    ),
    Item(
        ANNEX_IV,
        "2(b)",
        "Design specifications: logic, key choices, what is optimised",
        ("training/", "export/"),
    ),
    Item(
        ANNEX_IV,
        "2(c)",
        "System architecture and computational resources",
        ("training/", "host/doctor.json", "bundle/manifest.json"),
    ),
    Item(
        ANNEX_IV,
        "2(d)",
        "Data requirements: provenance, scope, selection, labelling, cleaning",
        ("lineage.json", "cleaning.json", "labeling.json", "model-card.cdx.json"),
    ),
    Item(
        ANNEX_IV,
        "2(e)",
        "Human oversight measures",
        ("model-card.cdx.json",),
        "only what model-card.yaml states (human_oversight); the procedures are the operator's",
    ),
    Item(
        ANNEX_IV,
        "2(f)",
        "Pre-determined changes to the system and its performance",
        (),
        "not covered: the provider describes planned changes",
    ),
    Item(
        ANNEX_IV,
        "2(g)",
        "Validation and testing: data, metrics, test logs, signed reports",
        ("evaluation/", "export/", "training/"),
    ),
    Item(
        ANNEX_IV,
        "2(h)",
        "Cybersecurity measures",
        ("host/firewall.json", "host/doctor.json", "bundle/manifest.json", "audit.json"),
    ),
    Item(
        ANNEX_IV,
        "3",
        "Monitoring, functioning and control: capabilities, limits, accuracy per"
        " group, foreseeable unintended outcomes",
        ("model-card.cdx.json", "evaluation/"),
    ),
    Item(
        ANNEX_IV,
        "4",
        "Appropriateness of the performance metrics",
        ("evaluation/", "export/"),
        "the figures and the export gate's thresholds; why they fit the purpose is the provider's",
    ),
    Item(
        ANNEX_IV,
        "5",
        "Risk management system (Art. 9)",
        ("model-card.cdx.json",),
        "only the risks model-card.yaml lists; the risk management system is the provider's",
    ),
    Item(
        ANNEX_IV,
        "6",
        "Relevant changes through the lifecycle",
        ("lineage.json", "training/", "audit.json"),
    ),
    Item(
        ANNEX_IV,
        "7",
        "Harmonised standards or other specifications applied",
        (),
        "not covered: the provider lists the standards applied",
    ),
    Item(ANNEX_IV, "8", "EU declaration of conformity", (), "not covered: the provider issues it"),
    Item(
        ANNEX_IV,
        "9",
        "Post-market monitoring plan (Art. 72)",
        ("audit.json",),
        "the serving audit logs are its input; the plan itself is the provider's",
    ),
    Item(
        ART_12,
        "12(1)-(3)",
        "Automatic recording of events over the system's lifetime",
        ("audit.json",),
    ),
    Item(
        MLPS,
        "8.1.4.3 a)",
        "Security audit enabled, covering every user, important user actions and security events",
        ("audit.json", "host/firewall.json"),
    ),
    Item(
        MLPS,
        "8.1.4.3 b)",
        "Audit records hold date and time, user, event type, outcome",
        ("audit.json",),
    ),
    Item(
        MLPS,
        "8.1.4.3 c)",
        "Audit records protected against unexpected deletion, change or overwrite, and backed up",
        ("audit.json",),
        "hash chains with signed checkpoints show a change; the backups are the operator's",
    ),
    Item(
        MLPS,
        "8.1.4.3 d)",
        "The audit process protected against unauthorised interruption",
        ("audit.json",),
        "a log that stopped without its closing checkpoint is reported; preventing it is the"
        " host's (service supervision)",
    ),
    Item(
        MLPS,
        "8.1.3.5",
        "Security audit at the area boundary (network egress)",
        ("host/firewall.json",),
    ),
    Item(
        MLPS,
        "8.1.4.8",
        "Integrity of important data in storage (checksums, cryptography)",
        ("SHA256SUMS", "index.sig", "bundle/manifest.json"),
    ),
    Item(
        MLPS,
        "8.1.5.4 c)-d)",
        "Audit data collected centrally; kept as long as the law requires"
        " (Cybersecurity Law Art. 21: at least six months)",
        ("audit.json",),
        "retention is the operator's; `offline audit verify --partial` checks what is left after"
        " old files are removed",
    ),
)


def table(present: set[str]) -> list[dict[str, Any]]:
    """Each item with the dossier files that answer it and whether they are all there."""
    rows = []
    for item in ITEMS:
        found = sorted(
            f
            for f in present
            for want in item.files
            if f == want or (want.endswith("/") and f.startswith(want))
        )
        wanted = [w for w in item.files if not any(f == w or f.startswith(w) for f in found)]
        if not item.files:
            status = "not covered"
        elif not found:
            status = "missing"
        elif wanted or item.note:
            status = "partial"
        else:
            status = "answered"
        rows.append(
            {
                "framework": item.framework,
                "item": item.ref,
                "title": item.title,
                "files": sorted(set(found)),
                "status": status,
                "note": item.note,
            }
        )
    return rows
