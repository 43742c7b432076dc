"""``sensors.csv``: a per-minute series with planted gaps, spikes and unparseable cells."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from offline.data.sample.text import Key, Record, pick

# --------------------------------------------------------------------------- sensors

_SENSOR_START = datetime(2024, 3, 1, tzinfo=UTC)
_SENSOR_COLUMNS = ("timestamp", "temperature", "pressure")
# Neither is a token pandas reads as NA, so a reader must report them rather than skip them.
_BAD_NUMBERS = ("ERR", "#VALUE!", "12..5", "sensor offline")
_BAD_TIMES = ("2024-03-01T25:61:00Z", "2024-02-30T10:00:00Z", "not-a-time", "01/03/2024 9h")


def sensor_rows(rng: random.Random, n: int, key: Key) -> list[list[str]]:
    """The CSV cells: a slow wave plus noise, then planted gaps, spikes and unparseable cells."""
    rows = []
    for i in range(n):
        stamp = (_SENSOR_START + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        temperature = 21.5 + 2.5 * math.sin(2 * math.pi * i / 240) + rng.gauss(0, 0.15)
        pressure = 1012.8 + 1.2 * math.sin(2 * math.pi * i / 360 + 1) + rng.gauss(0, 0.1)
        rows.append([stamp, f"{temperature:.2f}", f"{pressure:.1f}"])
    missing, spikes = max(4, n * 3 // 100), max(3, n // 100)
    # Distinct rows away from the edges, so no cell carries two planted problems.
    picked = rng.sample(range(5, n - 1), missing + spikes + 2)
    key["sensors"] = {
        "rows": n,
        "columns": list(_SENSOR_COLUMNS),
        "interval_s": 60,
        "missing": _gaps(rng, rows, sorted(picked[:missing])),
        "outliers": [_spike(rng, rows, row) for row in sorted(picked[missing:-2])],
        "unparseable": _bad_cells(rng, rows, picked[-2], picked[-1]),
    }
    return rows


def _cell(row: int, column: str, value: str | None = None) -> Record:
    where: Record = {"row": row, "line": row + 2, "column": column}
    return where if value is None else {**where, "value": value}


def _gaps(rng: random.Random, rows: list[list[str]], picked: list[int]) -> list[Record]:
    """Empty cells; the first picked row loses both readings."""
    out = []
    for row in picked:
        both = row == picked[0]
        for column in _SENSOR_COLUMNS[1:] if both else [pick(rng, _SENSOR_COLUMNS[1:])]:
            rows[row][_SENSOR_COLUMNS.index(column)] = ""
            out.append(_cell(row, column))
    return out


def _spike(rng: random.Random, rows: list[list[str]], row: int) -> Record:
    column = pick(rng, _SENSOR_COLUMNS[1:])
    index = _SENSOR_COLUMNS.index(column)
    jump = rng.uniform(25, 40) if index == 1 else rng.uniform(80, 150)
    value = float(rows[row][index]) + pick(rng, (-1, 1)) * jump
    rows[row][index] = f"{value:.{2 if index == 1 else 1}f}"
    return _cell(row, column, rows[row][index])


def _bad_cells(rng: random.Random, rows: list[list[str]], number: int, stamp: int) -> list[Record]:
    """One unparseable reading at row ``number`` and one broken timestamp at row ``stamp``."""
    column = pick(rng, _SENSOR_COLUMNS[1:])
    rows[number][_SENSOR_COLUMNS.index(column)] = pick(rng, _BAD_NUMBERS)
    rows[stamp][0] = pick(rng, _BAD_TIMES)
    cells = sorted(((number, column), (stamp, "timestamp")))
    return [_cell(r, c, rows[r][_SENSOR_COLUMNS.index(c)]) for r, c in cells]
