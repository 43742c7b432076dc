"""The step registry: every step a module of ``offline.data.steps`` declares is in the chain, in
``params.yaml`` and in the runner, and a new step is one file that declares ``STEPS``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from offline.data.params import DEFAULT_STEPS, CleanParams, default_params, dump_params
from offline.data.steps.base import Scrubber
from offline.data.steps.registry import registry

STEP_FILE = """
from __future__ import annotations

import pyarrow as pa

from offline.config import Strict
from offline.data.steps.base import Context, Outcome, StepSpec


class ShoutParams(Strict):
    word: str = "forbidden"


class _Shout:
    name = "shout"
    kinds = ("text",)

    def __init__(self, params: ShoutParams) -> None:
        self.word = params.word

    def __call__(self, batch: pa.RecordBatch) -> Outcome:
        texts = batch.column("text").to_pylist()
        return Outcome(batch, [f"says {self.word}" if self.word in t else None for t in texts])

    def close(self) -> dict[str, int]:
        return {}


STEPS = (StepSpec("shout", ShoutParams, lambda params, ctx: _Shout(params)),)
"""


def test_every_declared_step_has_a_params_section_and_the_chain_is_the_default() -> None:
    specs = registry()
    assert [n for n, s in specs.items() if s.order is not None] == DEFAULT_STEPS
    assert DEFAULT_STEPS == [
        "normalize", "markup", "regex", "conversation", "length", "quality", "pii",
        "exact_dedup", "near_dedup",
    ]  # fmt: skip
    clean = dump_params(default_params())["clean"]
    for name, spec in specs.items():
        assert name in CleanParams.model_fields
        assert clean[name] == spec.params().model_dump(mode="json")
    # A step that hides what it finds does so beside the text too; only pii does today.
    assert [n for n in DEFAULT_STEPS if _builds_a_scrubber(n)] == ["pii"]


def _builds_a_scrubber(name: str) -> bool:
    from offline.data.steps.base import Context

    spec = registry()[name]
    return isinstance(spec.build(spec.params(), Context(Path("."), "d", "text")), Scrubber)


def test_a_new_step_is_one_file(tmp_path: Path) -> None:
    extra = tmp_path / "steps"
    extra.mkdir()
    (extra / "shout.py").write_text(STEP_FILE)
    ws = tmp_path / "ws"
    (ws / "data/raw").mkdir(parents=True)
    rows = [{"id": f"T{i}", "text": t} for i, t in enumerate(["fine", "a forbidden word", "ok"])]
    (ws / "data/raw/t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = textwrap.dedent(
        f"""
        import json, sys, yaml
        from pathlib import Path
        import offline.data.steps as package
        package.__path__.append({str(extra)!r})
        from offline.data.clean import clean
        from offline.data.params import parse_params
        ws = Path({str(ws)!r})
        data = {{"datasets": {{"t": {{"path": "data/raw/t.jsonl", "kind": "text",
                 "columns": {{"id": "id"}}}}}},
                 "clean": {{"steps": ["normalize", "shout"], "shout": {{"word": "forbidden"}}}}}}
        report = clean(ws, parse_params(data))
        print(json.dumps(report.metrics()["datasets"]["t"]["steps"]["shout"]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["in"] == 3 and stats["out"] == 2
    assert stats["reasons"] == {"says forbidden": 1}
    # Without the file, the same params name the unknown step.
    code = (
        "from offline.data.params import parse_params; parse_params({'datasets': {},"
        " 'clean': {'steps': ['shout']}})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "unknown step(s) ['shout']" in out.stderr
