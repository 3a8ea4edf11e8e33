"""Worker processes: the start method of data-loader workers, and an order-preserving parallel map
for CPU-bound data preparation."""

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


# what the loaders' datasets and collators need (the multiprocessing default preloads only __main__)
FORKSERVER_PRELOAD = ("__main__", "seed_asr.data.datamodule", "seed_asr.data.text_datamodule")


def loader_worker_context() -> multiprocessing.context.BaseContext | None:
    """How ``DataLoader`` workers start: from a fork server where the platform has one, else the
    platform's default (None).

    A training process runs threads (gloo, Lightning's process observer, loggers) by the time its
    loaders start workers. Forking it copies whatever interpreter locks those threads hold at that
    instant, and CPython before 3.12 can then deadlock the child in ``PyOS_AfterFork_Child``
    (python/cpython#112275): the worker never starts, its rank waits for a batch forever and the other
    ranks wait in a collective. The fork server is a clean single-threaded process that imports the
    main module and the loaders' modules once, so workers still start in a fraction of a second.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    # imported once in the server (taking effect when it starts), so that a worker is a plain fork
    context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return context


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
