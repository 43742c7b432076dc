"""The one interface every cleaning step has.

A step is built once per dataset from its params (``build(params, ctx)``) and then called on each
canonical record batch (:mod:`offline.data.records`) in stream order. It returns an
:class:`Outcome`: the batch (same rows, same order, text possibly rewritten), one reason per row
(``None`` keeps the row, a string rejects it), and any tallies of its own (``pii.email``...). The
runner, not the step, drops the rejected rows, writes them to the ledger with the step's name and
the reason, and counts in/out/rejected. A step keeps no global state; state it needs across
batches (a dedup index) lives on the instance and is released by ``close()``, which may return
final tallies (cluster counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import pyarrow as pa

from offline.config import Strict


@dataclass
class Context:
    """What a step may need beyond its params: where to spill, which dataset, which kind."""

    workdir: Path
    dataset: str
    kind: str


@dataclass
class Outcome:
    """What a step did to one batch."""

    batch: pa.RecordBatch
    reasons: list[str | None]
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def keep_all(cls, batch: pa.RecordBatch, counts: dict[str, int] | None = None) -> Outcome:
        return cls(batch, [None] * batch.num_rows, counts or {})


class Step(Protocol):
    """A cleaning step: ``name``, the kinds it applies to, and a call per batch."""

    name: str
    kinds: tuple[str, ...]

    def __call__(self, batch: pa.RecordBatch) -> Outcome: ...

    def close(self) -> dict[str, int]: ...


@runtime_checkable
class Scrubber(Protocol):
    """A step that can also hide what it finds in a column it does not rewrite (the ledger's
    raw rows, unmapped fields), so no output keeps a value the step hides in the text."""

    def scrub(self, array: pa.Array) -> pa.Array: ...


@dataclass(frozen=True)
class StepSpec:
    """How ``params.yaml`` names a step, its parameters, and how to build it.

    ``order`` places the step in the default chain (``None``: only when listed). Where the
    step's tallies go in ``metrics/clean.json``: ``counts_in`` sums its per-batch counts into
    that section; ``final_in`` puts the tallies of ``close()`` under ``section[name]``.

    A step that is not ``stateful`` sees each batch on its own (and its ``close()`` returns
    nothing), so the runner may call copies of it in worker processes. A ``stateful`` one (a
    dedup index) runs in the runner's own process, in stream order; its ``prepare(params,
    batch)``, when given, is the part that depends on the rows alone, row-aligned arrays that
    workers may compute ahead, and the step then offers ``apply(batch, prepared)``
    (:class:`Prepared`).

    ``shuffle`` says how a stateful step's index can be split across a cluster
    (:mod:`offline.data.distributed`) with every decision unchanged: ``key``: ``prepare`` gives
    one uint64 key per row and a row's fate depends only on the earlier rows of its key;
    ``bands``: it gives ``(signatures, band keys)`` and a row's fate depends only on the rows
    linked to it through shared band keys.
    """

    name: str
    params: type[Strict]
    build: Callable[[Any, Context], Step]
    order: int | None = None
    counts_in: str | None = None
    final_in: str | None = None
    stateful: bool = False
    prepare: Callable[[Any, pa.RecordBatch], Any] | None = None
    shuffle: Literal["key", "bands"] | None = None


class Prepared(Protocol):
    """A stateful step whose per-row work (``StepSpec.prepare``) may be done ahead."""

    name: str

    def apply(self, batch: pa.RecordBatch, prepared: Any) -> Outcome: ...
