"""Worker processes for the clean stage: every core of the host (``clean.workers``).

The runner hands batches to workers and takes the results back in the order it handed them out,
never more than a few batches per worker in flight, so memory stays bounded and what the runner
writes does not depend on which worker finished first. With one local worker nothing is spawned:
the same function runs in the runner's own process.

Local workers are started with ``spawn`` (a fork of a process holding Arrow's thread pools is
not safe) and inherit the runner's environment, the offline settings included. The other
executor, a Ray cluster, is :mod:`offline.data.distributed`.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any, Literal, TypeVar

from offline.errors import DataError

T = TypeVar("T")
R = TypeVar("R")

# `auto` gives a dataset one worker per this much input, up to the cores this process may use:
# a small file is cleaned before a pool of workers would have started.
AUTO_BYTES_PER_WORKER = 8 << 20
# Batches in flight per worker: enough to keep each busy while the runner writes.
IN_FLIGHT_PER_WORKER = 2


def cores() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(workers: int | Literal["auto"], files: Iterable[Path]) -> int:
    """``clean.workers`` for one dataset: a number as given, ``auto`` by its size and the cores."""
    if workers != "auto":
        return workers
    size = sum(p.stat().st_size for p in files)
    return max(1, min(cores(), size // AUTO_BYTES_PER_WORKER))


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
    what: str = "",
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in the order of ``items``, ``fn`` run in ``workers`` processes.

    ``fn`` and ``initializer`` must be module-level functions; ``initializer(*initargs)`` runs
    once in each worker (with one worker: once, here). A worker that dies (killed, out of
    memory) is a :class:`~offline.errors.DataError` naming ``what``; nothing it did is kept.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield item, fn(item)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, initializer, initargs)
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield _next(pending, what)
        while pending:
            yield _next(pending, what)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        del pool
        _stop_resource_tracker()


def _stop_resource_tracker() -> None:
    """End the helper process ``spawn`` starts to track the pool's semaphores.

    It would otherwise outlive the clean until this process exits (a library caller, the test
    run); the pool's semaphores are released by then, and a later user of multiprocessing
    starts a new one. ``_stop`` is the standard library's own (private) way to end it.
    """
    gc.collect()  # the pool's queues, and with them their semaphores, are released here
    stop = getattr(resource_tracker._resource_tracker, "_stop", None)
    if stop is not None:
        stop()


def _next(pending: deque[tuple[T, Future[R]]], what: str) -> tuple[T, R]:
    item, future = pending.popleft()
    try:
        return item, future.result()
    except BrokenProcessPool:
        raise DataError(
            f"{what}: a worker process died (killed, or out of memory); nothing was written",
            fix="rerun; if it recurs, lower clean.workers or the steps' memory_mb, or check "
            "the kernel log (dmesg) for the out-of-memory killer",
        ) from None
