"""A model's include/exclude patterns: the bundle carries exactly the files they choose."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from offline.bundle.build import build
from offline.bundle.models import collect_model
from offline.bundle.patterns import compile_pattern, pattern_problem, select
from offline.bundle.spec import parse_spec
from offline.bundle.split import FAT32_MAX_FILE, fat32_warning, parse_size
from offline.bundle.verify import verify_bundle
from offline.errors import ConfigError, IntegrityError
from tests.fixtures.pyindex import PyIndex
from tests.fixtures.specs import SpecFactory, write_safetensors

# A checkpoint as many hub repos ship it: safetensors beside the same weights as pickles.
REPO_FILES = (
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "original/consolidated.00.pth",
    "original/params.json",
)


def _model_repo(directory: Path, files: tuple[str, ...] = REPO_FILES) -> Path:
    for rel in files:
        path = directory / rel
        if rel.endswith(".safetensors"):
            write_safetensors(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x80\x04pickle" if rel.endswith((".bin", ".pth")) else b"{}")
    return directory


def _model_spec(make_spec: SpecFactory, lines: str, files: tuple[str, ...] = REPO_FILES) -> Path:
    spec = make_spec(extra=f'[[model]]\nname = "ckpt"\npath = "ckpt"\n{lines}\n')
    _model_repo(spec.parent / "ckpt", files)
    return spec


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize(
    "lines",
    [
        'exclude = ["*.bin", "original/**"]',
        'include = ["*.json", "*.safetensors"]\nexclude = ["original"]',
    ],
)
def test_bundle_carries_exactly_the_chosen_files(
    make_spec: SpecFactory, tmp_path: Path, signing_key: tuple[Path, Path], lines: str
) -> None:
    spec = _model_spec(make_spec, lines)
    out = tmp_path / "out"
    result = build(spec, out, key=signing_key[0], cache_dir=tmp_path / "cache")

    assert _files_under(out / "models" / "ckpt") == {"config.json", "model.safetensors"}
    assert not [p for p in _files_under(out) if p.endswith((".bin", ".pth"))]
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["models"]
    toml = parse_spec(spec.read_text(), spec).spec.model[0]
    assert (entry["include"], entry["exclude"]) == (toml.include, toml.exclude)
    assert entry["taken"] == ["config.json", "model.safetensors"] and entry["files"] == 2
    assert entry["left_out"] == [
        "original/consolidated.00.pth",
        "original/params.json",
        "pytorch_model.bin",
    ]
    listed = {f["path"] for f in manifest["files"] if f["path"].startswith("models/")}
    assert listed == {"models/ckpt/config.json", "models/ckpt/model.safetensors"}
    assert result.warnings == []

    sums = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out)
    assert sums.returncode == 0
    assert verify_bundle(out, signing_key[1]).ok


def test_no_patterns_take_every_file(make_spec: SpecFactory, tmp_path: Path) -> None:
    spec = _model_spec(make_spec, "allow_pickle = true")
    build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert _files_under(tmp_path / "out" / "models" / "ckpt") == set(REPO_FILES)
    (entry,) = json.loads((tmp_path / "out" / "manifest.json").read_text())["models"]
    assert entry["taken"] == sorted(REPO_FILES) and entry["left_out"] == []


def test_pattern_matching_nothing_stops_before_anything_is_written(
    make_spec: SpecFactory, tmp_path: Path, pyindex: PyIndex
) -> None:
    spec = _model_spec(make_spec, 'include = ["*.json", "modle.safetensors"]\nexclude = ["*.bim"]')
    pyindex.requests.clear()
    with pytest.raises(ConfigError) as info:
        build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "'ckpt'" in message
    assert "include 'modle.safetensors'" in message and "exclude '*.bim'" in message
    assert "include '*.json'" not in message
    assert info.value.exit_code == 3 and info.value.fix
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert pyindex.requests == []  # stopped before resolving or downloading anything


def test_typo_keeps_the_previous_bundle(make_spec: SpecFactory, tmp_path: Path) -> None:
    out, cache = tmp_path / "out", tmp_path / "cache"
    build(_model_spec(make_spec, 'exclude = ["*.bin", "original/**"]'), out, cache_dir=cache)
    before = {p: (out / p).read_bytes() for p in _files_under(out)}
    with pytest.raises(ConfigError, match="exclude 'orignal/'"):
        build(_model_spec(make_spec, 'exclude = ["*.bin", "orignal/"]'), out, cache_dir=cache)
    assert {p: (out / p).read_bytes() for p in _files_under(out)} == before


def test_patterns_that_leave_no_weights_are_an_error(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    spec = _model_spec(make_spec, 'exclude = ["*.safetensors", "*.bin", "original/*.pth"]')
    with pytest.raises(ConfigError, match="no weights file") as info:
        build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert "model.safetensors" in str(info.value) and "'ckpt'" in str(info.value)
    assert not (tmp_path / "out").exists()


def test_pickle_refusal_points_at_exclude_when_safetensors_are_there(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    spec = _model_spec(make_spec, 'exclude = ["original/**"]')
    with pytest.raises(IntegrityError) as info:
        build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert "pytorch_model.bin" in info.value.message
    assert info.value.fix and 'exclude = ["*.bin"]' in info.value.fix


@pytest.mark.slow
def test_pickle_only_model_builds_with_a_warning(make_spec: SpecFactory, tmp_path: Path) -> None:
    files = ("config.json", "pytorch_model.bin", "original/consolidated.00.pth")
    spec = _model_spec(make_spec, 'allow_pickle = true\nexclude = ["original/"]', files)
    result = build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    (warning,) = result.warnings
    assert "'ckpt'" in warning and "pytorch_model.bin" in warning and "safetensors" in warning
    assert "consolidated" not in warning
    assert result.to_json()["warnings"] == [warning]


def test_bad_patterns_are_all_listed_when_the_spec_loads(tmp_path: Path) -> None:
    text = """
[bundle]
name = "b"
version = "1"
[target]
platforms = ["manylinux_2_28_x86_64"]
[[model]]
name = "one"
path = "one"
include = ["/abs/*.json", "a//b"]
[[model]]
name = "two"
path = "two"
exclude = ["original\\\\*.pth", "../up", ""]
"""
    with pytest.raises(ConfigError) as info:
        parse_spec(text, tmp_path / "s.toml")
    message = str(info.value)
    assert "model[0].include" in message and "model[1].exclude" in message
    for bad in ("'/abs/*.json'", "'a//b'", "backslash", "'../up'", "'' is empty"):
        assert bad in message


# --- FAT32 ------------------------------------------------------------------------------------


def test_suggested_part_sizes_fit_fat32() -> None:
    assert parse_size("3.9GiB") <= FAT32_MAX_FILE and parse_size("4000MiB") <= FAT32_MAX_FILE
    assert fat32_warning(parse_size("3.9GiB")) is None
    assert fat32_warning(FAT32_MAX_FILE) is None
    with pytest.raises(ConfigError) as info:
        parse_size("four gigs")
    suggested = re.search(r"e\.g\. (\S+)", info.value.fix or "")
    assert suggested and fat32_warning(parse_size(suggested[1])) is None


@pytest.mark.parametrize("size", ["4GiB", "4.5GiB", "8GB"])
def test_part_size_too_big_for_fat32_is_a_warning(size: str) -> None:
    warning = fat32_warning(parse_size(size))
    assert warning and "FAT32" in warning and "3.9GiB" in warning


def test_build_with_4gib_parts_warns_and_still_splits(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    result = build(
        make_spec(), tmp_path / "out", cache_dir=tmp_path / "cache", max_part_size=4 * 1024**3
    )
    assert result.parts_index is not None and result.parts_index.is_file()
    (warning,) = result.warnings
    assert "FAT32" in warning and "--max-part-size 4GiB" in warning and "3.9GiB" in warning


# --- the matcher against a reference model of its documented semantics -------------------------


def _reference(pattern: str, path: str) -> bool:
    """The module docstring's rules, as one regular expression over "DIR/" or "FILE/" strings."""
    directories_only = pattern.endswith("/")
    body = pattern.removesuffix("/")
    if "/" not in body:
        body = "**/" + body
    regex = ""
    for segment in body.split("/"):
        if segment == "**":
            regex += "(?:[^/]+/)*"
        else:
            chars = {"*": "[^/]*", "?": "[^/]"}
            regex += "".join(chars.get(c, re.escape(c)) for c in segment) + "/"
    parts = path.split("/")
    stop = len(parts) - 1 if directories_only else len(parts)
    return any(re.fullmatch(regex, "/".join(parts[:n]) + "/") for n in range(1, stop + 1))


_NAMES = st.sampled_from(["a", "b", "ab", "a.bin", "b.pth", "m.safetensors", "c.json", "x.y"])
_PATHS = st.lists(_NAMES, min_size=1, max_size=4).map("/".join)
_SEGMENTS = st.sampled_from(["*", "**", "?", "a", "a*", "*b", "?b", "*.bin", "*.*", "m.*", "x.y"])
_PATTERNS = st.builds(
    lambda segments, slash: "/".join(segments) + slash,
    st.lists(_SEGMENTS, min_size=1, max_size=4),
    st.sampled_from(["", "", "/"]),
)


def _expected_taken(files: list[str], include: list[str], exclude: list[str]) -> list[str]:
    return [
        f
        for f in files
        if (not include or any(_reference(p, f) for p in include))
        and not any(_reference(p, f) for p in exclude)
    ]


def _tree(paths: list[str]) -> list[str]:
    """Paths that can all exist at once: none is also a directory of another."""
    files = sorted(set(paths))
    return [f for f in files if not any(g.startswith(f + "/") for g in files)]


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(
    files=st.lists(_PATHS, min_size=1, max_size=12).map(_tree),
    include=st.lists(_PATTERNS, max_size=3),
    exclude=st.lists(_PATTERNS, max_size=3),
)
@example(files=["a/b/c.bin"], include=["a/**/c.bin"], exclude=[])
@example(files=["a/b", "ab"], include=[], exclude=["a/"])
def test_select_agrees_with_the_reference(
    files: list[str], include: list[str], exclude: list[str]
) -> None:
    assert all(pattern_problem(p) is None for p in include + exclude)
    chosen = select(files, include, exclude)
    for pattern in include + exclude:
        for path in files:
            assert compile_pattern(pattern).matches(path) == _reference(pattern, path)
    assert list(chosen.taken) == _expected_taken(files, include, exclude)
    assert sorted(chosen.taken + chosen.left_out) == sorted(files)
    unmatched = [
        f"{kind} {p!r}"
        for kind, ps in (("include", include), ("exclude", exclude))
        for p in ps
        if not any(_reference(p, f) for f in files)
    ]
    assert list(chosen.unmatched) == unmatched


SPEC_HEAD = """
[bundle]
name = "b"
version = "1"
[target]
platforms = ["manylinux_2_28_x86_64"]
[[model]]
name = "m"
path = "m"
allow_pickle = true
"""


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(_PATHS, min_size=1, max_size=8).map(_tree),
    include=st.lists(_PATTERNS, max_size=2),
    exclude=st.lists(_PATTERNS, max_size=2),
)
def test_collect_model_on_disk_agrees_with_the_reference(
    files: list[str], include: list[str], exclude: list[str]
) -> None:
    """Real directories: the files taken, or the error that names the patterns that miss."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _model_repo(root / "m", tuple(files))
        (root / "m" / ".git").mkdir()
        (root / "m" / ".git" / "a.bin").write_bytes(b"hidden")  # never a candidate
        lines = f"include = {json.dumps(include)}\nexclude = {json.dumps(exclude)}\n"
        loaded = parse_spec(SPEC_HEAD + lines, root / "s.toml")
        misses = [p for p in include + exclude if not any(_reference(p, f) for f in files)]
        taken = _expected_taken(files, include, exclude)
        weights = [f for f in taken if f.endswith((".bin", ".pth", ".safetensors"))]
        try:
            source = collect_model(loaded.spec.model[0], loaded, root / "hub")
        except ConfigError as exc:
            if misses:
                assert all(repr(p) in exc.message for p in misses)
            else:
                assert (include or exclude) and not weights and "no weights" in exc.message
            return
        assert not misses and [f.as_posix() for f in source.files] == taken
