"""``deepseek-doctor`` (also ``offline doctor``): is this isolated host ready to train?

Exit codes: 0 every check passed (warnings allowed unless --strict), 1 a check failed,
2 the doctor itself could not run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from offline.errors import DoctorError, OfflineError

app = typer.Typer(
    help="Check this host against the bundle it was installed from.",
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
CANNOT_RUN = 2


def _write(path: Path, text: str) -> None:
    from offline.fsutil import atomic_write_text

    atomic_write_text(path, text)


@app.callback()
def doctor(
    bundle: Annotated[
        Path | None, typer.Option(help="Installed bundle (default: $DEEPSEEK_OFFLINE_BUNDLE).")
    ] = None,
    workspace: Annotated[Path | None, typer.Option(help="DVC workspace to check.")] = None,
    hostfile: Annotated[Path | None, typer.Option(help="DeepSpeed hostfile (cluster).")] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="Ray cluster to check, HEAD:6379 (auto: this host's)."),
    ] = None,
    pubkey: Annotated[
        Path | None, typer.Option(help="Trusted key (default: PREFIX/etc/trusted.pub.pem).")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option(help="Run only these groups/ids (globs allowed).")
    ] = None,
    skip: Annotated[list[str] | None, typer.Option(help="Skip these groups/ids.")] = None,
    list_checks: Annotated[bool, typer.Option("--list", help="List the checks; run none.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    html: Annotated[
        Path | None, typer.Option(help="Also write a self-contained HTML report.")
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Also write a JUnit XML report.")] = None,
    strict: Annotated[bool, typer.Option(help="Warnings fail too.")] = False,
    deep: Annotated[bool, typer.Option(help="Hash installed and bundle files.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every pass.")] = False,
    schema: Annotated[bool, typer.Option(help="Print the JSON report's schema.")] = False,
    log: Annotated[
        Path | None,
        typer.Option(
            help="Append the report to this hash-chained log (default: an installed host's"
            " PREFIX/var/log/doctor.jsonl; $DEEPSEEK_OFFLINE_LOG_DIR). offline evidence reads it."
        ),
    ] = None,
) -> None:
    """Check this host against the bundle it was installed from; every failure shows a fix."""
    from offline.cli.render import print_json
    from offline.doctor import report as render
    from offline.doctor.context import Context
    from offline.doctor.registry import all_checks, select, unknown_patterns
    from offline.doctor.runner import Report, diagnose

    if schema:
        from offline.doctor.schema import SCHEMA

        print_json(SCHEMA)
        return
    if bundle is not None and not (bundle / "manifest.json").is_file():
        raise DoctorError(
            f"--bundle {bundle}: no manifest.json there",
            fix="pass the bundle directory install-offline.sh kept: PREFIX/bundle",
        )
    context = Context.create(
        bundle,
        workspace=workspace,
        hostfile=hostfile,
        pubkey=pubkey,
        deep=deep,
        ray_address=ray_address,
    )
    checks = all_checks(context)
    unknown = unknown_patterns(checks, [*(only or []), *(skip or [])])
    if unknown:
        raise DoctorError(
            f"no check matches {', '.join(unknown)}", fix="see the ids: deepseek-doctor --list"
        )
    if list_checks:
        for check in select(checks, only or [], skip or []):
            typer.echo(f"{check.id:<40} {check.severity:<9} {check.title}")
        return
    result: Report = diagnose(context, only=only, skip=skip, strict=strict)
    _record(log, result.to_json())
    if html:
        _write(html, render.to_html(result))
    if junit:
        _write(junit, render.to_junit(result))
    if json_out:
        sys.stdout.write(render.to_json(result))
    else:
        typer.echo(render.to_text(result, verbose=verbose))
    if not result.ok:
        raise typer.Exit(1)


def _record(log: Path | None, report: dict[str, Any]) -> None:
    """The run on the doctor's chained event log (signed with the site key where one is set)."""
    from offline.audit.site import append_event, log_dir, site_key

    event = {"event": "doctor run", "summary": report.get("summary"), "report": report}
    if log is not None:
        append_event(log, event, site_key())
        return
    where = log_dir()
    if where is None:
        return
    try:
        append_event(where / "doctor.jsonl", event, site_key())
    except OSError as exc:  # the default place, not writable for this user: say so, go on
        typer.echo(f"note: the report was not logged to {where}/doctor.jsonl: {exc}", err=True)


def main() -> None:
    """The ``deepseek-doctor`` console script."""
    try:
        app(prog_name="deepseek-doctor")
    except OfflineError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        if exc.fix:
            typer.echo(f"  fix: {exc.fix}", err=True)
        sys.exit(CANNOT_RUN)
    except Exception as exc:  # the doctor itself broke: say so, exit 2
        import traceback

        traceback.print_exc()
        typer.echo(f"deepseek-doctor could not run: {exc!r}", err=True)
        sys.exit(CANNOT_RUN)
