"""The run's log: rank 0 writes it, redacted; a step run twice counts once, as its last run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offline.audit.chain import verify
from offline.audit.site import WORKSPACE_KEY
from offline.bundle.sign import keygen, load_public_key, public_key_path
from offline.train.runlog import RunLog


def test_a_rerun_step_keeps_its_last_loss_and_later_steps_are_left_out(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "logs", rank=0)
    log.open(append=False)
    for step, loss in ((1, 3.0), (2, 2.5), (3, 2.0), (2, 2.4), (3, 1.9), (4, 1.5)):
        log.record({"step": step, "loss": loss})
    log.record({"event": "eval", "step": 3, "eval_loss": 9.0})
    log.close()
    assert log.losses(3) == [
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.4},
        {"step": 3, "loss": 1.9},
    ]


def test_only_rank_0_writes_and_what_it_writes_is_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = RunLog(tmp_path / "other", rank=1)
    other.open(append=False)
    other.say("from rank 1")
    other.record({"step": 1, "loss": 1.0})
    assert not (tmp_path / "other").exists() and other.losses(1) == []
    log = RunLog(tmp_path / "logs", rank=0)
    log.open(append=False)
    log.say("pulling https://ops:s3cret@models.lan/x")
    log.record({"event": "note", "url": "https://ops:s3cret@models.lan/x"})
    log.close()
    text = (tmp_path / "logs/train.jsonl").read_text()
    assert "s3cret" not in text and json.loads(text.splitlines()[0])["url"].endswith("models.lan/x")
    err = capsys.readouterr().err
    assert "from rank 1" not in err and "models.lan/x" in err and "s3cret" not in err


def test_the_log_is_one_signed_chain_across_a_resume_and_a_new_run_starts_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the workspace: its site key signs the checkpoints
    monkeypatch.delenv("DEEPSEEK_OFFLINE_SITE_KEY", raising=False)
    private, public = keygen(tmp_path / WORKSPACE_KEY)
    assert public == public_key_path(private)
    log = RunLog(tmp_path / "logs", rank=0)
    log.open(append=False)
    log.record({"step": 1, "loss": 3.0})
    log.close()
    log.open(append=True)  # resumed
    log.record({"step": 2, "loss": 2.0})
    log.close()
    verdict = verify([log.path], load_public_key(public))
    assert verdict.ok and verdict.closed and verdict.signed == 2, verdict.as_dict()
    lines = log.path.read_text().splitlines()
    edited = lines[0].replace('"loss":3.0', '"loss":1.0')
    assert edited != lines[0]
    log.path.write_text("\n".join([edited, *lines[1:]]) + "\n")
    verdict = verify([log.path], load_public_key(public))
    assert not verdict.ok and verdict.problems[0].where.endswith(":2"), verdict.as_dict()
    assert log.losses(9) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}]
    log.open(append=False)  # a new run: a new chain, the old lines gone
    log.record({"step": 1, "loss": 5.0})
    log.close()
    assert verify([log.path], load_public_key(public)).ok
    assert log.losses(9) == [{"step": 1, "loss": 5.0}]
