from pathlib import Path

import pytest

from offline.bundle.spec import load_spec, parse_spec
from offline.errors import ConfigError, NotFoundError

REPO = Path(__file__).resolve().parents[2]

GOOD = """
[bundle]
name = "b"
version = "1"
[target]
platforms = ["manylinux_2_28_x86_64"]
[[env]]
name = "toolkit"
requirements = "req.in"
"""


def test_default_specs_are_valid() -> None:
    for name in ("bundle.toml", "cuda.toml", "edge-aarch64.toml"):
        loaded = load_spec(REPO / "bundle" / name)
        assert loaded.spec.target.python == "3.11"
        for env in loaded.spec.env:
            assert env.requirements is None or loaded.resolve(env.requirements).is_file()


def test_good_spec_resolves_relative_paths(tmp_path: Path) -> None:
    loaded = parse_spec(GOOD, tmp_path / "spec.toml")
    env = loaded.spec.env[0]
    assert env.requirements is not None
    assert loaded.resolve(env.requirements) == tmp_path / "req.in"
    assert loaded.spec.bootstrap.requirements == ["pip", "setuptools", "wheel"]


def test_every_unknown_key_is_listed_at_once(tmp_path: Path) -> None:
    text = GOOD.replace('version = "1"', 'version = "1"\ncolour = "red"') + (
        '[[image]]\nref = "r/x:1"\nplatfrom = "linux/amd64"\n[mystery]\nx = 1\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_spec(text, tmp_path / "spec.toml")
    message = str(info.value)
    for key in ("bundle.colour", "image[0].platfrom", "mystery"):
        assert key in message
    assert info.value.exit_code == 3


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('[[model]]\nname = "m"\n', "exactly one of 'path' or 'hub'"),
        ('[[files]]\nsrc = "a"\ndest = "../etc"\n', "without '..'"),
        ('[[image]]\nref = "x"\nplatform = "windows/amd64"\n', "not a platform"),
    ],
)
def test_invalid_values_name_the_item(tmp_path: Path, snippet: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_spec(GOOD + snippet, tmp_path / "s.toml")


def test_foreign_platform_tag_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="macosx_11_0_arm64"):
        parse_spec(GOOD.replace("manylinux_2_28_x86_64", "macosx_11_0_arm64"), tmp_path / "s")


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_spec("[bundle\n", tmp_path / "s.toml")
    with pytest.raises(NotFoundError, match="not found"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("legacy", "pep600"),
    [
        ("manylinux2014_x86_64", "manylinux_2_17_x86_64"),
        ("manylinux2014_aarch64", "manylinux_2_17_aarch64"),
        ("manylinux2010_x86_64", "manylinux_2_12_x86_64"),
        ("manylinux1_x86_64", "manylinux_2_5_x86_64"),
    ],
)
def test_legacy_platform_aliases_mean_their_pep600_tags(
    tmp_path: Path, legacy: str, pep600: str
) -> None:
    loaded = parse_spec(GOOD.replace("manylinux_2_28_x86_64", legacy), tmp_path / "s.toml")
    assert loaded.spec.target.platforms == [pep600]
    assert loaded.spec.target.platforms_as_written == [legacy]


def test_pep600_tags_are_kept_as_written(tmp_path: Path) -> None:
    target = parse_spec(GOOD, tmp_path / "s.toml").spec.target
    assert target.platforms == ["manylinux_2_28_x86_64"]
    assert target.platforms_as_written is None
    assert "platforms_as_written" not in target.model_dump(exclude_none=True)
