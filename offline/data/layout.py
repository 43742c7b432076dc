"""The workspace layout, in one place: where each stage reads and writes, relative to the
workspace (``offline init DIR``).

The pipeline (``dvc.yaml``), the training configs, the stages' modules and the CLI defaults all
take their paths from :data:`LAYOUT`; the workspace templates (``assets/*.yaml``, beside
``plots.html``) name them as ``$field`` placeholders filled by :func:`render`. Renaming a
directory is one edit here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from string import Template

from offline.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    raw: str = "data/raw"  # the user's files, never written by a stage
    clean: str = "data/clean"  # cleaned Parquet shards
    rejected: str = "data/rejected"  # every rejected row, with the step that rejected it
    labeled: str = "data/labeled"  # Label Studio's annotations (offline label pull)
    split: str = "data/split"  # <dataset>/{train,validation,test}.parquet
    tiny: str = "models/tiny"  # the embedded default model
    trained: str = "models/trained"  # the SFT model
    classifier: str = "models/classifier"  # the ticket classifier
    exports: str = "models/export"  # offline export's directories
    metrics: str = "metrics"  # <stage>.json, read by `dvc metrics` and `dvc plots`
    checkpoints: str = "checkpoints"
    logs: str = "logs"
    evidence: str = "evidence"  # offline evidence build's signed dossier

    def metric(self, name: str) -> str:
        """``metrics/<name>.json``."""
        return f"{self.metrics}/{name}.json"

    def split_file(self, dataset: str, side: str) -> str:
        """``data/split/<dataset>/<side>.parquet``."""
        return f"{self.split}/{dataset}/{side}.parquet"


LAYOUT = Layout()
TEMPLATES = ("dvc.yaml", "train.yaml", "train-classifier.yaml")


def render(name: str, layout: Layout = LAYOUT) -> str:
    """The workspace template ``name`` with every ``$field`` of ``layout`` filled in.

    Raises:
        ConfigError: the template names a field the layout does not have.
    """
    text = resources.files("offline.data").joinpath("assets", name).read_text(encoding="utf-8")
    try:
        return Template(text).substitute(asdict(layout))
    except (KeyError, ValueError) as exc:
        raise ConfigError(
            f"workspace template {name} names ${exc} which offline/data/layout.py lacks",
            fix="add the field to Layout or fix the template",
        ) from None
