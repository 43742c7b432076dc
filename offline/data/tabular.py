"""Tabular / time-series cleaning: type coercion, sliding-window median fill, outlier clipping.

A series is cleaned whole (a window median and outlier bounds need its neighbours and its
distribution), so a tabular dataset is read into memory up to ``clean.tabular.max_rows`` rows and
refused with a clear error beyond that. The steps are pandas operations on the frame, in the
order ``clean.tabular.steps`` gives; rows whose time cannot be parsed are quarantined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from offline.data.decode import scan, text_codec
from offline.data.io import MALFORMED, Quarantined, dataset_files
from offline.data.params import Dataset, TabularParams
from offline.errors import ConfigError, DataError


@dataclass
class TableResult:
    """A cleaned series, the rows refused, and what each step changed."""

    table: pa.Table
    rows_in: int
    rejected: list[Quarantined] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _read(root: Path, name: str, ds: Dataset) -> pd.DataFrame:
    frames = []
    for path, fmt in dataset_files(root, name, ds):
        label = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        codec = text_codec(ds.encoding)
        try:
            if fmt == "csv":
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding=codec)
                first_line = 2  # line 1 is the header
            elif fmt == "parquet":
                frame = pd.read_parquet(path).astype(str)
                first_line = 1
            else:
                frame = pd.read_json(path, lines=True, dtype=False, encoding=codec).astype(str)
                first_line = 1
        except UnicodeDecodeError:
            raise scan(path, label, name, ds.encoding) from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{label}: cannot read as {fmt}: {exc}") from None
        frame.insert(0, "source", [f"{label}:{i + first_line}" for i in range(len(frame))])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _columns(name: str, ds: Dataset, frame: pd.DataFrame) -> tuple[str, list[str]]:
    time_col = ds.columns.time
    if time_col is None:
        raise ConfigError(
            f"dataset {name!r} is tabular but has no time column mapped",
            fix=f"set datasets.{name}.columns.time in params.yaml",
        )
    values = ds.columns.values or [c for c in frame.columns if c not in ("source", time_col)]
    missing = [c for c in [time_col, *values] if c not in frame.columns]
    if missing:
        raise DataError(
            f"dataset {name!r}: column(s) {missing} not in {ds.path}",
            fix=f"fix datasets.{name}.columns in params.yaml (found: {list(frame.columns)})",
        )
    return time_col, values


def _coerce(
    frame: pd.DataFrame, time_col: str, values: list[str], counts: dict[str, int]
) -> tuple[pd.DataFrame, list[Quarantined]]:
    times = pd.to_datetime(frame[time_col], errors="coerce", utc=True, format="mixed")
    bad = times.isna()
    rejected = [
        Quarantined(
            row["source"],
            json.dumps({k: row[k] for k in [time_col, *values]}, ensure_ascii=False),
            f"unparseable time in column {time_col!r}: {row[time_col]!r}",
            MALFORMED,
        )
        for _, row in frame[bad].iterrows()
    ]
    out = frame[~bad].copy()
    out[time_col] = times[~bad]
    for col in values:
        raw = out[col].str.strip()
        numbers = pd.to_numeric(raw, errors="coerce")
        counts["unparseable_values"] = counts.get("unparseable_values", 0) + int(
            (numbers.isna() & (raw != "")).sum()
        )
        counts["missing_values"] = counts.get("missing_values", 0) + int((raw == "").sum())
        out[col] = numbers.astype("float64")
    out = out.sort_values(time_col, kind="stable").reset_index(drop=True)
    return out, rejected


def _fill(frame: pd.DataFrame, values: list[str], window: int, counts: dict[str, int]) -> None:
    for col in values:
        missing = frame[col].isna()
        if not missing.any():
            continue
        medians = frame[col].rolling(window, center=True, min_periods=1).median()
        frame[col] = frame[col].fillna(medians)
        counts["filled"] = counts.get("filled", 0) + int((missing & frame[col].notna()).sum())
        counts["unfilled"] = counts.get("unfilled", 0) + int(frame[col].isna().sum())


def _clip(
    frame: pd.DataFrame, values: list[str], params: TabularParams, counts: dict[str, int]
) -> None:
    for col in values:
        series = frame[col]
        if params.outliers == "iqr":
            q1, q3 = series.quantile(0.25), series.quantile(0.75)
            low, high = q1 - params.iqr_k * (q3 - q1), q3 + params.iqr_k * (q3 - q1)
        else:
            mean, std = series.mean(), series.std()
            low, high = mean - params.zscore * std, mean + params.zscore * std
        outside = (series < low) | (series > high)
        counts["clipped"] = counts.get("clipped", 0) + int(outside.sum())
        frame[col] = series.clip(low, high)


def clean_table(root: Path, name: str, ds: Dataset, params: TabularParams) -> TableResult:
    """Clean one tabular dataset; see the module docstring for the steps."""
    frame = _read(root, name, ds)
    if len(frame) > params.max_rows:
        raise DataError(
            f"dataset {name!r} has {len(frame)} rows > clean.tabular.max_rows {params.max_rows}",
            fix="raise clean.tabular.max_rows if the host has the memory, or split the series",
        )
    time_col, values = _columns(name, ds, frame)
    rows_in = len(frame)
    counts: dict[str, int] = {}
    frame, rejected = _coerce(frame, time_col, values, counts)
    if "fill" in params.steps:
        _fill(frame, values, params.window, counts)
    if "outliers" in params.steps and params.outliers != "none" and len(frame):
        _clip(frame, values, params, counts)
    table = pa.Table.from_pandas(frame[["source", time_col, *values]], preserve_index=False)
    return TableResult(table.replace_schema_metadata(None), rows_in, rejected, counts)
