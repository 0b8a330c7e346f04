"""Worker processes for large restores, one per *shard* of the buckets.

Every record key has a 64-bit hash (``key_hash``); its bucket is the hash modulo the
collection's bucket count, a power of two. With a shard count that divides every bucket
count, the hash modulo the shard count is the bucket modulo the shard count, so a shard owns
whole buckets in every collection. The work goes:

1. ``fold``: the log is read once, split between the workers: each partition window is cut
   into consecutive sub-windows (``changelog.window.split_window``), which are spread over
   the workers by bytes (``share_log``, pure). Each worker folds its sub-windows, keeping the
   winning change of every key it reads, and tells the parent each sub-window's catalog
   events, counts and stop;
2. the parent keeps, per window, its sub-windows in order up to the first a stop rule ended
   (the window's reading ends there, as one reader's would: what came after is dropped);
3. ``exchange``: each worker keeps its own shard's changes of what it kept and packs the
   others' (their bytes in one buffer per shard: ``_pack``) into files of a private
   temporary directory, which their workers read and delete (``_take``): only paths pass
   through the parent. Versions decide between changes of one key from several sub-windows,
   as between windows, so each worker then holds exactly its shard's changes;
4. ``split``: given each collection's bucket count, each worker splits what it holds by
   bucket and says which buckets it changes;
5. ``restore``: each bucket job goes to the worker of its shard, which writes the bucket
   with the changes it holds, its files read mapped (``file://``) or by ranged GETs.

So each segment is fetched and scanned once whatever the worker count (before, every worker
read every segment and kept its shard's changes); what crosses a process boundary is plans,
counts and catalog events, and the other shards' changed rows once, through files. Each
worker opens the repository's store itself (spawned, not forked: an S3 client is not
fork-safe). Only sinks that write each bucket on their own (``parallel_safe``: the directory
sink) are used this way."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from daemon.changelog.repository import Repository
from daemon.changelog.window import PartitionWindow, split_window
from daemon.errors import VecwalError
from daemon.objectstore import ObjectStore
from daemon.objectstore.ranged import RangedReader
from daemon.progress import Progress
from daemon.restore.sinks import Sink, WrittenState
from daemon.rows import Key, Row, Version, key_hash
from daemon.snapshot.compactor import Skip, WindowFold, fold_window, split_by_bucket
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
             tenants: set[str] | None, skip: Skip | None = None) -> list[ShardFold]:
        """The windows folded by the workers together, each segment read once (steps 1-3 of
        the module): each worker then holds its shard's changes; each ShardFold gives the
        windows' catalog events, counts and stops (alike for all) and that shard's counts."""
        subs = [(wi, gi, sub) for wi, w in enumerate(windows)
                for gi, sub in enumerate(split_window(w, self.count))]
        shares = share_log([sub.bytes for _, _, sub in subs], self.count)
        futures = [pool.submit(_fold, [subs[i] for i in share], until_ms, stops, collections,
                               tenants, skip)
                   for pool, share in zip(self._pools, shares, strict=True)]
        parts: dict[tuple[int, int], WindowFold | VecwalError] = {}
        for f in futures:
            parts.update(f.result())
        kept: set[tuple[int, int]] = set()
        combined = []
        for wi, window in enumerate(windows):
            chosen = []
            for gi in sorted(g for w, g in parts if w == wi):
                part = parts[(wi, gi)]
                if isinstance(part, VecwalError):
                    raise part  # one reader would have come to it too
                chosen.append(part)
                kept.add((wi, gi))
                if part.stopped_early:
                    break  # the window's reading ends here: later sub-windows are dropped
            combined.append(_combined(window, chosen))
        # The rows go from worker to worker through files in a private temporary directory,
        # not through this process: only their paths cross here.
        with tempfile.TemporaryDirectory(prefix="vecwal-restore-") as spool:
            sent = [f.result() for f in [pool.submit(_exchange, kept, k, self.count, spool)
                                         for k, pool in enumerate(self._pools)]]
            counts = [f.result() for f in [
                pool.submit(_take, [out[k] for out in sent if k in out])
                for k, pool in enumerate(self._pools)]]
        return [ShardFold(combined, c) for c in counts]

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
    parts: dict[tuple[int, int], dict[str, BucketChanges]] = field(default_factory=dict)
    """(window, sub-window) -> the changes this worker folded there, until ``_exchange``."""


_STATE: list[_Held] = []


def _init(open_store: Callable[[], ObjectStore]) -> None:
    store = open_store()
    _STATE.append(_Held(Repository(store), RangedReader(store)))


def _fold(subs: list[tuple[int, int, PartitionWindow]], until_ms: int | None,
          stops: list[int | None], collections: set[str] | None, tenants: set[str] | None,
          skip: Skip | None = None) -> dict[tuple[int, int], WindowFold | VecwalError]:
    """Fold this worker's sub-windows ((window, sub-window, its segments)), every key's
    change kept (held until ``_exchange``); the parent gets the rest of each fold. A
    sub-window that cannot be read (a damaged or missing segment) gives its error instead:
    the parent raises it only if one reader would have come to it, not when the target
    stopped the window's reading before it."""
    held = _STATE[0]
    held.changes, held.buckets, held.parts = {}, {}, {}
    out: dict[tuple[int, int], WindowFold | VecwalError] = {}
    for wi, gi, sub in subs:
        try:
            part = fold_window(held.repo, sub, until_ms, stops[wi], collections, tenants,
                               skip=skip)
        except VecwalError as exc:
            out[(wi, gi)] = exc
            continue
        held.parts[(wi, gi)] = part.records
        out[(wi, gi)] = dataclasses.replace(part, records={})
    return out


Packed = tuple[list[Key], list[Version], list[int], list[int], list[bool], list[int], bytes]
"""Rows sent to another worker: keys, versions, content lengths, hashes, tombstone flags,
byte lengths, and every row's bytes in one buffer."""


def _exchange(kept: set[tuple[int, int]], shard: int, count: int, spool: str
              ) -> dict[int, str]:
    """Keep this shard's changes of the kept sub-windows; the other shards' packed, by shard
    and collection (each key's winner among this worker's sub-windows only), each shard's
    into a file in ``spool``: the path of each returned."""
    held = _STATE[0]
    mine: dict[str, BucketChanges] = {}
    others: dict[int, dict[str, BucketChanges]] = {}
    for part, records in sorted(held.parts.items()):
        if part not in kept:
            continue
        for coll, changes in records.items():
            for row in changes.changes.values():
                k = key_hash(*row.key) % count
                into = mine if k == shard else others.setdefault(k, {})
                bucket_changes = into.get(coll)
                if bucket_changes is None:
                    bucket_changes = into[coll] = BucketChanges()
                bucket_changes.add(row)
    held.parts = {}
    held.changes = mine
    paths = {}
    for k, by_coll in others.items():
        paths[k] = os.path.join(spool, f"{shard}-to-{k}.pickle")
        with open(paths[k], "xb") as f:
            pickle.dump({coll: _pack(c.changes.values()) for coll, c in by_coll.items()}, f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        by_coll.clear()
    return paths


def _take(paths: list[str]) -> dict[str, int]:
    """Merge the changes of this shard that other workers read (``_exchange``'s files, our
    own: nothing else writes the private spool); the count per collection."""
    held = _STATE[0]
    for path in paths:
        with open(path, "rb") as f:
            pack: dict[str, Packed] = pickle.load(f)
        os.unlink(path)
        for coll, packed in pack.items():
            into = held.changes.setdefault(coll, BucketChanges())
            for row in _unpack(packed):
                into.add(row)
    return {coll: len(c.changes) for coll, c in held.changes.items()}


def _pack(rows: Iterable[Row]) -> Packed:
    listed = list(rows)
    raws = [r.raw if r.raw is not None else b"" for r in listed]
    return ([r.key for r in listed], [r.version for r in listed],
            [r.content_len for r in listed], [r.hash for r in listed],
            [r.deleted for r in listed], [len(raw) for raw in raws], b"".join(raws))


def _unpack(packed: Packed) -> Iterator[Row]:
    keys, versions, content_lens, hashes, deleted, lengths, blob = packed
    view = memoryview(blob)
    at = 0
    for j, n in enumerate(lengths):
        yield Row(keys[j], versions[j], view[at:at + n], content_lens[j], hashes[j], deleted[j])
        at += n


def _combined(window: PartitionWindow, parts: list[WindowFold]) -> WindowFold:
    """The fold of a window from the folds of its kept sub-windows, in order (no records:
    the workers hold them)."""
    last = parts[-1]
    return WindowFold(window.topic, window.partition, window.start, {},
                      [ev for p in parts for ev in p.catalog_events],
                      sum(p.events for p in parts), sum(p.bytes_read for p in parts),
                      last.stopped_at, last.stopped_early)


def share_log(sizes: list[int], count: int) -> list[list[int]]:
    """Which sub-windows (by index, of the given byte sizes) each of ``count`` workers folds:
    the largest first, each to the least loaded worker; each worker's in index order (pure)."""
    loads = [0] * count
    shares: list[list[int]] = [[] for _ in range(count)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        k = min(range(count), key=lambda k: (loads[k], k))
        loads[k] += sizes[i]
        shares[k].append(i)
    return [sorted(share) for share in shares]


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
