"""Order-preserving parallel map over worker processes, for CPU-bound data preparation."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    num_workers: int | None = None,
    chunksize: int = 8,
) -> Iterator[R]:
    """``map(fn, items)`` on ``num_workers`` spawned processes, results in input order.

    Spawned (not forked) workers start clean, so libraries with process-global state (espeak-ng)
    initialise once in each worker; as with any spawned process, the calling script needs an
    ``if __name__ == "__main__":`` guard. ``num_workers`` <= 1 runs in this process.

    Args:
        fn: a module-level (picklable) function.
        items: its inputs.
        num_workers: processes; None means every usable core.
        chunksize: items sent to a worker at a time.
    """
    workers = default_workers() if num_workers is None else num_workers
    if workers <= 1:
        yield from map(fn, items)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(fn, items, chunksize=chunksize)
