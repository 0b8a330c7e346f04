"""Worker processes for large restores, one per *shard* of the buckets.

Every record key has a 64-bit hash (``key_hash``); its bucket is the hash modulo the
collection's bucket count, a power of two. With a shard count that divides every bucket
count, the hash modulo the shard count is the bucket modulo the shard count, so a shard owns
whole buckets in every collection. The work goes:

1. ``fold``: each worker reads every partition window of the plan but keeps only the changes
   of its own shard (the others' events are walked, not spliced or hashed), and holds them;
   the parent gets back the catalog events, the counts, and where each window stopped;
2. ``split``: given each collection's bucket count, each worker splits what it holds by
   bucket and says which buckets it changes;
3. ``restore``: each bucket job goes to the worker of its shard, which writes the bucket
   with the changes it holds.

So the log's changes (hundreds of MB for a long window) never cross a process boundary:
what does is plans, counts and catalog events. Each worker opens the repository's store
itself (spawned, not forked: an S3 client is not fork-safe). Only sinks that write each
bucket on their own (``parallel_safe``: the directory sink) are used this way."""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daemon.changelog.repository import Repository
from daemon.changelog.window import PartitionWindow
from daemon.objectstore import ObjectStore
from daemon.objectstore.ranged import RangedReader
from daemon.progress import Progress
from daemon.restore.sinks import Sink, WrittenState
from daemon.snapshot.compactor import WindowFold, fold_window, split_by_bucket
from daemon.snapshot.datafile import Key
from daemon.snapshot.dimensions import reject_changes
from daemon.snapshot.rejects import Rejected
from daemon.snapshot.state import BucketChanges, DropTimes

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


def shard_count(workers: int, bucket_counts: list[int]) -> int:
    """The most shards, at most ``workers``, that divide every bucket count (powers of two
    all; a collection new since the snapshot gets at least 16 buckets)."""
    count = 1
    while count * 2 <= min(workers, 16) and all(n % (count * 2) == 0 for n in bucket_counts):
        count *= 2
    return count


@dataclass
class ShardFold:
    """What one worker's fold tells the parent: each window's catalog events, counts and
    stop (its ``records`` left empty), and how many changes of each collection it holds."""

    windows: list[WindowFold]
    changes: dict[str, int] = field(default_factory=dict)


@dataclass
class ShardSplit:
    """What the workers' split tells the parent: the (collection, bucket) pairs with changes,
    the changes left out for their dimension, and which watched keys have a change."""

    buckets: set[tuple[str, int]] = field(default_factory=set)
    rejected: list[Rejected] = field(default_factory=list)
    changed: dict[str, set[Key]] = field(default_factory=dict)


class ShardPool:
    def __init__(self, pools: list[ProcessPoolExecutor]) -> None:
        self._pools = pools

    @property
    def count(self) -> int:
        return len(self._pools)

    def fold(self, windows: list[PartitionWindow], until_ms: int | None,
             stops: list[int | None], collections: set[str] | None,
             tenants: set[str] | None) -> list[ShardFold]:
        futures = [pool.submit(_fold, windows, until_ms, stops, collections, tenants, k,
                               self.count) for k, pool in enumerate(self._pools)]
        return [f.result() for f in futures]

    def split(self, bucket_counts: dict[str, int], dimensions: dict[str, int],
              drops: dict[str, DropTimes | None], watch: dict[str, set[Key]]) -> ShardSplit:
        """Which (collection, bucket) pairs have changes, once the workers split by bucket;
        each worker first leaves out its live changes (``drops``) of another dimension than
        ``dimensions`` says (``snapshot.dimensions``), and says which keys of ``watch`` it
        changes."""
        futures = [pool.submit(_split, bucket_counts, dimensions, drops, watch)
                   for pool in self._pools]
        out = ShardSplit()
        for f in futures:
            part = f.result()
            out.buckets |= part.buckets
            out.rejected += part.rejected
            for coll, keys in part.changed.items():
                out.changed.setdefault(coll, set()).update(keys)
        return out

    def restore(self, jobs: list[BucketJob], sink: Sink, progress: Progress | None = None
                ) -> list[tuple[WrittenState, list[Rejected]]]:
        """Each job written by its shard's worker; results in the jobs' order. ``progress``
        hears ("buckets", n, total) and ("records", n, 0) here, as the buckets complete."""
        futures: list[Future[tuple[WrittenState, list[Rejected]]]] = [
            self._pools[job.bucket % self.count].submit(_restore, job, sink) for job in jobs]
        if progress is not None:
            records = 0
            for n, f in enumerate(as_completed(futures), 1):
                records += f.result()[0].records
                progress("buckets", n, len(futures))
                progress("records", records, 0)
        return [f.result() for f in futures]


@contextmanager
def shard_pool(workers: Workers, count: int) -> Iterator[ShardPool]:
    ctx = multiprocessing.get_context("spawn")
    with ExitStack() as stack:
        pools = [stack.enter_context(ProcessPoolExecutor(
            1, mp_context=ctx, initializer=_init, initargs=(workers.open_store,)))
            for _ in range(count)]
        yield ShardPool(pools)


# -- in the worker --------------------------------------------------------------------------
@dataclass
class _Held:
    repo: Repository
    reader: RangedReader
    """This worker's bucket file reads: ``DEPTH`` ranged GETs in flight."""
    changes: dict[str, BucketChanges] = field(default_factory=dict)
    buckets: dict[tuple[str, int], BucketChanges] = field(default_factory=dict)


_STATE: list[_Held] = []


def _init(open_store: Callable[[], ObjectStore]) -> None:
    store = open_store()
    _STATE.append(_Held(Repository(store), RangedReader(store)))


def _fold(windows: list[PartitionWindow], until_ms: int | None, stops: list[int | None],
          collections: set[str] | None, tenants: set[str] | None, shard: int,
          count: int) -> ShardFold:
    held = _STATE[0]
    held.changes, held.buckets = {}, {}
    out = ShardFold([])
    for window, stop in zip(windows, stops, strict=True):
        part = fold_window(held.repo, window, until_ms, stop, collections, tenants,
                           shard=(shard, count))
        for coll, changes in part.records.items():
            into = held.changes.setdefault(coll, BucketChanges())
            for change in changes.changes.values():
                into.add(change)
        out.windows.append(dataclasses.replace(part, records={}))
    out.changes = {coll: len(c.changes) for coll, c in held.changes.items()}
    return out


def _split(bucket_counts: dict[str, int], dimensions: dict[str, int],
           drops: dict[str, DropTimes | None], watch: dict[str, set[Key]]) -> ShardSplit:
    held = _STATE[0]
    out = ShardSplit()
    for coll, changes in held.changes.items():
        out.changed[coll] = {k for k in watch.get(coll, ()) if k in changes.changes}
        if coll in dimensions:
            out.rejected += reject_changes(coll, changes, dimensions[coll], drops.get(coll))
        for b, part in split_by_bucket(changes, bucket_counts[coll]).items():
            held.buckets[(coll, b)] = part
    held.changes = {}
    out.buckets = set(held.buckets)
    return out


def _restore(job: BucketJob, sink: Sink) -> tuple[WrittenState, list[Rejected]]:
    from daemon.restore.executor import fetch_and_restore

    held = _STATE[0]
    changes = held.buckets.pop((job.collection, job.bucket), None)
    job = dataclasses.replace(job, changes=changes)
    files = [] if hasattr(held.repo.store, "get_view") else \
        [(f.path, f.bytes) for f in (job.old.files if job.old else [])]
    return fetch_and_restore(held.repo.store, job, sink, held.reader.each(files))
