"""``offline init``: a git + DVC workspace whose pipeline runs with no network.

The workspace holds ``params.yaml`` (every data parameter with its default), ``dvc.yaml`` (the
stages that exist), a local plots template (DVC's default page loads Vega from a CDN), a DVC
remote (a local or NAS path) and a ``.gitignore``. DVC's analytics and update check are off in the
repo config, and its site cache lives inside the workspace (``.dvc/config.local``), which avoids
permission trouble with the system-wide default on shared hosts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from offline import airgap
from offline.audit.site import WORKSPACE_KEY, create_workspace_key
from offline.data.layout import LAYOUT, TEMPLATES, render
from offline.data.params import default_params, dump_params
from offline.errors import ConfigError, ToolError
from offline.fsutil import atomic_write_text

PLOTS_TEMPLATE = "plots/plots.html"  # relative to .dvc/, where DVC resolves it
PLOT_ASSETS = ("plots.html", "offline_bar.json", "offline_line.json", "offline_confusion.json")
SITE_CACHE = ".dvc/site-cache"
DEFAULT_REMOTE = "storage"

# Environment for every DVC process we start (and the stages it runs): offline, and no
# update check.
OFFLINE_ENV = {**airgap.OFFLINE_ENV, "DVC_NO_UPDATER": "1"}

PARAMS_HEADER = """\
# deepseek-offline workspace parameters. Every key is listed with its default; DVC tracks the
# sections each stage reads (see dvc.yaml), so changing one re-runs only what depends on it.
# Paths are relative to this directory. datasets.<name>.encoding: utf-8 (a BOM is fine) or the
# file's codec (gb18030, big5, cp1252, utf-16, ...).
"""

GITIGNORE = """\
# DVC keeps pipeline outputs out of git (it writes data/.gitignore itself).
/storage/
/.dvc/site-cache/
# Label Studio's database, secret (0600) and log: never in git.
/.labelstudio/
# Training checkpoints and logs stay local; the trained model is a DVC output.
/checkpoints/
/logs/
# The site key that signs the evidence dossier and the logs' checkpoints: never in git.
/.offline/
__pycache__/
*.pyc
.venv/
"""


def stages() -> dict[str, Any]:
    """The ``dvc.yaml`` stages: validate -> clean -> label -> split -> init_model -> train
    (SFT and classifier) -> export -> evaluate (``assets/dvc.yaml``, paths from the layout)."""
    data: dict[str, Any] = yaml.safe_load(render("dvc.yaml"))
    return data


@dataclass
class InitReport:
    """What ``offline init`` made and what to run next."""

    path: Path
    remote: str
    files: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def run_tool(args: list[str], cwd: Path) -> str:
    """Run git or DVC in ``cwd`` with the offline environment; a failure is a ToolError."""
    env = {**os.environ, **OFFLINE_ENV}
    try:
        proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ToolError(
            f"{args[0]} is not installed",
            fix=f"install {args[0]} (Debian: apt-get install {args[0]})",
        ) from None
    if proc.returncode != 0:
        shown = " ".join(args[:4])
        raise ToolError(f"`{shown}` failed in {cwd}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def dvc_command() -> list[str]:
    """DVC from the interpreter running the toolkit, so the installed env's DVC is used."""
    return [sys.executable, "-m", "dvc"]


def _remote_url(directory: Path, remote: Path | None) -> str:
    if remote is None:
        return f"../{DEFAULT_REMOTE}"  # relative to .dvc/, i.e. <workspace>/storage
    return str(remote.expanduser().resolve())


def _write_config(directory: Path, remote_url: str) -> None:
    dvc = directory / ".dvc"
    atomic_write_text(
        dvc / "config",
        "[core]\n"
        "    remote = storage\n"
        "    analytics = false\n"
        "    check_update = false\n"
        "['remote \"storage\"']\n"
        f"    url = {remote_url}\n"
        "[plots]\n"
        f"    html_template = {PLOTS_TEMPLATE}\n",
    )
    # config.local is per machine and not committed: the absolute path belongs there.
    site = (directory / SITE_CACHE).resolve()
    atomic_write_text(dvc / "config.local", f"[core]\n    site_cache_dir = {site}\n")


def _write_files(directory: Path) -> list[str]:
    params = yaml.safe_dump(dump_params(default_params()), sort_keys=False, allow_unicode=True)
    files = {
        "params.yaml": PARAMS_HEADER + params,
        ".gitignore": GITIGNORE,
        **{name: render(name) for name in TEMPLATES},  # dvc.yaml and the training configs
    }
    # The page and the Vega-Lite templates: none names a URL, so nothing is fetched to render.
    assets = resources.files("offline.data").joinpath("assets")
    # the model card's human part, for the evidence stage (offline evidence build)
    files["model-card.yaml"] = assets.joinpath("model-card.yaml").read_text(encoding="utf-8")
    for name in PLOT_ASSETS:
        files[f".dvc/plots/{name}"] = assets.joinpath(name).read_text(encoding="utf-8")
    for rel, text in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / rel, text)
    (directory / LAYOUT.raw).mkdir(parents=True, exist_ok=True)
    (directory / LAYOUT.metrics).mkdir(exist_ok=True)
    return sorted(files)


def init(directory: Path, remote: Path | None = None) -> InitReport:
    """Create a workspace in ``directory`` (new or empty).

    Args:
        directory: Where to create it.
        remote: A local or NAS directory for ``dvc push``; default ``<directory>/storage``.

    Raises:
        ConfigError: ``directory`` already holds a workspace or other files.
        ToolError: git or DVC is missing or failed.
    """
    if directory.exists() and any(directory.iterdir()):
        what = "a workspace" if (directory / ".dvc").exists() else "files"
        raise ConfigError(
            f"{directory} already holds {what}",
            fix="choose a new or empty directory (`offline init NEWDIR`)",
        )
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        run_tool(["git", "init", "-q"], directory)
        run_tool([*dvc_command(), "init", "-q"], directory)
        url = _remote_url(directory, remote)
        _write_config(directory, url)
        files = _write_files(directory)
        if create_workspace_key(directory) is not None:
            files.append(WORKSPACE_KEY)
    except BaseException:
        # Nothing half-made: remove what this call created.
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            for child in directory.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    if remote is not None:
        Path(url).mkdir(parents=True, exist_ok=True)
    return InitReport(
        path=directory,
        remote=url if remote is not None else str(directory / DEFAULT_REMOTE),
        files=files,
        next_steps=[
            f"cd {directory}",
            "offline data sample --out data/raw",
            "dvc repro",
            "dvc push",
        ],
    )
