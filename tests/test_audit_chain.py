"""Hash-chained audit logs: any edit, deletion, insertion, reordering or cut tail is named by
``verify``, with the file and line; an untouched log (rotated, reopened) verifies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from offline.audit.chain import ChainWriter, verify
from offline.bundle.sign import keygen

KEY = Ed25519PrivateKey.generate()


def _log(path: Path, records: int, **kw: object) -> list[bytes]:
    writer = ChainWriter(path, KEY, every_lines=kw.pop("every_lines", 4), **kw)  # type: ignore[arg-type]
    for i in range(records):
        writer.write({"event": "request", "n": i, "text": f"row {i} 数据"})
    writer.close()
    return path.read_bytes().splitlines()


def test_an_untouched_log_verifies_across_rotation_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    writer = ChainWriter(path, KEY, every_lines=3, rotate_bytes=400)
    for i in range(20):
        writer.write({"n": i})
    writer.close()
    again = ChainWriter(path, KEY, every_lines=3)  # a server restart continues the chain
    again.write({"n": 20})
    again.close()
    files = sorted(tmp_path.glob("audit.log*"))
    assert len(files) > 2, "rotation made more files"
    verdict = verify(reversed(files), KEY.public_key())  # any order: sorted by seq
    assert verdict.ok and verdict.closed and verdict.tail is None, verdict.as_dict()
    assert verdict.signed == verdict.checkpoints > 5
    seqs = [json.loads(x)["seq"] for f in files for x in f.read_bytes().splitlines()]
    assert sorted(seqs) == list(range(len(seqs)))


MUTATIONS = ("edit", "delete", "insert", "swap")


@settings(max_examples=60, deadline=None)
@given(
    records=st.integers(3, 30),
    mutation=st.sampled_from(MUTATIONS),
    where=st.floats(0, 1, exclude_max=True),
    data=st.data(),
)
def test_every_tampering_is_named(
    tmp_path_factory: pytest.TempPathFactory,
    records: int,
    mutation: str,
    where: float,
    data: st.DataObject,
) -> None:
    path = tmp_path_factory.mktemp("log") / "audit.log"
    lines = _log(path, records)
    i = int(where * (len(lines) - 1))  # never the closing checkpoint itself for swaps
    if mutation == "edit":
        line = bytearray(lines[i])
        at = data.draw(st.integers(0, len(line) - 1))
        line[at] = (line[at] + 1) % 128 or 65
        lines[i] = bytes(line)
    elif mutation == "delete":
        del lines[i]
    elif mutation == "insert":
        forged = json.loads(lines[i])
        forged["text"] = "forged"
        lines.insert(i + 1, json.dumps(forged).encode())
    else:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    path.write_bytes(b"\n".join(lines) + b"\n")
    verdict = verify([path], KEY.public_key())
    assert not verdict.ok, (mutation, i)
    number = int(verdict.problems[0].where.rsplit(":", 1)[1])
    # named at the changed line or the one after it (whose link to it broke)
    assert i + 1 <= number <= i + 3, (mutation, i, verdict.problems)


def test_a_cut_tail_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = _log(path, 10, every_lines=4)
    for cut in (1, 2, 3):
        path.write_bytes(b"\n".join(lines[:-cut]) + b"\n")
        verdict = verify([path], KEY.public_key())
        assert verdict.ok and not verdict.closed and verdict.tail, cut
        assert "cut" in verdict.tail


def test_a_rewritten_log_fails_at_its_first_checkpoint(tmp_path: Path) -> None:
    """Hashes recomputed from an edited line on (anyone can): the signatures do not follow."""
    path = tmp_path / "audit.log"
    _log(path, 10, every_lines=4)
    records = [json.loads(x) for x in path.read_bytes().splitlines()]
    records[1]["n"] = 999
    forged = tmp_path / "forged.log"
    writer = ChainWriter(forged, Ed25519PrivateKey.generate(), every_lines=4)
    for r in records:
        if "checkpoint" not in r:  # the forger's own checkpoints, with the only key it has
            writer.write({k: v for k, v in r.items() if k not in ("seq", "prev")})
    writer.close()
    verdict = verify([forged], KEY.public_key())
    assert not verdict.ok and "signature" in verdict.problems[0].what
    assert verify([path], KEY.public_key()).ok


def test_a_record_cannot_take_the_chains_keys(tmp_path: Path) -> None:
    writer = ChainWriter(tmp_path / "a.log", KEY)
    with pytest.raises(ValueError, match="seq"):
        writer.write({"seq": 1})
    writer.close()


def test_offline_audit_verify(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from offline.bundle.sign import keygen
    from offline.bundle.sign import load_private_key as load
    from offline.cli import app

    private, public = keygen(tmp_path / "audit.pem")
    path = tmp_path / "audit.log"
    writer = ChainWriter(path, load(private), every_lines=3)
    for i in range(7):
        writer.write({"n": i})
    writer.close()
    runner = CliRunner()
    good = runner.invoke(app, ["audit", "verify", "--pubkey", str(public), "--closed", str(path)])
    assert good.exit_code == 0 and "chain intact: 10 lines, 3 checkpoints (3 signed" in good.output
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join(lines[:4] + lines[5:]) + b"\n")  # line 5 deleted
    bad = runner.invoke(app, ["audit", "verify", "--pubkey", str(public), str(path)])
    assert bad.exit_code == 1 and f"TAMPERED  {path}:5: seq jumps from 3 to 5" in bad.output
    path.write_bytes(b"\n".join(lines[:-2]) + b"\n")  # the tail cut, closing checkpoint too
    cut = runner.invoke(app, ["audit", "verify", "--closed", str(path)])
    assert cut.exit_code == 1 and "TAIL" in cut.output
    assert runner.invoke(app, ["audit", "verify", str(path)]).exit_code == 0  # a live log


def test_a_line_torn_by_a_crash_is_cut_and_recorded_and_the_chain_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    writer = ChainWriter(path, KEY, every_lines=100)
    for i in range(5):
        writer.write({"n": i})
    writer._fh.close()  # killed: no closing checkpoint...
    with path.open("ab") as fh:
        fh.write(b'{"seq":5,"prev":"ab')  # ...and half a line
    again = ChainWriter(path, KEY)
    again.write({"n": 5})
    again.close()
    verdict = verify([path], KEY.public_key())
    assert verdict.ok and verdict.closed, verdict.as_dict()
    records = [json.loads(x) for x in path.read_bytes().splitlines()]
    assert records[5]["torn_line"]["bytes"] == len(b'{"seq":5,"prev":"ab')


def test_the_site_key_is_found_in_order_and_init_makes_one_only_where_the_site_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given > $DEEPSEEK_OFFLINE_SITE_KEY > the workspace's > the install's etc/site-key.pem:
    a shell without the variable on an installed host still signs with the site's key."""
    from offline.audit import site

    monkeypatch.delenv(site.SITE_KEY_VAR, raising=False)
    prefix, ws = tmp_path / "prefix", tmp_path / "ws"
    monkeypatch.setenv("DEEPSEEK_OFFLINE_PREFIX", str(prefix))
    ws.mkdir()
    assert site.site_key_path(workspace=ws) is None  # no install record: not an install
    (prefix / "etc").mkdir(parents=True)
    (prefix / "installed.json").write_text("{}")
    assert site.site_key_path(workspace=ws) is None and site.site_key(workspace=ws) is None
    assert site.log_dir() == prefix / "var/log"
    installed, _ = keygen(prefix / site.INSTALL_KEY)
    assert site.site_key_path(workspace=ws) == installed
    assert site.create_workspace_key(ws) is None and not (ws / site.WORKSPACE_KEY).exists()
    own, _ = keygen(ws / site.WORKSPACE_KEY)
    assert site.site_key_path(workspace=ws) == own
    named = tmp_path / "named.pem"
    monkeypatch.setenv(site.SITE_KEY_VAR, str(named))
    assert site.site_key_path(workspace=ws) == named
    assert site.site_key_path(tmp_path / "given.pem", ws) == tmp_path / "given.pem"
    monkeypatch.delenv(site.SITE_KEY_VAR)
    installed.unlink()
    other = tmp_path / "other"
    other.mkdir()
    made = site.create_workspace_key(other)
    assert made == other / site.WORKSPACE_KEY and made.stat().st_mode & 0o777 == 0o600
