"""The split stage: deterministic train/validation/test from the cleaned shards.

A row's side is a hash of ``(seed, cluster)``, where ``cluster`` is the record id of its
duplicate-cluster representative (dedup sets it; it is the row's own id otherwise). So the split is
stable when rows are added (an existing row never moves), and rows the dedup steps tied together
(``near_dedup.action: tag``) always land on the same side. Time series split by time instead
(the last ``validation + test`` share of the series), so no future leaks into training.

Labels from Label Studio (``data/labeled/*.parquet``, written by ``offline label pull``) take
the place of a dataset's own ``label`` column for the records they cover; ``label_source``
says where each row's label came from (``labelstudio`` or ``source``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from offline.data.clean import CLEAN_DIR
from offline.data.layout import LAYOUT
from offline.data.params import Params, SplitParams, load_params
from offline.errors import NotFoundError
from offline.fsutil import atomic_write_text, replace_dir

SPLIT_DIR = Path(LAYOUT.split)
LABELED_DIR = Path(LAYOUT.labeled)
METRICS = Path(LAYOUT.metric("split"))
SIDES = ("train", "validation", "test")


def position(seed: int, key: str) -> float:
    """Where ``key`` falls in [0, 1) for ``seed``: stable across runs, machines and versions."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def sides_by_hash(clusters: list[str], params: SplitParams) -> np.ndarray[Any, np.dtype[np.int8]]:
    """0 = train, 1 = validation, 2 = test for each cluster key."""
    pos = np.fromiter((position(params.seed, c) for c in clusters), float, len(clusters))
    side = np.zeros(len(clusters), dtype=np.int8)
    side[pos < params.validation + params.test] = 1
    side[pos < params.test] = 2
    return side


def sides_by_time(n: int, params: SplitParams) -> np.ndarray[Any, np.dtype[np.int8]]:
    """The series (already in time order) split into its first, middle and last parts."""
    side = np.zeros(n, dtype=np.int8)
    test_from = n - round(n * params.test)
    val_from = test_from - round(n * params.validation)
    side[val_from:test_from] = 1
    side[test_from:] = 2
    return side


@dataclass
class SplitReport:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)  # rows labelled in Label Studio

    def as_dict(self) -> dict[str, Any]:
        return {"datasets": self.counts, "labelstudio_labels": self.labelled}


def studio_labels(root: Path) -> dict[str, dict[str, str]]:
    """dataset -> record id -> label, from every pulled project (the latest annotation wins)."""
    found: dict[str, dict[str, str]] = {}
    for path in sorted((root / LABELED_DIR).glob("*.parquet")):
        table = pq.read_table(path)
        if not {"record_id", "dataset", "label"} <= set(table.schema.names):
            continue  # not a classification project (NER spans, reviews)
        rows = table.sort_by("created").to_pylist() if "created" in table.schema.names else []
        for row in rows or table.to_pylist():
            if row["record_id"] and row["label"]:
                found.setdefault(row["dataset"], {})[row["record_id"]] = row["label"]
    return found


def _relabel(table: pa.Table, labels: dict[str, str]) -> tuple[pa.Table, int]:
    ids = table.column("record_id").to_pylist()
    own = table.column("label").to_pylist() if "label" in table.schema.names else [None] * len(ids)
    new = [labels.get(i, o) for i, o in zip(ids, own, strict=True)]
    source = ["labelstudio" if i in labels else "source" for i in ids]
    if "label" in table.schema.names:
        table = table.drop_columns(["label"])
    table = table.append_column("label", pa.array(new, pa.string()))
    return table.append_column("label_source", pa.array(source, pa.string())), sum(
        s == "labelstudio" for s in source
    )


def split(root: Path, params: Params | None = None) -> SplitReport:
    """Split every cleaned dataset into ``data/split/<dataset>/{train,validation,test}.parquet``."""
    params = params or load_params(root / "params.yaml")
    clean_dir = root / CLEAN_DIR
    if not clean_dir.is_dir():
        raise NotFoundError(
            f"{CLEAN_DIR} not found", fix="run `offline data clean` (or `dvc repro`) first"
        )
    tmp = root / SPLIT_DIR.parent / ".split.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    report = SplitReport()
    labels = studio_labels(root)
    for name in sorted(params.datasets):
        shards = sorted(clean_dir.glob(f"{name}-*.parquet"))
        if not shards:
            continue
        table = pa.concat_tables([pq.read_table(p) for p in shards])
        if labels.get(name) and "record_id" in table.schema.names:
            table, report.labelled[name] = _relabel(table, labels[name])
        if params.datasets[name].kind == "tabular":
            side = sides_by_time(table.num_rows, params.split)
        else:
            side = sides_by_hash(table.column("cluster").to_pylist(), params.split)
        out = tmp / name
        out.mkdir(parents=True)
        report.counts[name] = {}
        for i, label in enumerate(SIDES):
            part = table.filter(pa.array(side == i))
            pq.write_table(part, out / f"{label}.parquet", compression="zstd")
            report.counts[name][label] = part.num_rows
    tmp.mkdir(parents=True, exist_ok=True)
    replace_dir(tmp, root / SPLIT_DIR)
    (root / METRICS.parent).mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / METRICS, json.dumps(report.as_dict(), indent=2) + "\n")
    return report
