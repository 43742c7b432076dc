"""The crash-safe writers every capability shares: a failed write leaves the old state."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from offline import fsutil

NAMES = st.text(alphabet="abcdefgh0123456789_-", min_size=1, max_size=12)


class Boom(Exception):
    pass


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_atomic_writer_streams_and_a_failed_body_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "data.bin"
    with fsutil.atomic_writer(path, mode=0o600) as fh:
        fh.write(b"first ")
        fh.write(b"version")
    assert path.read_bytes() == b"first version"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(Boom), fsutil.atomic_writer(path) as fh:
        fh.write(b"half of the second")
        raise Boom
    assert path.read_bytes() == b"first version"
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.bin"]  # no temp file left


def test_build_dir_swaps_in_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with fsutil.build_dir(target) as tmp:
        (tmp / "a.json").write_text("1")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "w.bin").write_bytes(b"w")
    assert _tree(target) == {"a.json": b"1", "nested/w.bin": b"w"}
    with pytest.raises(Boom), fsutil.build_dir(target) as tmp:
        (tmp / "a.json").write_text("2")
        raise Boom
    assert _tree(target) == {"a.json": b"1", "nested/w.bin": b"w"}
    with fsutil.build_dir(target) as tmp:
        (tmp / "b.json").write_text("3")
    assert _tree(target) == {"b.json": b"3"}  # the old directory is replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_build_dir_moved_away_by_the_body_is_not_swapped_in(tmp_path: Path) -> None:
    target = tmp_path / "export"
    target.mkdir()
    (target / "old").write_text("kept")
    with pytest.raises(Boom), fsutil.build_dir(target) as tmp:
        (tmp / "card").write_text("rejected")
        tmp.rename(tmp_path / "export.rejected")  # what a failed gate keeps for inspection
        raise Boom
    assert _tree(target) == {"old": b"kept"}
    assert _tree(tmp_path / "export.rejected") == {"card": b"rejected"}


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.lists(NAMES, min_size=1, max_size=3).map(tuple), st.binary(max_size=64), max_size=8
    )
)
@example({("2", "0"): b"", ("2-",): b""})  # byte order, not path-part order: "2-" < "2/0"
def test_tree_sha256_lists_every_file_by_relative_path(
    tmp_path_factory: pytest.TempPathFactory, files: dict[tuple[str, ...], bytes]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    written: dict[str, bytes] = {}
    for parts, data in files.items():
        rel = "/".join(parts)
        path = root / rel
        if any(rel.startswith(f"{w}/") or w.startswith(f"{rel}/") for w in written):
            continue  # a name cannot be both a file and a directory
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[rel] = data
    (root / "link").symlink_to("/etc/passwd")  # never followed, never listed
    got = fsutil.tree_sha256(root)
    assert got == {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(written.items())}
    assert list(got) == sorted(got)
    kept = fsutil.tree_sha256(root, lambda p: not p.name.startswith("a"))
    assert set(kept) == {rel for rel in written if not rel.split("/")[-1].startswith("a")}


def test_files_digest_covers_names_and_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    assert fsutil.files_digest([a]) != fsutil.files_digest([b])  # same bytes, other name
    before = fsutil.files_digest([a, b])
    b.write_bytes(b"y")
    assert fsutil.files_digest([a, b]) != before
