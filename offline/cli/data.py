"""``offline init`` and ``offline data``: workspace, sample data, validate, clean, split."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from offline.cli.render import print_json

app = typer.Typer(
    help="Versioned, streaming, auditable data preparation (DVC stages).",
    no_args_is_help=True,
)

Workspace = Annotated[
    Path, typer.Option("--workspace", "-w", help="The workspace (default: current directory).")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def init_cmd(
    directory: Annotated[Path, typer.Argument(help="New or empty directory for the workspace.")],
    remote: Annotated[
        Path | None,
        typer.Option(
            "--remote", help="Local or NAS directory for `dvc push` (default DIR/storage)."
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Create a git + DVC workspace: params.yaml, dvc.yaml, remote, offline plots template."""
    from offline.data.workspace import init

    report = init(directory, remote)
    if json_out:
        print_json({"path": str(report.path), "remote": report.remote, "files": report.files})
        return
    _out(f"workspace ready: {report.path} (DVC remote: {report.remote})")
    _out("next:\n" + "\n".join(f"  {step}" for step in report.next_steps))


@app.command("sample")
def sample_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory for the sample files.")],
    rows: Annotated[int, typer.Option("--rows", min=100, help="Tickets to generate.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    json_out: Json = False,
) -> None:
    """Generate the embedded bilingual support dataset (planted duplicates, PII, bad rows)."""
    from offline.data.sample.files import generate

    manifest = generate(out, rows=rows, seed=seed)
    if json_out:
        print_json(manifest.to_dict())
        return
    _out(f"wrote sample data to {out} (answer key: {out / 'SAMPLE.json'})")


def _checks_table(report: Any) -> None:
    for check in report.checks:
        mark = "ok  " if check.ok else "FAIL"
        where = f"{check.dataset:<16} {check.name:<24}"
        _out(f"  {mark} {where} {check.value:>10.4g}  limit {check.limit:g}")


@app.command("params")
def params_cmd() -> None:
    """Print every data parameter with its default (what `offline init` writes)."""
    import yaml

    from offline.data.params import default_params, dump_params

    sys.stdout.write(yaml.safe_dump(dump_params(default_params()), sort_keys=False))


@app.command("validate")
def validate_cmd(workspace: Workspace = Path("."), json_out: Json = False) -> None:
    """Schema and quality checks against params thresholds (writes metrics/validate.json)."""
    from offline.data.validate import validate

    report = validate(workspace)
    if json_out:
        print_json(report.as_dict())
        return
    _checks_table(report)
    _out(f"validate: {len(report.checks)} checks passed")


def _clean_summary(metrics: dict[str, Any]) -> None:
    for name, d in metrics["datasets"].items():
        kept = f"{d['rows_out']} kept, {d['rejected']} rejected"
        _out(f"{name} ({d['kind']}): {d['rows_in']} in, {kept}")
        for step, s in d["steps"].items():
            if s["rejected"] or s["counts"]:
                reasons = ", ".join(f"{k} {v}" for k, v in s["reasons"].items())
                counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items())
                detail = "; ".join(x for x in (reasons, counts) if x)
                _out(f"  {step:<13} -{s['rejected']:<6} {detail}")
    if metrics["pii"]:
        _out("pii found: " + ", ".join(f"{k} {v}" for k, v in metrics["pii"].items()))
    t = metrics["throughput"]
    rate = f"{t['seconds']} s ({t['docs_per_s']} docs/s)"
    _out(f"clean: {metrics['totals']['rows_out']} rows kept in {rate}")


@app.command("clean")
def clean_cmd(
    workspace: Workspace = Path("."),
    json_out: Json = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="run on the Ray cluster at HOST:PORT (auto: the one this host is in), "
            "whatever clean.executor says",
        ),
    ] = None,
) -> None:
    """Stream every dataset through the cleaning steps; ledger of every rejected row."""
    from offline.data.clean import clean

    report = clean(workspace, ray_address=ray_address)
    if json_out:
        print_json({**report.metrics(), "cluster": report.cluster})
        return
    _clean_summary(report.metrics())
    if report.cluster is not None:
        c = report.cluster
        _out(
            f"on Ray at {c['address']}: {c['cpus']} CPUs, {c['batches']} batches, "
            f"{c['sent'] / 1e6:.1f} MB sent, {c['received'] / 1e6:.1f} MB back"
        )


@app.command("split")
def split_cmd(workspace: Workspace = Path("."), json_out: Json = False) -> None:
    """Deterministic train/validation/test split; duplicates stay on one side."""
    from offline.data.split import split

    report = split(workspace)
    if json_out:
        print_json(report.as_dict())
        return
    for name, counts in report.counts.items():
        _out(f"{name}: " + ", ".join(f"{side} {n}" for side, n in counts.items()))
