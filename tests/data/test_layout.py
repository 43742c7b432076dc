"""The workspace paths live in one object: the pipeline, the training configs, the stages and
the CLI defaults all follow it."""

from __future__ import annotations

import dataclasses
import re

import yaml

from offline.data import clean, split, validate
from offline.data.layout import LAYOUT, TEMPLATES, Layout, render
from offline.data.workspace import stages
from offline.labeling import project
from offline.train.config import TrainConfig


def test_every_template_renders_completely() -> None:
    for name in TEMPLATES:
        text = render(name)
        assert "$" not in text, name
        yaml.safe_load(text)  # still YAML


def test_a_renamed_directory_reaches_every_template() -> None:
    renamed = Layout(**{f.name: f"moved/{f.name}" for f in dataclasses.fields(Layout)})
    for name in TEMPLATES:
        default, moved = render(name), render(name, renamed)
        for field in dataclasses.fields(Layout):
            old = getattr(LAYOUT, field.name)
            # no default path survives the rename, outside of comments (`offline evidence` is
            # a command, not the path)
            code = "\n".join(line.split("#")[0] for line in moved.splitlines())
            path = rf"(?<![\w/$])(?<!offline ){re.escape(old)}(?=/|\s|$)"
            assert not re.search(path, code), (name, old)
        assert default != moved


def test_the_pipeline_reads_and_writes_where_the_stages_do() -> None:
    pipeline = stages()["stages"]
    outs = {
        (o if isinstance(o, str) else next(iter(o)))
        for s in pipeline.values()
        for o in s.get("outs", [])
    }
    assert {LAYOUT.clean, LAYOUT.rejected, LAYOUT.labeled, LAYOUT.split, LAYOUT.tiny} <= outs
    assert str(clean.CLEAN_DIR) == LAYOUT.clean and str(clean.REJECTED_DIR) == LAYOUT.rejected
    assert str(split.SPLIT_DIR) == LAYOUT.split and str(split.LABELED_DIR) == LAYOUT.labeled
    assert str(project.LABELED_DIR) == LAYOUT.labeled
    metrics = {next(iter(m)) for s in pipeline.values() for m in s.get("metrics", [])} | {
        next(iter(p)) for s in pipeline.values() for p in s.get("plots", [])
    }
    for path in (validate.REPORT, clean.METRICS, clean.STEPS_PLOT, split.METRICS, project.METRICS):
        assert str(path) in metrics, path
    defaults = TrainConfig(model=LAYOUT.tiny)
    assert defaults.output_dir in outs
    assert {defaults.metrics_file, defaults.plot_file} <= metrics
