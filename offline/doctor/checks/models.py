"""Doctor checks: the bundle's models load their config and weights; the DVC workspace."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from offline.doctor.context import Context
from offline.doctor.host import run
from offline.doctor.model import Check, Result, passed, problem, skipped
from offline.errors import IntegrityError


def _model(name: str, directory: Path) -> Callable[[Context], Result]:
    def run(context: Context) -> Result:
        from offline.bundle.models import check_safetensors

        if not directory.is_dir():
            return problem(f"{directory} is missing", "re-run install-offline.sh")
        config = directory / "config.json"
        try:
            model_type = (
                json.loads(config.read_text()).get("model_type") if config.is_file() else None
            )
        except ValueError as exc:
            return problem(f"{config} is not valid JSON ({exc})", "re-run install-offline.sh")
        weights = sorted(directory.rglob("*.safetensors"))
        try:
            tensors = sum(check_safetensors(w) for w in weights)
        except IntegrityError as exc:
            return problem(exc.message, "re-run install-offline.sh; the bundle's copy is checked")
        return passed(
            f"{name}: {model_type or 'no config.json'}, {len(weights)} safetensors files",
            model_type=model_type,
            weights=len(weights),
            tensors=tensors,
        )

    return run


def workspace(context: Context) -> Result:
    if context.workspace is None:
        return skipped("no workspace given (--workspace DIR)")
    if not (context.workspace / ".dvc").is_dir():
        return problem(
            f"{context.workspace} is not a DVC workspace", f"offline init {context.workspace}"
        )
    env = {**context.environ, "DVC_NO_ANALYTICS": "1"}
    cmd = [context.python, "-m", "dvc", "status", "--quiet"]
    proc = run(cmd, 60, env, cwd=context.workspace)
    if proc.code is None or proc.code == 127:
        why = proc.err or "no answer in 60 s"
        return problem(f"dvc status could not run: {why}", "check the DVC install (fw.dvc)")
    if proc.code == 0:
        return passed("dvc status: pipeline and data up to date")
    return problem(
        "dvc status reports changes: " + (proc.out or proc.err).strip()[:300],
        f"cd {context.workspace} && dvc repro",
    )


def checks(context: Context) -> list[Check]:
    found = [Check("models.workspace", "models", "DVC workspace status", workspace, "warning", 70)]
    if context.bundle is not None:
        for entry in (context.manifest or {}).get("models", []):
            name = entry.get("name", "?")
            found.append(
                Check(
                    f"models.{name}",
                    "models",
                    f"model {name} loads",
                    _model(name, context.bundle / entry.get("path", f"models/{name}")),
                    "critical",
                    60,
                )
            )
    return found
