"""One public-API convention for every package: its ``__init__`` imports nothing (users import
from the modules it lists), so importing any one module loads only what that module needs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

OFFLINE = Path(__file__).resolve().parents[1] / "offline"
PACKAGES = sorted(p.parent.relative_to(OFFLINE.parent) for p in OFFLINE.rglob("__init__.py"))
HEAVY = ("fastapi", "torch", "transformers", "tvm", "deepspeed", "pyarrow", "dvc", "uvicorn")


@pytest.mark.parametrize("package", [".".join(p.parts) for p in PACKAGES])
def test_a_package_init_imports_nothing(package: str) -> None:
    init = OFFLINE.parent / package.replace(".", "/") / "__init__.py"
    tree = ast.parse(init.read_text())
    imports = [
        node
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
    ]
    if package == "offline":  # the version, and nothing else
        assert [ast.unparse(n) for n in imports] == [
            "from importlib.metadata import PackageNotFoundError, version"
        ]
        return
    if package == "offline.cli":  # the `offline` command: each group's module loads lazily
        loaded = {n.module for n in imports if isinstance(n, ast.ImportFrom)}
        assert loaded <= {"typing", "offline", "offline.errors"}, loaded
        return
    assert imports == [], f"{init} imports {[ast.unparse(n) for n in imports]}"


def test_the_light_modules_load_no_heavy_framework() -> None:
    light = ["offline.serve.settings", "offline.airgap", "offline.config", "offline.fsutil",
             "offline.firewall.policy", "offline.errors"]  # fmt: skip
    code = (
        f"import importlib, json, sys; [importlib.import_module(m) for m in {light!r}];"
        f" print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_pre_labelling_rules_do_not_load_the_sample_generator() -> None:
    code = "import sys, offline.labeling.rules; print('offline.data.sample' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_data_file_of_the_package_is_shipped_in_the_wheel() -> None:
    import fnmatch
    import tomllib

    config = tomllib.loads((OFFLINE.parent / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]
    unshipped = []
    for path in OFFLINE.rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(OFFLINE.parent)
        shipped = any(
            relative.parts[: len(package.split("."))] == tuple(package.split("."))
            and fnmatch.fnmatch(str(relative.relative_to(*package.split("."))), pattern)
            for package, patterns in globs.items()
            for pattern in patterns
        )
        if not shipped:
            unshipped.append(str(relative))
    assert unshipped == [], "add these to [tool.setuptools.package-data]"
