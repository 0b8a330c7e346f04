"""Executing a RestorePlan: fold the log window after the snapshot, then stream the state
bucket by bucket (snapshot bucket file merged with the bucket's changes) into a sink. Memory
holds the log window's winning changes and one bucket at a time.

Bucket files come mapped from a ``file://`` store; from any other (S3) by ranged GETs, a few
in flight (``objectstore.ranged``): a bucket nothing changed goes to a file sink part by part
as the parts arrive, never whole in memory; a bucket merged with changes is assembled from
its parts, then merged by its row index, and a base file of ``SPOOL_MIN_BYTES`` or more is
spooled to an unnamed local file as its parts arrive and copied out of it by runs, so memory
stays flat whatever a bucket grows to."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.changelog.repository import Repository
from daemon.changelog.window import offsets_after
from daemon.objectstore import ObjectStore, get_opened, get_view
from daemon.objectstore.ranged import RangedReader, joined, spooled
from daemon.progress import Progress
from daemon.restore.planner import RestorePlan, RestoreRefused, Scope
from daemon.restore.sinks import FileSink, RowSink, Sink, WrittenState, combine_written
from daemon.restore.workers import ShardPool, Workers, shard_count, shard_pool
from daemon.rows import Row
from daemon.snapshot.compactor import (
    choose_buckets,
    fold_window,
    merge_fold,
    new_changes,
    split_by_bucket,
    stop_offset,
)
from daemon.snapshot.dimensions import Screen, bucket_winners, screen_rows
from daemon.snapshot.manifest import BucketState, DataFile
from daemon.snapshot.rejects import Rejected, Rejections
from daemon.snapshot.runs import write_bucket_runs
from daemon.snapshot.state import BucketChanges, DropTimes
from daemon.spans import FileSource, Parts, RangeSource, whole

log = structlog.get_logger("vecwal.restore")

SPOOL_MIN_BYTES = 64 << 20
"""A base file at least this large, merged with changes for a sink that takes files and read
by ranged GETs (S3), goes to a local unnamed file as its parts arrive (``ranged.spooled``,
beside the sink's output where it says where, ``spool_dir``) instead of into one buffer. A
collection keeps the bucket count of its first compaction, so its bucket files grow with it:
in memory, a collection that grew a hundredfold would need a hundredfold buffer per worker.
Below this size the buffer is cheaper than the extra pass through the page cache."""


@dataclass
class RestoreResult:
    sink: str
    collections: dict[str, WrittenState]
    catalog: dict[str, Any]
    events_replayed: int
    bytes_read: int
    seconds: float
    records: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    logged_after: dict[str, int] = field(default_factory=dict)
    """Per "topic/partition", logged offsets beyond where the replay stopped."""
    rejected: list[Rejected] = field(default_factory=list)
    """Records left out because their dimension is not their collection's: by this restore,
    or by the compactions that wrote its snapshot (``snapshot.dimensions``)."""

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class BucketJob:
    """One bucket to restore: what the snapshot holds of it and what the log changed.
    Plain data, so it can run in a worker process."""

    collection: str
    bucket: int
    old: BucketState | None
    changes: BucketChanges | None
    drop: DropTimes | None
    tenants: frozenset[str] | None
    copyable: bool
    """Nothing changed the bucket's base: a sink that takes whole files gets its bytes."""
    model: tuple[str, str | None] | None = None
    """Only records of this embedding model (name, version or any), ``--embedding-model``."""
    screen_dimension: int | None = None
    """The snapshot did not check this bucket's records against the collection's dimension:
    check them (``restore_screened``) and leave out those of another."""

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.old.files] if self.old else []


def execute(repo: Repository, plan: RestorePlan, sink: Sink,
            workers: Workers | None = None, progress: Progress | None = None) -> RestoreResult:
    """Restore the plan into the sink. With ``workers`` (and a sink that is
    ``parallel_safe``, and enough to read) the log windows are folded and the buckets
    written in worker processes, one per shard of the buckets (``restore.workers``).
    ``progress`` hears ("buckets", written, total) and ("records", written, 0) as each
    bucket is written (by the parent, as the workers' buckets complete)."""
    count = 1
    if workers is not None and getattr(sink, "parallel_safe", False) \
            and plan.snapshot_bytes + plan.log_bytes >= workers.min_bytes:
        base = plan.snapshot
        count = shard_count(workers.count, [c.buckets for c in base.collections.values()]
                            if base else [])
    if count < 2 or workers is None:
        return _execute(repo, plan, sink, None, progress)
    with shard_pool(workers, count) as pool:
        return _execute(repo, plan, sink, pool, progress)


def _execute(repo: Repository, plan: RestorePlan, sink: Sink, pool: ShardPool | None,
             progress: Progress | None) -> RestoreResult:
    began = time.monotonic()
    scope = plan.scope
    base = plan.snapshot
    collections = set(scope.collections) if scope.collections else None
    tenants = set(scope.tenants) if scope.tenants else None
    stops = [stop_offset(w, plan.target.offsets) for w in plan.windows]
    folded = new_changes(base)
    carried = Rejections.of_manifest(repo, base).scoped(collections, tenants)
    if pool is None:
        for window, stop in zip(plan.windows, stops, strict=True):
            merge_fold(folded, fold_window(repo, window, plan.until_ms, stop, collections,
                                           tenants, skip=plan.skip))
        counts = {name: len(c.changes) for name, c in folded.records.items()}
        carried.supersede({n: c.changes.keys() for n, c in folded.records.items()},
                          folded.catalog)
    else:  # each worker holds its shard's changes; the catalog comes back from all alike
        shards = pool.fold(plan.windows, plan.until_ms, stops, collections, tenants,
                           plan.skip)
        for part in shards[0].windows:
            merge_fold(folded, part)
        counts = {}
        for shard in shards:
            for name, n in shard.changes.items():
                counts[name] = counts.get(name, 0) + n
    catalog = folded.catalog.live()
    names = set(base.collections if base else ()) | {n for n, c in counts.items() if c}
    names = {n for n in names if scope.has_collection(n)}
    bucket_counts = {}
    for name in names:
        prev = base.collections.get(name) if base else None
        bucket_counts[name] = prev.buckets if prev else choose_buckets(counts.get(name, 0),
                                                                       16, 50_000)
    by_bucket: dict[tuple[str, int], BucketChanges | None] = {}
    screen = Screen(folded.catalog, base, carried)  # records of another dimension
    if pool is None:
        for name in names:
            changes = folded.records.get(name, BucketChanges())
            screen.changes(name, changes)
            for b, in_bucket in split_by_bucket(changes, bucket_counts[name]).items():
                by_bucket[(name, b)] = in_bucket
        folded.records.clear()  # the jobs hold the changes now
    else:  # the workers hold the changes: they split and check them
        split = pool.split(bucket_counts, screen.dimensions,
                           {n: folded.catalog.drop_filter(n) for n in screen.dimensions},
                           carried.keys_by_collection())
        carried.supersede(split.changed, folded.catalog)
        screen.found(split.rejected)
        by_bucket = dict.fromkeys(split.buckets)
    if scope.strict:
        _check_collections(scope.collections, names, catalog, base)
        _check_tenants(scope.tenants, names, catalog, base, counts)
    sink.begin()
    # The catalog first: a database rebuilt from the sink needs each collection's schema
    # (dimension, metric, index) before its first record.
    scoped_catalog = _scope_catalog(catalog, plan)
    sink.write_catalog(scoped_catalog)
    jobs: list[BucketJob] = []
    for name in sorted(names):
        prev = base.collections.get(name) if base else None
        buckets = sorted({b for (n, b) in by_bucket if n == name}
                         | {s.bucket for s in (prev.states if prev else [])})
        drop = folded.catalog.drop_filter(name)
        check = screen.recheck[name] if screen.needs_buckets(name, drop) else None
        for b in buckets:
            old = prev.bucket(b) if prev else None
            changed = (name, b) in by_bucket
            copyable = (old is not None and old.base is not None and not old.deltas
                        and not changed and scope.tenants is None
                        and scope.embedding_model is None
                        and name not in folded.touched_by_drop and check is None)
            jobs.append(BucketJob(name, b, old, by_bucket.get((name, b)), drop, scope.tenants,
                                  copyable, scope.embedding_model,
                                  check if old is not None else None))
    bytes_read = folded.bytes_read + sum(f.bytes for j in jobs
                                         for f in (j.old.files if j.old else []))
    done = pool.restore(jobs, sink, progress) if pool else \
        _run_serial(repo, jobs, sink, progress)
    parts: dict[str, list[WrittenState]] = {name: [] for name in sorted(names)}
    for job, (state, found) in zip(jobs, done, strict=True):
        parts[job.collection].append(state)
        screen.found(found)
    written: dict[str, WrittenState] = {}
    for name, collection_parts in parts.items():
        written[name] = combine_written(collection_parts)
        log.info("collection restored" if getattr(sink, "writes", True)
                 else "collection compared", collection=name, records=written[name].records,
                 sink=sink.name)
    sink.finish()
    screen.log_new("restore")
    seconds = time.monotonic() - began
    return RestoreResult(sink.name, written, scoped_catalog, folded.events, bytes_read, seconds,
                         records=sum(w.records for w in written.values()),
                         extra={"workers": pool.count if pool else 1},
                         logged_after=offsets_after(plan.windows, folded.cut),
                         rejected=screen.rejections.records())


def _check_collections(wanted: frozenset[str] | None, found: set[str], catalog: dict[str, Any],
                       base: Any) -> None:
    """A collection asked for (``--collection``) that the backup does not hold at the target
    is refused before anything is written: a typo would otherwise restore nothing, and pass."""
    if not wanted:
        return
    known = found | set(catalog.get("collections", {})) | set(base.collections if base else ())
    missing = sorted(wanted - known)
    if missing:
        listed = sorted(known)
        raise RestoreRefused(
            f"collection {', '.join(map(repr, missing))} is not in the backup at the target",
            ("collections there: " + ", ".join(listed[:20]) + (" ..." if len(listed) > 20
                                                               else "")) if listed else
            "the backup holds no collection at the target: choose a later one")


def _check_tenants(wanted: frozenset[str] | None, names: set[str], catalog: dict[str, Any],
                   base: Any, log_changes: dict[str, int]) -> None:
    """Refuse before anything is written when no tenant asked for (``--tenant``) can have a
    record in the restored collections: in none of the snapshot's buckets, not in the
    catalog, and the log holds no change of theirs. (With several tenants, some present, the
    report names those that restored nothing.)"""
    if not wanted or any(log_changes.get(n, 0) for n in names):
        return
    known: set[str] = set()
    for name in names:
        known |= set(catalog.get("tenants", {}).get(name, {}))
        state = base.collections.get(name) if base else None
        if state is not None:
            known |= set(state.tenants)
    if wanted & known:
        return
    listed = sorted(known)
    raise RestoreRefused(
        f"tenant {', '.join(map(repr, sorted(wanted)))} has no record in "
        f"{', '.join(sorted(names)) or 'any collection'} at the target",
        ("tenants there: " + ", ".join(repr(t) for t in listed[:20])
         + (" ..." if len(listed) > 20 else "")) if listed else
        "those collections hold no record at the target")


def _run_serial(repo: Repository, jobs: list[BucketJob], sink: Sink,
                progress: Progress | None) -> list[tuple[WrittenState, list[Rejected]]]:
    out = []
    records = 0
    mapped = hasattr(repo.store, "get_view")  # mapped files: nothing to fetch
    with RangedReader(repo.store) as reader:
        # One stream of ranged GETs over every bucket file in order: the next bucket's first
        # parts are in flight while this one's last are written.
        files = reader.each([] if mapped else
                            [(f.path, f.bytes) for j in jobs for f in _files(j)])
        for job in jobs:
            out.append(fetch_and_restore(repo.store, job, sink, files))
            if progress is not None:
                records += out[-1][0].records
                progress("buckets", len(out), len(jobs))
                progress("records", records, 0)
    return out


def _files(job: BucketJob) -> list[DataFile]:
    return list(job.old.files) if job.old else []


def fetch_and_restore(store: ObjectStore, job: BucketJob, sink: Sink,
                      files: Iterator[Iterator[bytes]]) -> tuple[WrittenState, list[Rejected]]:
    """``restore_screened`` with the job's bucket files read from ``store``: mapped where the
    store maps files (``file://``; an encrypted one's base files opened as they are copied
    out, ``get_opened``, when the bucket is written by runs or whole), else from ``files``
    (``RangedReader.each`` over the jobs' files in order: one iterator of parts per file;
    not used for a mapped store). A bucket
    copied whole goes to the sink part by part as the parts arrive, so it is never in memory
    whole; a bucket merged with changes is assembled from its parts first (its rows are
    merged by its row index), its base spooled to a local file instead when it is large
    (``SPOOL_MIN_BYTES``) and the bucket is written by runs."""
    if hasattr(store, "get_view"):
        copied = isinstance(sink, FileSink) and job.model is None and (
            job.screen_dimension is None or job.old is None)
        return restore_screened(job, [
            get_opened(store, f.path) if copied and f.kind == "base" else get_view(store, f.path)
            for f in _files(job)], sink)
    old = job.old
    if job.copyable and old is not None and isinstance(sink, FileSink):  # as restore_bucket
        return sink.write_file(job.collection, job.bucket,
                               Parts(next(files), sum(f.bytes for f in _files(job))),
                               WrittenState(old.records, old.digest, dict(old.tenants))), []
    by_runs = isinstance(sink, FileSink) and job.model is None and job.screen_dimension is None
    spools: list[FileSource] = []
    try:
        datas: list[bytes | memoryview | RangeSource] = []
        for f in _files(job):
            if by_runs and f.kind == "base" and f.bytes >= SPOOL_MIN_BYTES:
                spools.append(spooled(next(files), f.bytes, getattr(sink, "spool_dir", None)))
                datas.append(spools[-1])
            else:
                datas.append(memoryview(joined(next(files), f.bytes)))
        return restore_screened(job, datas, sink)
    finally:
        for spool in spools:
            spool.close()


def restore_screened(job: BucketJob, datas: Sequence[bytes | memoryview | RangeSource], sink: Sink
                     ) -> tuple[WrittenState, list[Rejected]]:
    """``restore_bucket``, after checking the bucket's records against its collection's
    dimension when the snapshot did not (``job.screen_dimension``): those of another get a
    tombstone among the changes, and are returned."""
    if job.screen_dimension is None or job.old is None:
        return restore_bucket(job, datas, sink), []
    tombs, found = screen_rows(job.collection, bucket_winners(job.old.files, _read(datas),
                                                              job.changes, job.drop),
                               job.screen_dimension)
    changes = job.changes
    if tombs:
        changes = BucketChanges(dict(changes.changes) if changes else {})
        for t in tombs:
            changes.add(t)
    job = dataclasses.replace(job, changes=changes, screen_dimension=None)
    return restore_bucket(job, datas, sink), found


def restore_bucket(job: BucketJob, datas: Sequence[bytes | memoryview | RangeSource], sink: Sink
                   ) -> WrittenState:
    """Write one bucket into the sink: its base file as it is when nothing changed it (and
    the sink takes files), else the base copied by runs with the changed rows in between
    (``restore.runs``), or for sinks that take records, its rows merged."""
    old = job.old
    if job.copyable and old is not None and isinstance(sink, FileSink):
        return sink.write_file(job.collection, job.bucket, [whole(datas[0])],
                               WrittenState(old.records, old.digest, dict(old.tenants)))
    if isinstance(sink, FileSink) and job.model is None:  # copied by runs of rows
        enc = write_bucket_runs(old.files if old else [], datas,
                                job.changes.rows().values() if job.changes else (), job.drop,
                                job.tenants, getattr(sink, "codec", "null"))
        if not enc.records:
            return WrittenState()
        return sink.write_file(job.collection, job.bucket, enc.chunks,
                               WrittenState(enc.records, enc.digest, enc.tenants))
    rows = bucket_rows(old, _read(datas), job.changes, job.drop, job.tenants)
    if job.model is not None:  # after the merge: a newer write of another model wins first
        has_model = Scope(embedding_model=job.model).has_model
        rows = (r for r in rows if has_model(r.record()))
    if isinstance(sink, RowSink):
        return sink.write_rows(job.collection, job.bucket, rows)
    return sink.write_bucket(job.collection, job.bucket, (r.record() for r in rows))


def _read(datas: Sequence[bytes | memoryview | RangeSource]) -> list[bytes | memoryview]:
    """The files' bytes, for readers that take rows one by one (an opened file read whole)."""
    return [d if isinstance(d, (bytes, memoryview)) else d.read(0, len(d)) for d in datas]


def bucket_rows(old: BucketState | None, datas: list[bytes | memoryview],
                changes: BucketChanges | None, drop: DropTimes | None,
                tenants: frozenset[str] | None) -> Iterator[Row]:
    """The bucket's records at the target, sorted by key: its base, then its deltas in order,
    then the log's changes, the greatest version winning per key."""
    merged = bucket_winners(old.files if old else [], datas, changes, drop)
    if tenants is None:
        return merged
    return (r for r in merged if r.key[0] in tenants)


def _scope_catalog(catalog: dict[str, Any], plan: RestorePlan) -> dict[str, Any]:
    scope = plan.scope
    colls = {n: s for n, s in catalog["collections"].items() if scope.has_collection(n)}
    aliases = {a: c for a, c in catalog["aliases"].items() if scope.has_collection(c)}
    tenants = {c: {t: s for t, s in ts.items() if scope.tenants is None or t in scope.tenants}
               for c, ts in catalog["tenants"].items() if scope.has_collection(c)}
    return {"collections": colls, "aliases": aliases, "tenants": tenants,
            "restored_to": {"target": plan.target.label, "until_ms": plan.until_ms,
                            "offsets": plan.target.offsets,
                            "snapshot": plan.snapshot.id if plan.snapshot else None}}
