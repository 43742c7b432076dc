"""Volumes and archives on the isolated side: reassembly, safe unpacking, resuming after a full
disk; through ``offline bundle unpack`` and through install-offline.sh (which runs the same
stdlib-only checker standalone)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from offline.bundle.archive import JOURNAL, unpack
from offline.errors import IntegrityError, OfflineError, ResourceError
from tests.bundle.test_tamper import (
    INTEGRITY_EXIT,
    assert_nothing_installed,
    bash_install,
    python_verify,
)
from tests.fixtures.specs import SignedBundle


def cli_unpack(src: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "offline", "bundle", "unpack", str(src), "--dest", str(dest)]
    return subprocess.run(cmd, capture_output=True, text=True)


def _parts(parts_dir: Path) -> list[Path]:
    return sorted(parts_dir.glob("*.tar.part*"))


def test_volumes_unpack_to_a_bundle_that_verifies(
    signed_bundle: SignedBundle, tmp_path: Path
) -> None:
    parts = _parts(signed_bundle.parts)
    assert len(parts) >= 4  # the fixture's small part size splits it
    assert (signed_bundle.parts / "install-offline.sh").is_file()
    assert (signed_bundle.parts / "offline-archive.py").is_file()

    done = cli_unpack(signed_bundle.parts, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert python_verify(tmp_path / "out", signed_bundle.pub).returncode == 0
    assert not (tmp_path / "out" / JOURNAL).exists()

    again = unpack(signed_bundle.parts, tmp_path / "out")  # verified files are skipped
    listed = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"]
    assert again.skipped == len(listed)
    assert again.written == 3  # manifest.json, manifest.sig, SHA256SUMS: not listed in it


def test_standalone_checker_needs_only_the_standard_library(
    signed_bundle: SignedBundle, tmp_path: Path
) -> None:
    """-I -S: no site-packages, no toolkit; exactly what an isolated host has."""
    helper = signed_bundle.parts / "offline-archive.py"
    cmd = [sys.executable, "-I", "-S", str(helper), "unpack", str(signed_bundle.parts)]
    done = subprocess.run([*cmd, "--dest", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert python_verify(tmp_path / "out", signed_bundle.pub).returncode == 0


def _drop_part(parts: Path) -> str:
    victim = _parts(parts)[1]
    victim.unlink()
    return f"{victim.name}: missing"


def _truncate_part(parts: Path) -> str:
    victim = _parts(parts)[2]
    data = victim.read_bytes()
    victim.write_bytes(data[:-100])
    return f"{victim.name}: truncated"


def _swap_parts(parts: Path) -> str:
    a, b = _parts(parts)[1:3]
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    return f"{a.name}: holds the content of {b.name}"


def _corrupt_part(parts: Path) -> str:
    victim = _parts(parts)[0]
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    return f"{victim.name}: corrupt"


@pytest.mark.parametrize("damage", [_drop_part, _truncate_part, _swap_parts, _corrupt_part])
def test_bad_volumes_are_named_by_both_front_ends(
    signed_bundle: SignedBundle, tmp_path: Path, damage: object
) -> None:
    parts = signed_bundle.copy_parts(tmp_path / "parts")
    expected = damage(parts)  # type: ignore[operator]

    done = cli_unpack(parts, tmp_path / "out")
    assert done.returncode == INTEGRITY_EXIT and expected in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()  # checked before anything is written

    installed = bash_install(parts, signed_bundle.pub, tmp_path / "prefix")
    assert installed.returncode == INTEGRITY_EXIT and expected in installed.stderr
    assert_nothing_installed(tmp_path / "prefix")
    assert not (tmp_path / "prefix" / ".bundle.incoming").exists()


def _evil_tar(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("b/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        for info, data in members:
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


EVIL = {
    "absolute": ([(_member("/tmp/evil-abs"), b"x")], "/tmp/evil-abs: absolute path"),
    "dotdot": ([(_member("b/../../evil"), b"x")], "'..' in the path"),
    "symlink-escape": (
        [(_member("b/etc", tarfile.SYMTYPE, "/etc"), None)],
        "symlink to /etc points outside",
    ),
    "symlink-relative-escape": (
        [(_member("b/up", tarfile.SYMTYPE, "../../.."), None)],
        "points outside the destination",
    ),
    "hardlink-escape": (
        [(_member("b/passwd", tarfile.LNKTYPE, "/etc/passwd"), None)],
        "hardlink to /etc/passwd points outside",
    ),
    "device": ([(_member("b/sda", tarfile.BLKTYPE), None)], "device file"),
    "fifo": ([(_member("b/pipe", tarfile.FIFOTYPE), None)], "device file"),
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path: Path, case: str) -> None:
    members, words = EVIL[case]
    archive = _evil_tar(tmp_path / "evil.tar", *members)
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError, match="refusing to unpack") as info:
        unpack(archive, dest)
    assert words in info.value.message
    assert not dest.exists()
    assert not Path("/tmp/evil-abs").exists()


def test_unsafe_member_refused_by_the_installer(
    tmp_path: Path, signed_bundle: SignedBundle
) -> None:
    archive = _evil_tar(tmp_path / "evil.tar", (_member("b/../../evil"), b"x"))
    done = bash_install(archive, signed_bundle.pub, tmp_path / "prefix")
    assert done.returncode == INTEGRITY_EXIT and "'..' in the path" in done.stderr
    assert_nothing_installed(tmp_path / "prefix")
    assert not (tmp_path / "evil").exists()


def test_symlink_chain_that_escapes_is_refused(tmp_path: Path) -> None:
    """Each link alone stays inside; followed together they leave DEST."""
    archive = _evil_tar(
        tmp_path / "chain.tar",
        (_member("b/d/sub", tarfile.SYMTYPE, ".."), None),
        (_member("b/d/esc", tarfile.SYMTYPE, "sub/.."), None),
    )
    with pytest.raises(IntegrityError, match="resolve outside"):
        unpack(archive, tmp_path / "dest")
    assert not any(p.is_symlink() for p in (tmp_path / "dest").rglob("*"))


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under ``root`` but ``skip``: kind, inode, and content or link target."""
    seen = {}
    for path in sorted(root.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        st = path.lstat()
        if path.is_symlink():
            seen[str(path)] = ("link", st.st_ino, os.readlink(path))
        elif path.is_file():
            seen[str(path)] = ("file", st.st_ino, path.read_text())
        else:
            seen[str(path)] = ("dir", st.st_ino, "")
    return seen


def test_a_link_chain_cannot_replace_a_file_outside(tmp_path: Path) -> None:
    """``p -> .`` and ``p/q -> ..`` look harmless one by one; a hard link written through
    ``p/q`` would then replace a file beside DEST."""
    (tmp_path / "victim").write_text("untouched")
    before = _snapshot(tmp_path, tmp_path / "dest")
    archive = _evil_tar(
        tmp_path / "chain.tar",
        (_member("b/p", tarfile.SYMTYPE, "."), None),
        (_member("b/p/q", tarfile.SYMTYPE, ".."), None),
        (_member("b/p/q/victim", tarfile.LNKTYPE, "b/ok.txt"), None),
    )
    with pytest.raises(IntegrityError, match="outside"):
        unpack(archive, tmp_path / "dest")
    assert _snapshot(tmp_path, tmp_path / "dest") == {
        **before,
        str(tmp_path / "chain.tar"): _snapshot(tmp_path, tmp_path / "dest")[
            str(tmp_path / "chain.tar")
        ],
    }
    assert not any(p.is_symlink() for p in (tmp_path / "dest").rglob("*"))


# Members that each look harmless; in some orders they reach outside DEST (``p -> .`` then
# ``p/q -> ..`` makes ``p/q/...`` a path beside DEST). Random ones mix in.
_STEPS = st.sampled_from(
    [
        ("p", tarfile.SYMTYPE, "."),
        ("p/q", tarfile.SYMTYPE, ".."),
        ("p/q/victim", tarfile.LNKTYPE, "ok.txt"),
        ("p/q/victim", tarfile.SYMTYPE, "ok.txt"),
        ("p/q/a/kept", tarfile.LNKTYPE, "ok.txt"),
        ("a", tarfile.SYMTYPE, "p/q"),
        ("a/victim", tarfile.LNKTYPE, "ok.txt"),
        ("c", tarfile.SYMTYPE, "a/.."),
        ("c/victim", tarfile.SYMTYPE, "."),
        ("h", tarfile.LNKTYPE, "p/q/victim"),
    ]
)
_ANY = st.tuples(
    st.sampled_from(["a", "b", "a/b", "c", "p", "p/q", "p/q/r", "victim"]),
    st.sampled_from([tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.REGTYPE]),
    st.sampled_from([".", "..", "a", "a/..", "b/..", "p/q", "../victim", "c/..", "ok.txt"]),
)
_LINKS = st.lists(st.one_of(_STEPS, _STEPS, _STEPS, _ANY), min_size=1, max_size=6)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(links=_LINKS)
@example(
    links=[
        ("p", tarfile.SYMTYPE, "."),
        ("p/q", tarfile.SYMTYPE, ".."),
        ("p/q/victim", tarfile.LNKTYPE, "ok.txt"),
    ]
)
def test_no_sequence_of_links_touches_anything_outside(
    tmp_path_factory: pytest.TempPathFactory, links: list[tuple[str, bytes, str]]
) -> None:
    """Whatever the members, unpacked in order: nothing beside DEST is created, replaced or
    deleted, and when the archive is refused no symlink is left in DEST."""
    root = tmp_path_factory.mktemp("chain")
    (root / "victim").write_text("untouched")
    (root / "a").mkdir()
    (root / "a" / "kept").write_text("untouched too")
    members = []
    for name, kind, target in links:
        link = f"b/{target}" if kind == tarfile.LNKTYPE else target
        members.append(
            (_member(f"b/{name}", kind, link), b"data" if kind == tarfile.REGTYPE else None)
        )
    archive = _evil_tar(root / "chain.tar", *members)
    before = _snapshot(root, root / "dest")
    try:
        unpack(archive, root / "dest")
    except IntegrityError:
        assert not any(p.is_symlink() for p in (root / "dest").rglob("*"))
    except (OfflineError, OSError):
        pass  # members that contradict each other (a file where a directory must go)
    assert _snapshot(root, root / "dest") == before


def test_inside_links_are_kept(tmp_path: Path) -> None:
    archive = _evil_tar(
        tmp_path / "links.tar",
        (_member("b/alias.txt", tarfile.SYMTYPE, "ok.txt"), None),
        (_member("b/hard.txt", tarfile.LNKTYPE, "b/ok.txt"), None),
    )
    unpack(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "alias.txt").read_text() == "ok"
    assert (tmp_path / "dest" / "hard.txt").read_text() == "ok"


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path``; ``grow(path, size)`` frees space later."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def test_disk_full_during_unpack_then_resume(signed_bundle: SignedBundle, tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "48k") as small:
        dest = small / "out"
        with pytest.raises(ResourceError, match="disk full") as info:
            unpack(signed_bundle.parts, dest)
        assert "run the same command again" in (info.value.fix or "")
        finished = (dest / JOURNAL).read_text().splitlines()
        assert finished  # what was written before the disk filled up is recorded
        assert not list(dest.rglob(".*.unpacking"))  # no half-written file left

        cli = cli_unpack(signed_bundle.parts, dest)
        assert cli.returncode == 8 and "disk full" in cli.stderr and "Traceback" not in cli.stderr

        grow(small, "4m")
        result = unpack(signed_bundle.parts, dest)
        assert result.skipped >= len(finished)  # re-checked, not re-read from the volumes
        assert python_verify(dest, signed_bundle.pub).returncode == 0


def test_a_file_changed_after_an_interruption_is_rewritten(
    signed_bundle: SignedBundle, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    unpack(signed_bundle.parts, dest)
    # Simulate an interrupted run: the journal is still there and one file was damaged since.
    manifest = json.loads((dest / "manifest.json").read_text())
    lines = [
        json.dumps({"path": f["path"], "size": f["size"], "sha256": f["sha256"]})
        for f in manifest["files"]
    ]
    (dest / JOURNAL).write_text("\n".join(lines) + "\n")
    damaged = dest / "locks" / "app.lock"
    damaged.write_bytes(damaged.read_bytes()[::-1])
    result = unpack(signed_bundle.parts, dest)
    assert result.written >= 1 and result.skipped == len(lines) - 1
    assert python_verify(dest, signed_bundle.pub).returncode == 0


def test_installer_on_a_full_disk_then_resume(signed_bundle: SignedBundle, tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "48k") as small:
        prefix = small / "opt"
        full = bash_install(signed_bundle.parts, signed_bundle.pub, prefix)
        assert full.returncode == 8 and "disk full" in full.stderr, full.stderr
        assert "Traceback" not in full.stderr
        assert_nothing_installed(prefix)

        grow(small, "256m")
        done = bash_install(signed_bundle.parts, signed_bundle.pub, prefix)
        assert done.returncode == 0, done.stderr
        assert "already there" in done.stdout and ", 0 already there" not in done.stdout
        assert (prefix / "installed.json").is_file()
