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

from offline.bundle.archive import JOURNAL, parse_size, unpack
from offline.bundle.split import write_parts
from offline.errors import IntegrityError, ResourceError
from tests.bundle.test_tamper import (
    INTEGRITY_EXIT,
    assert_nothing_installed,
    bash_install,
    python_verify,
)
from tests.fixtures.specs import SignedBundle

ARCHIVE_PY = Path(__file__).resolve().parents[2] / "offline" / "bundle" / "archive.py"


def cli_unpack(src: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "offline", "bundle", "unpack", str(src), "--dest", str(dest)]
    return subprocess.run(cmd, capture_output=True, text=True)


def _parts(parts_dir: Path) -> list[Path]:
    return sorted(parts_dir.glob("*.tar.part*"))


@pytest.mark.slow
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


@pytest.mark.slow
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
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        ok = tarfile.TarInfo("b/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        for info, data in members:
            if not info.issparse():
                info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _pax(info: tarfile.TarInfo, **headers: str) -> tarfile.TarInfo:
    info.pax_headers = headers
    return info


def _sparse(name: str, size: int) -> tarfile.TarInfo:
    """A GNU sparse member (PAX 0.1 map): ``size`` bytes of zeros from one stored byte."""
    info = _member(name)
    info.pax_headers = {
        "GNU.sparse.map": f"{size - 1},1",
        "GNU.sparse.size": str(size),
        "GNU.sparse.name": name,
    }
    info.size = 1
    info.sparse = [(size - 1, 1)]  # type: ignore[assignment]  # typeshed lacks the sparse map
    return info


EVIL: dict[str, tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]] = {
    "absolute": ([(_member("/tmp/evil-abs"), b"x")], "/tmp/evil-abs: absolute path"),
    "dotdot": ([(_member("b/../../evil"), b"x")], "'..' in the path"),
    "symlink-escape": (
        [(_member("b/etc", tarfile.SYMTYPE, "/etc"), None)],
        "b/etc: a symlink (to /etc)",
    ),
    "symlink-inside": (
        [(_member("b/alias", tarfile.SYMTYPE, "ok.txt"), None)],
        "b/alias: a symlink (to ok.txt): a bundle holds only files and directories",
    ),
    "hardlink-escape": (
        [(_member("b/passwd", tarfile.LNKTYPE, "/etc/passwd"), None)],
        "b/passwd: a hard link (to /etc/passwd)",
    ),
    "hardlink-inside": (
        [(_member("b/hard.txt", tarfile.LNKTYPE, "b/ok.txt"), None)],
        "b/hard.txt: a hard link (to b/ok.txt)",
    ),
    "device": ([(_member("b/sda", tarfile.BLKTYPE), None)], "b/sda: a device file"),
    "fifo": ([(_member("b/pipe", tarfile.FIFOTYPE), None)], "b/pipe: a FIFO"),
    "sparse-bomb": ([(_sparse("b/zeros", 64 << 20), b"x")], "b/zeros: a sparse file"),
    "duplicate": ([(_member("b/ok.txt"), b"other")], "b/ok.txt: the archive holds this name twice"),
    "file-then-dir": (
        [(_member("b/ok.txt/inner"), b"x")],
        "b/ok.txt/inner: b/ok.txt is a file in this archive, not a directory",
    ),
    "dir-over-file": (
        [(_member("b/ok.txt", tarfile.DIRTYPE), None)],
        "b/ok.txt: the archive holds this name twice",
    ),
    "control-characters": ([(_member("b/a\nb"), b"x")], "b/a\\nb: its name holds control"),
    "not-utf8": ([(_member("b/caf\udce9"), b"x")], "its name is not UTF-8"),
    "reserved": ([(_member(f"b/{JOURNAL}"), b"x")], "a name the unpacker reserves"),
    "reserved-spelled-otherwise": ([(_member(f"b/{JOURNAL}/."), None)], "an empty or '.' part"),
    "dot-part": ([(_member("b/ok.txt/./x"), b"x")], "b/ok.txt/./x: an empty or '.' part"),
    "same-name-spelled-twice": (
        [(_member("b/d/ok"), b"x"), (_member("b/d//ok"), b"y")],
        "b/d//ok: an empty or '.'",
    ),
    "deep": ([(_member("b/" + "d/" * 70 + "f"), b"x")], "deeper than 64 directories"),
    "long-part": ([(_member("b/" + "n" * 300), b"x")], "longer than 255 bytes"),
    "mtime-not-a-number": ([(_pax(_member("b/t"), mtime="inf"), b"x")], "not a number (inf)"),
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


def test_a_sparse_member_cannot_fill_the_disk(tmp_path: Path, signed_bundle: SignedBundle) -> None:
    """10 KiB of archive that would expand to 1 TiB of zeros: refused by both front ends before
    a byte is written."""
    archive = _evil_tar(tmp_path / "bomb.tar", (_sparse("b/zeros", 1 << 40), b"x"))
    assert archive.stat().st_size < 64 << 10
    done = cli_unpack(archive, tmp_path / "dest")
    assert done.returncode == INTEGRITY_EXIT and "b/zeros: a sparse file" in done.stderr
    assert "more than the archive's own size" in done.stderr
    assert not (tmp_path / "dest").exists()
    installed = bash_install(archive, signed_bundle.pub, tmp_path / "prefix")
    assert installed.returncode == INTEGRITY_EXIT and "b/zeros" in installed.stderr
    assert not (tmp_path / "prefix" / ".bundle.incoming").exists()


def test_the_unpacked_total_is_capped(tmp_path: Path) -> None:
    archive = _evil_tar(tmp_path / "big.tar", (_member("b/big.bin"), bytes(300_000)))
    cmd = [sys.executable, "-I", "-S", str(ARCHIVE_PY), "unpack", str(archive)]
    done = subprocess.run(
        [*cmd, "--dest", str(tmp_path / "dest"), "--max-unpacked-size", "200K"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == INTEGRITY_EXIT
    assert "300002 bytes, more than --max-unpacked-size (204800 bytes)" in done.stderr
    assert not (tmp_path / "dest").exists()
    cli = subprocess.run(
        [
            *cmd[:1],
            "-m",
            "offline",
            "bundle",
            "unpack",
            str(archive),
            "--dest",
            str(tmp_path / "dest"),
            "--max-unpacked-size",
            "0.1M",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == INTEGRITY_EXIT and "--max-unpacked-size (104857" in cli.stderr
    assert not (tmp_path / "dest").exists()
    assert unpack(archive, tmp_path / "dest", max_size=parse_size("1M")).written == 2


def _cut(archive: Path, keep: int) -> Path:
    out = archive.with_name(f"cut-{keep}.tar")
    out.write_bytes(archive.read_bytes()[:keep])
    return out


def _unreadable(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Archives that are no tar, or not all of one; each with words the error must hold."""
    whole = _evil_tar(tmp_path / "whole.tar", (_member("b/data.bin"), os.urandom(4000)))
    with tarfile.open(whole) as tar:
        last = tar.getmember("b/data.bin")
    end = last.offset_data + 4096  # where the end-of-archive marker starts
    garbage = bytearray(whole.read_bytes())
    garbage[last.offset : last.offset + 512] = os.urandom(512)
    (tmp_path / "garbage.tar").write_bytes(bytes(garbage))
    # A size pointing back to its own header: tarfile would read that header forever.
    _evil_tar(tmp_path / "negative.tar", (_pax(_member("b/loop"), size="-1536"), None))
    with tarfile.open(tmp_path / "chain.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for _ in range(2000):  # extended headers in a row: tarfile recurses once per header
            tar.fileobj.write(_pax(_member("b/x", tarfile.XHDTYPE)).tobuf(tarfile.USTAR_FORMAT))
    (tmp_path / "empty.tar").write_bytes(b"")
    (tmp_path / "text.tar").write_text("this is not an archive\n" * 100)
    (tmp_path / "zip.tar").write_bytes(b"PK\x03\x04" + os.urandom(2000))
    return {
        "inside-data": (_cut(whole, 3000), "cut short"),
        "no-end-marker": (_cut(whole, end), "cut short"),
        "half-an-end-marker": (_cut(whole, end + 256), "cut short"),
        "inside-a-header": (_cut(whole, last.offset + 100), "no readable member header"),
        "garbage-header": (tmp_path / "garbage.tar", "no readable member header"),
        "negative-size": (tmp_path / "negative.tar", "b/loop: a negative size (-1536)"),
        "header-chain": (tmp_path / "chain.tar", "not a tar archive"),
        "empty": (tmp_path / "empty.tar", "not a tar archive"),
        "text": (tmp_path / "text.tar", "not a tar archive"),
        "zip": (tmp_path / "zip.tar", "not a tar archive"),
    }


@pytest.mark.slow
def test_unreadable_archives_are_named_by_both_front_ends(
    tmp_path: Path, signed_bundle: SignedBundle
) -> None:
    for case, (archive, words) in _unreadable(tmp_path).items():
        dest = tmp_path / f"dest-{case}"
        done = cli_unpack(archive, dest)
        assert done.returncode == INTEGRITY_EXIT, (case, done.stderr)
        assert archive.name in done.stderr and words in done.stderr, (case, done.stderr)
        assert "Traceback" not in done.stderr and not dest.exists()
        prefix = tmp_path / f"prefix-{case}"
        installed = bash_install(archive, signed_bundle.pub, prefix)
        assert installed.returncode == INTEGRITY_EXIT, (case, installed.stderr)
        assert archive.name in installed.stderr and words in installed.stderr
        assert "Traceback" not in installed.stderr
        assert_nothing_installed(prefix)
        assert not (prefix / ".bundle.incoming").exists()


def test_a_destination_holding_a_symlink_is_refused(tmp_path: Path) -> None:
    """A prepared DEST whose subdirectory leads elsewhere is never written through."""
    archive = _evil_tar(tmp_path / "ok.tar", (_member("b/sub/file"), b"x"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(IntegrityError, match="already holds symlinks"):
        unpack(archive, tmp_path / "dest")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_bundle_archives_hold_no_links(tmp_path: Path) -> None:
    """A hard-linked file in the bundle directory goes into the archive as a file of its own."""
    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "wheels" / "a.whl").write_bytes(b"wheel")
    os.link(bundle / "wheels" / "a.whl", bundle / "wheels" / "b.whl")
    index = write_parts(bundle, tmp_path / "parts", "bundle-1", 1 << 20, 0)
    result = unpack(index, tmp_path / "dest")
    assert result.written == 2
    assert (tmp_path / "dest" / "wheels" / "b.whl").read_bytes() == b"wheel"


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


# Member sequences: links of both kinds in any order, names through earlier links, a directory
# later replaced by a link, duplicates, absolute names (``@`` becomes the sentinel root),
# devices, sparse members and archives cut short. The regression cases come first.
_CHAIN = [
    ("p", tarfile.SYMTYPE, "."),
    ("p/q", tarfile.SYMTYPE, ".."),
    ("p/q/victim", tarfile.LNKTYPE, "ok.txt"),
]
_NAMES = [
    "a",
    "a/b",
    "p",
    "p/q",
    "p/q/victim",
    "ok.txt",
    "victim",
    "../victim",
    "@/victim",
    "c/../../x",
]
_TARGETS = [".", "..", "a", "p/q", "../victim", "@/victim", "ok.txt", "a/.."]
_KINDS = [
    tarfile.REGTYPE,
    tarfile.REGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.CHRTYPE,
    tarfile.FIFOTYPE,
    tarfile.GNUTYPE_SPARSE,
]
_MEMBERS = st.lists(
    st.one_of(
        st.sampled_from(_CHAIN),
        st.tuples(st.sampled_from(_NAMES), st.sampled_from(_KINDS), st.sampled_from(_TARGETS)),
    ),
    min_size=1,
    max_size=6,
)
_SAFE_KINDS = (tarfile.REGTYPE, tarfile.DIRTYPE)


def _hostile_archive(root: Path, members: list[tuple[str, bytes, str]], cut: int) -> Path:
    built: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for name, kind, target in members:
        name, target = name.replace("@", str(root)), target.replace("@", str(root))
        full = name if name.startswith("/") else f"b/{name}"
        if kind == tarfile.GNUTYPE_SPARSE:
            built.append((_sparse(full, 1 << 30), b"x"))
            continue
        link = f"b/{target}" if kind == tarfile.LNKTYPE else target
        data = b"data" if kind == tarfile.REGTYPE else None
        built.append(
            (_member(full, kind, link if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""), data)
        )
    archive = _evil_tar(root / "hostile.tar", *built)
    if cut:
        archive.write_bytes(archive.read_bytes()[: -cut * 512])
    return archive


def _sentinels(root: Path) -> None:
    (root / "victim").write_text("untouched")
    (root / "a").mkdir()
    (root / "a" / "kept").write_text("untouched too")


def _check_outcome(
    root: Path,
    dest: Path,
    before: dict[str, tuple[str, int, str]],
    code: int,
    members: list[tuple[str, bytes, str]],
    out: str,
) -> None:
    assert "Traceback" not in out, out
    assert _snapshot(root, dest) == before  # nothing beside DEST created, changed or removed
    if any(kind not in _SAFE_KINDS for _, kind, _ in members):
        assert code == INTEGRITY_EXIT, out


_FRONT_ENDS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.slow
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(members=_MEMBERS, cut=st.sampled_from([0, 0, 0, 1, 2, 21]))
@example(members=_CHAIN, cut=0)
def test_no_member_sequence_touches_anything_outside(
    tmp_path_factory: pytest.TempPathFactory, members: list[tuple[str, bytes, str]], cut: int
) -> None:
    """Library: refused (nothing written) or unpacked as plain files and directories."""
    root = tmp_path_factory.mktemp("hostile")
    _sentinels(root)
    archive = _hostile_archive(root, members, cut)
    before = _snapshot(root, root / "dest")
    try:
        unpack(archive, root / "dest")
    except IntegrityError as exc:
        _check_outcome(root, root / "dest", before, INTEGRITY_EXIT, members, exc.message)
        assert not (root / "dest").exists()
        return
    _check_outcome(root, root / "dest", before, 0, members, "")
    for path in (root / "dest").rglob("*"):
        assert not path.is_symlink() and (path.is_file() or path.is_dir())


@pytest.mark.slow
@_FRONT_ENDS
@given(members=_MEMBERS, cut=st.sampled_from([0, 0, 1, 21]))
@example(members=_CHAIN, cut=0)
def test_no_member_sequence_gets_past_the_cli(
    tmp_path_factory: pytest.TempPathFactory, members: list[tuple[str, bytes, str]], cut: int
) -> None:
    root = tmp_path_factory.mktemp("hostile-cli")
    _sentinels(root)
    archive = _hostile_archive(root, members, cut)
    before = _snapshot(root, root / "dest")
    done = cli_unpack(archive, root / "dest")
    assert done.returncode in (0, INTEGRITY_EXIT), done.stderr
    _check_outcome(root, root / "dest", before, done.returncode, members, done.stderr)
    if done.returncode:
        assert not (root / "dest").exists()


@pytest.mark.slow
@_FRONT_ENDS
@given(members=_MEMBERS, cut=st.sampled_from([0, 0, 1, 21]))
@example(members=_CHAIN, cut=0)
def test_no_member_sequence_gets_past_the_installer(
    tmp_path_factory: pytest.TempPathFactory,
    signed_bundle: SignedBundle,
    members: list[tuple[str, bytes, str]],
    cut: int,
) -> None:
    """install-offline.sh as root: a member refused, or an archive without a signature."""
    root = tmp_path_factory.mktemp("hostile-sh")
    _sentinels(root)
    archive = _hostile_archive(root, members, cut)
    prefix = root / "prefix"
    before = _snapshot(root, prefix)
    done = bash_install(archive, signed_bundle.pub, prefix)
    assert done.returncode == INTEGRITY_EXIT, done.stderr  # never signed: nothing gets through
    _check_outcome(root, prefix, before, done.returncode, members, done.stderr)
    assert_nothing_installed(prefix)
    assert not (prefix / ".bundle.incoming").exists()


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


@pytest.mark.slow
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
