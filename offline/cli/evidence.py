"""``offline evidence``: build and check the signed dossier an auditor reads."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from offline.cli.render import print_json

app = typer.Typer(
    help="The signed evidence dossier: model card, AI-BOM, lineage, logs.", no_args_is_help=True
)


def _out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command("build")
def build_cmd(
    model: Annotated[
        list[Path],
        typer.Option("--model", help="An `offline export` directory (repeatable)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="The dossier directory (replaced).")] = Path(
        "evidence"
    ),
    workspace: Annotated[
        Path, typer.Option("--workspace", help="The pipeline workspace (default: here).")
    ] = Path("."),
    card: Annotated[
        Path | None,
        typer.Option("--card", help="The model card YAML you fill in (default model-card.yaml)."),
    ] = None,
    audit_log: Annotated[
        list[str] | None,
        typer.Option("--audit-log", help="A server's --audit-log file or glob (repeatable)."),
    ] = None,
    doctor_log: Annotated[
        Path | None,
        typer.Option(help="deepseek-doctor's --log (default: the install's var/log/doctor.jsonl)."),
    ] = None,
    firewall_log: Annotated[
        Path | None,
        typer.Option(help="The firewall's event log (default: its state dir's events.jsonl)."),
    ] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(help="The installed bundle (default: this install's PREFIX/bundle)."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            help="The site key (default $DEEPSEEK_OFFLINE_SITE_KEY, .offline/site-key.pem).",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Collect the model card, AI-BOM, lineage, cleaning/labeling/training/evaluation/export
    summaries, bundle, doctor, firewall and audit evidence; link them by sha256; sign."""
    from offline.evidence.build import Sources, build

    built = build(
        Sources(
            workspace=workspace,
            models=model,
            out=out,
            card=card,
            audit_logs=audit_log or [],
            doctor_log=doctor_log,
            firewall_log=firewall_log,
            bundle=bundle,
            key=key,
        )
    )
    counts: dict[str, int] = {}
    for row in built.mapping:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    if json_out:
        print_json(
            {
                "out": str(built.out),
                "files": built.files,
                "artifacts": built.artifacts,
                "logs": built.logs,
                "key": built.key_id,
                "gaps": built.gaps,
                "mapping": counts,
            }
        )
        return
    _out(
        f"dossier {built.out}: {built.files} files, {built.artifacts} artifacts named by sha256,"
        f" {built.logs} audit logs; signed by site key {built.key_id}"
    )
    _out("mapping: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for gap in built.gaps:
        _out(f"gap  {gap}")


@app.command("verify")
def verify_cmd(
    dossier: Annotated[Path, typer.Argument(help="The dossier directory.")] = Path("evidence"),
    pubkey: Annotated[
        Path | None,
        typer.Option("--pubkey", help="The site's public key (PEM), to anchor the signature."),
    ] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(help="Where the artifacts are (default: the dossier's workspace)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the signature, every dossier file, every artifact it names that is present, the
    lineage against dvc.lock and every audit chain. Exit 1 naming what differs."""
    from offline.evidence.verify import verify

    report = verify(dossier, pubkey, workspace)
    if json_out:
        print_json(report.as_dict())
    else:
        for problem in report.problems:
            _out(f"DIFFERS  {problem.where}: {problem.what}")
        if report.ok:
            anchor = "the key given" if report.anchored else "its own key (pass --pubkey to anchor)"
            _out(
                f"dossier intact: signature valid ({report.key_id}, checked with {anchor}),"
                f" {report.files} files, {report.artifacts} artifacts re-hashed,"
                f" {report.logs} audit logs checked"
                + (f", {len(report.absent)} not present here" if report.absent else "")
            )
        for note in report.notes:
            _out(f"note  {note}")
    if not report.ok:
        raise typer.Exit(1)
