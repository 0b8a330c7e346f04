"""Worker processes for large restores: partition windows are folded, and buckets written, by
``Workers.count`` processes at once. Each worker opens the repository's store itself (spawned,
not forked: an S3 client is not fork-safe) and returns plain data: a window's winning changes
as encoded rows, or what a bucket wrote. Only sinks that write each bucket on their own
(``parallel_safe``: the directory sink) are used this way."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from daemon.changelog.repository import Repository
from daemon.changelog.window import PartitionWindow
from daemon.objectstore import ObjectStore
from daemon.restore.sinks import Sink, WrittenState
from daemon.snapshot.compactor import WindowFold, fold_window

if TYPE_CHECKING:
    from daemon.restore.executor import BucketJob


@dataclass(frozen=True)
class Workers:
    """Restore in ``count`` worker processes, each opening the store with ``open_store``
    (picklable: a module-level function or a partial of one), when at least ``min_bytes``
    are to be read: starting a worker costs about a second."""

    count: int
    open_store: Callable[[], ObjectStore]
    min_bytes: int = 256 << 20
    """Below this many bytes to read, one process does it all."""


class WorkerPool:
    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self._pool = pool

    def fold(self, windows: list[PartitionWindow], until_ms: int | None,
             stops: list[int | None], collections: set[str] | None,
             tenants: set[str] | None) -> Iterator[WindowFold]:
        """Each window folded in a worker, in order (as they finish, in windows' order)."""
        futures = [self._pool.submit(_fold, w, until_ms, stop, collections, tenants)
                   for w, stop in zip(windows, stops, strict=True)]
        return (f.result() for f in futures)

    def restore(self, jobs: list[BucketJob], sink: Sink) -> list[WrittenState]:
        futures = [self._pool.submit(_restore, job, sink) for job in jobs]
        return [f.result() for f in futures]


@contextmanager
def worker_pool(workers: Workers) -> Iterator[WorkerPool]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers.count, mp_context=ctx, initializer=_init,
                             initargs=(workers.open_store,)) as pool:
        yield WorkerPool(pool)


# -- in the worker --------------------------------------------------------------------------
_REPO: list[Repository] = []


def _init(open_store: Callable[[], ObjectStore]) -> None:
    _REPO.append(Repository(open_store()))


def _fold(window: PartitionWindow, until_ms: int | None, stop: int | None,
          collections: set[str] | None, tenants: set[str] | None) -> WindowFold:
    return fold_window(_REPO[0], window, until_ms, stop, collections, tenants)


def _restore(job: BucketJob, sink: Sink) -> WrittenState:
    from daemon.restore.executor import restore_bucket

    store = _REPO[0].store
    return restore_bucket(job, [store.get(p) for p in job.paths], sink)
