"""Every config of the toolkit reports its problems the same way: one ConfigError naming the file,
``N problem(s)``, one ``where: what`` line each, an unknown key as an unknown key."""

from __future__ import annotations

import shutil
import string
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offline.bundle.spec import load_spec
from offline.cli.serve import settings_from
from offline.config import apply_overrides
from offline.data.params import default_params, dump_params, load_params
from offline.errors import ConfigError
from offline.labeling.templates import template_names
from offline.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
KEYS = st.text(alphabet=string.ascii_lowercase + "_", min_size=3, max_size=12).map(
    lambda k: f"zz_{k}"  # never a real key
)


def _toml_keys(extra: dict[str, object]) -> str:
    return "".join(f"{key} = {value!r}\n" for key, value in extra.items())


def _spec(root: Path, extra: dict[str, object]) -> Path:
    text = (REPO / "bundle" / "bundle.toml").read_text()
    path = root / "bundle.toml"
    path.write_text(text.replace("[bundle]\n", f"[bundle]\n{_toml_keys(extra)}", 1))
    for name in (REPO / "bundle").iterdir():  # what the spec points at, beside it
        if name.is_file() and name.name != "bundle.toml":
            shutil.copy(name, root / name.name)
    return path


def _train(root: Path, extra: dict[str, object]) -> Path:
    (root / "models/tiny").mkdir(parents=True, exist_ok=True)
    (root / "models/tiny/config.json").write_text("{}")
    for side in ("train", "validation"):
        split = root / f"data/split/tickets/{side}.parquet"
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_bytes(b"")
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump({"model": "models/tiny", **extra}))
    return path


def _params(root: Path, extra: dict[str, object]) -> Path:
    data = dump_params(default_params())
    data["split"].update(extra)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _labeling(root: Path, extra: dict[str, object]) -> Path:
    target = root / "labeling"
    shutil.copytree(REPO / "labeling", target, dirs_exist_ok=True)
    contract = target / "templates.toml"
    text = contract.read_text()
    contract.write_text(text.replace("[ner]\n", f"[ner]\n{_toml_keys(extra)}", 1))
    return contract


CASES: dict[
    str, tuple[Callable[[Path, dict[str, object]], Path], Callable[[Path], object], str]
] = {
    "bundle spec": (_spec, load_spec, "bundle."),
    "train.yaml": (_train, load_config, ""),
    "params.yaml": (_params, load_params, "split."),
    "labeling contract": (_labeling, lambda p: template_names(p.parent), ""),
}


@pytest.mark.parametrize("case", sorted(CASES))
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=st.lists(KEYS, min_size=1, max_size=3, unique=True))
def test_unknown_keys_are_listed_the_same_way_in_every_config(
    tmp_path_factory: pytest.TempPathFactory, case: str, keys: list[str]
) -> None:
    write, load, prefix = CASES[case]
    root = tmp_path_factory.mktemp("cfg")
    load(write(root, {}))  # the untouched config loads
    path = write(root, dict.fromkeys(keys, 1))
    with pytest.raises(ConfigError) as err:
        load(path)
    message = err.value.message
    assert message.startswith(str(path)), message
    assert f"has {len(keys)} problem(s):\n" in message, message
    for key in keys:
        assert f"\n  {prefix}{key}: unknown key" in message or f"{key}: unknown key" in message
    assert err.value.fix, "every config error says how to fix it"


def test_serve_settings_use_the_same_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFFLINE_SERVE_MODEL", raising=False)
    with pytest.raises(ConfigError) as err:
        settings_from({"max_batch": 0, "port": "http"})
    assert "has 3 problem(s):\n" in err.value.message
    for line in ("  model: Field required", "  max_batch: Input should be greater", "  port: "):
        assert f"\n{line}" in err.value.message


def test_overrides_reach_nested_keys_and_bad_ones_are_named() -> None:
    data = apply_overrides({"lora": {"r": 4}}, ["lora.r=8", "lr=0.001", "new.deep.key=[1, 2]"])
    assert data == {"lora": {"r": 8}, "lr": 0.001, "new": {"deep": {"key": [1, 2]}}}
    with pytest.raises(ConfigError, match="'lr' is not key=value"):
        apply_overrides({}, ["lr"])
    with pytest.raises(ConfigError, match="'r' is not a section"):
        apply_overrides({"r": 4}, ["r.x=1"])


def test_syntax_errors_name_the_file(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "train.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"train\.yaml is not valid YAML"):
        load_config(bad_yaml)
    not_utf8 = tmp_path / "params.yaml"
    not_utf8.write_bytes(b"datasets: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"params\.yaml is not UTF-8"):
        load_params(not_utf8)
