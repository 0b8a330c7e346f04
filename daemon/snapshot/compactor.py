"""Compaction: the previous snapshot plus the log after its cut, folded into a new snapshot.

Order of work (a compaction that dies at any point leaves no visible snapshot):
1. take the compaction lease (or work under the caller's: a pin of a past instant);
2. choose the cut time: the requested time, never past the repository's valid-through, and
   the base: the newest snapshot (with ``exact``, the newest at or before the cut time);
3. read each partition's log from the previous cut to the first event after the cut time;
4. group record changes by collection and bucket (the winning change per key) and apply
   catalog events;
5. fold the changes into each touched bucket (a drop in the window touches every bucket of
   its collection): the winning changes are written as a new *delta* file beside the bucket's
   base, computed from the row indexes in the files' headers alone; a bucket whose deltas
   would outgrow ``delta_ratio`` of its base, or that a drop touched, gets a new base with
   the whole merged state instead. Untouched buckets are referenced, not copied;
6. write the manifest, create-only: only now does the snapshot exist.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.changelog.repository import Repository
from daemon.changelog.scan import Event
from daemon.changelog.window import (
    PartitionWindow,
    WindowReader,
    offsets_after,
    windows_after,
)
from daemon.config import Config
from daemon.errors import VecwalError
from daemon.events import RECORD_OPS
from daemon.objectstore import get_view
from daemon.progress import Progress
from daemon.rows import Key, Row, RowSummary, bucket_of, key_hash
from daemon.snapshot.datafile import EncodedFile, encode_rows, read_index
from daemon.snapshot.dimensions import Screen
from daemon.snapshot.lease import Lease
from daemon.snapshot.manifest import (
    SNAPSHOTS_ROOT,
    BucketState,
    CollectionState,
    DataFile,
    Manifest,
    ManifestFormatError,
    data_key,
    manifest_key,
    snapshot_id_from_key,
)
from daemon.snapshot.rejects import Rejected, Rejections, rejected_key
from daemon.snapshot.rowindex import RowIndex
from daemon.snapshot.runs import write_bucket_runs
from daemon.snapshot.state import (
    BucketChanges,
    Catalog,
    DropTimes,
    is_live,
    merge_rows,
    overlay,
)
from daemon.snapshot.written import WrittenState, combine_written

log = structlog.get_logger("vecwal.compact")

Skip = Callable[[Event, str, int], bool]
"""Says of an event (with its topic and partition) whether a fold leaves it out."""


def list_manifests(repo: Repository) -> list[str]:
    """Snapshot ids, oldest cut first (ids start with the zero-padded cut time)."""
    ids = [snapshot_id_from_key(i.key) for i in repo.store.list(SNAPSHOTS_ROOT)]
    return sorted(i for i in ids if i is not None)


def read_manifest(repo: Repository, snapshot_id: str) -> Manifest:
    return Manifest.from_json(repo.store.get(manifest_key(snapshot_id)))


def readable_manifests(repo: Repository, snapshot_ids: Iterable[str]) -> Iterator[Manifest]:
    """The manifests of ``snapshot_ids`` this vecwal reads, read lazily in that order; one of
    another format is skipped with a warning (the log replays what it held)."""
    for sid in snapshot_ids:
        try:
            yield read_manifest(repo, sid)
        except ManifestFormatError as exc:
            log.warning("snapshot skipped", snapshot=sid, reason=str(exc))


def newest_manifest(repo: Repository, at_or_before_ms: int | None = None) -> Manifest | None:
    """The newest snapshot this vecwal reads (with a cut at or before ``at_or_before_ms``)."""
    ids = list_manifests(repo)
    if at_or_before_ms is not None:  # ids start with the zero-padded cut time
        ids = [i for i in ids if int(i.split("-")[0]) <= at_or_before_ms]
    return next(readable_manifests(repo, reversed(ids)), None)


def repository_valid_through(repo: Repository, topics: list[str]) -> int | None:
    """Minimum valid-through over every partition with a watermark (None if any lacks one)."""
    values = [wm.valid_through_ms for t in topics for wm in repo.list_watermarks(t)]
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)


def cut_report(repo: Repository, topics: list[str], cut_time: int, valid: int,
               logged_after: dict[str, int]) -> dict[str, Any]:
    """Why a compaction cut where it did, for the CLI: the valid-through time bounds it."""
    held_by = sorted(f"{wm.topic}/{wm.partition}" for t in topics
                     for wm in repo.list_watermarks(t) if wm.valid_through_ms == valid)
    return {"instant_ms": cut_time, "valid_through_ms": valid,
            "held_by": held_by if cut_time == valid else [],
            "logged_after": {k: v for k, v in sorted(logged_after.items()) if v},
            "logged_after_total": sum(logged_after.values())}


@dataclass
class Changes:
    """Everything a log window says, reduced: catalog plus winning record changes."""

    catalog: Catalog
    records: dict[str, BucketChanges]
    """collection -> changes keyed by (tenant, id)."""
    touched_by_drop: set[str]
    cut: dict[str, dict[str, int]]
    events: int = 0
    bytes_read: int = 0


def log_windows(repo: Repository, topics: list[str], base: Manifest | None
                ) -> list[PartitionWindow]:
    """Each partition's window from ``base``'s cut to its watermark (coverage checked)."""
    return windows_after(repo, [wm for t in topics for wm in repo.list_watermarks(t)], base)


def fold_log(repo: Repository, windows: list[PartitionWindow], base: Manifest | None,
             until_ms: int | None, until_offsets: dict[str, dict[str, int]] | None = None,
             collections: set[str] | None = None, tenants: set[str] | None = None,
             progress: Progress | None = None) -> Changes:
    """Read every window and fold it (steps 3-4); ``progress`` hears ("log partitions",
    folded, total) after each."""
    folded = new_changes(base)
    for n, window in enumerate(windows, 1):
        merge_fold(folded, fold_window(repo, window, until_ms, stop_offset(window, until_offsets),
                                       collections, tenants))
        if progress is not None:
            progress("log partitions", n, len(windows))
    return folded


@dataclass
class WindowFold:
    """One partition window, folded: the winning change per key (as encoded rows, spliced
    from the log's bytes) and the catalog events in offset order."""

    topic: str
    partition: int
    start: int
    records: dict[str, BucketChanges]
    catalog_events: list[dict[str, Any]]
    events: int
    bytes_read: int
    stopped_at: int
    stopped_early: bool = False
    """A stop rule ended the reading before the window's end (``WindowReader``)."""


def stop_offset(window: PartitionWindow, until_offsets: dict[str, dict[str, int]] | None
                ) -> int | None:
    return None if until_offsets is None else until_offsets.get(window.topic, {}).get(
        str(window.partition))


def fold_window(repo: Repository, window: PartitionWindow, until_ms: int | None,
                stop: int | None, collections: set[str] | None, tenants: set[str] | None,
                shard: tuple[int, int] | None = None, skip: Skip | None = None) -> WindowFold:
    """One window's winning change per key and its catalog events. With ``shard`` (k, n),
    only the changes of keys whose ``key_hash`` is k modulo n are kept (a worker's share,
    ``restore.workers``): the others' events are walked, never spliced or hashed. Catalog
    events are kept whatever the shard. ``skip(event, topic, partition)``: events it says
    True of are left out, as if never written (a rollback's excluded events); they still
    count as read."""
    topic, partition = window.topic, window.partition
    reader = WindowReader(repo, window, until_ms=until_ms, until_offset=stop)
    records: dict[str, BucketChanges] = {}
    catalog_events: list[dict[str, Any]] = []
    events = 0
    for ev in reader:
        events += 1
        if ev.op in RECORD_OPS:
            coll = ev.collection
            if collections is not None and coll not in collections:
                continue
            if tenants is not None and ev.tenant not in tenants:
                continue
            if shard is not None and key_hash(ev.tenant, ev.id or "") % shard[1] != shard[0]:
                continue
            if skip is not None and skip(ev, topic, partition):
                continue
            changes = records.get(coll)
            if changes is None:
                changes = records[coll] = BucketChanges()
            changes.add(ev.row(topic, partition))
        elif skip is None or not skip(ev, topic, partition):
            catalog_events.append(ev.event())
    return WindowFold(topic, partition, window.start, records, catalog_events, events,
                      reader.bytes_read, reader.stopped_at, reader.stopped_early)


def new_changes(base: Manifest | None) -> Changes:
    return Changes(Catalog.from_json(base.catalog) if base else Catalog(), {}, set(), {})


def merge_fold(folded: Changes, part: WindowFold) -> None:
    """Add one window's fold (windows are disjoint; versions decide between them)."""
    for coll, changes in part.records.items():
        into = folded.records.get(coll)
        if into is None:
            folded.records[coll] = changes
            continue
        for change in changes.changes.values():
            into.add(change)
    for ev in part.catalog_events:
        folded.catalog.apply(ev, part.topic, part.partition)
        if ev["op"] in ("collection.drop", "tenant.drop"):
            folded.touched_by_drop.add(ev["collection"])
    folded.events += part.events
    folded.bytes_read += part.bytes_read
    folded.cut.setdefault(part.topic, {})[str(part.partition)] = max(part.start, part.stopped_at)


def choose_buckets(records: int, min_buckets: int, target_records: int) -> int:
    want = max(min_buckets, -(-records // target_records))
    n = 1
    while n < want:
        n *= 2
    return n


def split_by_bucket(changes: BucketChanges, buckets: int) -> dict[int, BucketChanges]:
    out: dict[int, BucketChanges] = {}
    for (tenant, rid), rec in changes.changes.items():
        out.setdefault(bucket_of(tenant, rid, buckets), BucketChanges()).changes[(tenant, rid)] = rec
    return out


class Compactor:
    def __init__(self, repo: Repository, topics: list[str], *, codec: str = "null",
                 min_buckets: int = 16, target_bucket_records: int = 50_000,
                 lease_ttl_s: float = 600.0, delta_ratio: float = 0.25,
                 max_step_bytes: int = 256 << 20, progress: Progress | None = None) -> None:
        self.repo, self.topics, self.codec = repo, topics, codec
        self.min_buckets, self.target = min_buckets, target_bucket_records
        self.lease_ttl_s = lease_ttl_s
        self.delta_ratio = delta_ratio
        self.max_step_bytes = max_step_bytes
        self.progress = progress
        """Hears ("log partitions", read, total) and ("buckets", folded, total) of each step."""
        self.written = 0
        self.rejected: list[Rejected] = []
        """The records the last run left out for their dimension (besides those carried)."""
        self.log_read = (0, 0)
        """The last run's log: (events, bytes) folded, over all its steps."""
        self.cut_report: dict[str, Any] = {}
        """The last run's cut: the instant, which partitions hold the valid-through time, and
        how many logged offsets lie beyond the cut per partition."""

    @classmethod
    def from_config(cls, repo: Repository, config: Config) -> Compactor:
        cc = config.compaction
        return cls(repo, config.kafka.topics, codec=cc.codec, min_buckets=cc.min_buckets,
                   target_bucket_records=cc.target_bucket_records, lease_ttl_s=cc.lease_ttl_s,
                   delta_ratio=cc.delta_ratio, max_step_bytes=cc.max_step_bytes)

    def compact(self, cut_time_ms: int | None = None, *, exact: bool = False,
                lease: Lease | None = None) -> Manifest:
        """Fold the log up to ``cut_time_ms`` (default: the valid-through time) into a new
        snapshot. A window holding more than ``max_step_bytes`` of log is folded in steps,
        each a snapshot at an earlier cut, so memory holds one step's changes at a time.

        ``exact``: cut at exactly ``cut_time_ms`` even when newer snapshots exist (a pin of a
        past instant), folding the log onto the newest snapshot at or before it; a time past
        the valid-through is refused, not clamped; a snapshot with that cut is returned as it
        is. ``lease``: the compaction lease, already held by the caller (kept, not released)."""
        if exact and cut_time_ms is None:
            raise ValueError("an exact compaction needs a cut time")
        self.log_read = (0, 0)
        held = lease
        if held is None:
            held = Lease(self.repo.store, "compaction", self.lease_ttl_s)
            held.acquire()
        try:
            steps = self._steps(cut_time_ms, exact)
            if len(steps) > 1:
                log.info("compacting in steps", steps=len(steps), max_step_bytes=self.max_step_bytes)
            for step in steps[:-1]:
                self._compact(step, held, exact)
            return self._compact(steps[-1], held, exact)
        finally:
            if lease is None:
                held.release()

    def _base(self, cut_time_ms: int | None, exact: bool) -> Manifest | None:
        return newest_manifest(self.repo, cut_time_ms if exact else None)

    def _steps(self, cut_time_ms: int | None, exact: bool = False) -> list[int | None]:
        """Cut times that split the window into parts of about ``max_step_bytes`` of log,
        by the segments' time bounds (their sidecars); the last is ``cut_time_ms``."""
        base = self._base(cut_time_ms, exact)
        windows = log_windows(self.repo, self.topics, base)
        if self.max_step_bytes <= 0 or sum(w.bytes for w in windows) <= self.max_step_bytes:
            return [cut_time_ms]
        points = []
        for w in windows:
            for key in w.segments:
                side = self.repo.read_sidecar(key)
                if side.max_timestamp is not None:
                    points.append((side.max_timestamp, side.size))
        steps: list[int | None] = []
        acc = 0
        for ts, size in sorted(points):
            acc += size
            if acc >= self.max_step_bytes and (cut_time_ms is None or ts < cut_time_ms) \
                    and (not steps or ts != steps[-1]):
                steps.append(ts)
                acc = 0
        return [*steps, cut_time_ms]

    def _compact(self, cut_time_ms: int | None, lease: Lease, exact: bool = False) -> Manifest:
        began = time.monotonic()
        base = self._base(cut_time_ms, exact)
        valid = repository_valid_through(self.repo, self.topics)
        if valid is None:
            raise VecwalError("nothing to compact: no partition has a valid-through time yet",
                              "run capture (`vecwal run`) first")
        if exact and cut_time_ms is not None and cut_time_ms > valid:
            raise VecwalError(f"cannot cut at {cut_time_ms} ms: after the repository's "
                              f"valid-through time ({valid} ms)",
                              "choose an earlier time, or wait for capture")
        cut_time = valid if cut_time_ms is None else min(cut_time_ms, valid)
        if base is not None and cut_time <= base.cut_time_ms:
            log.info("snapshot is current", snapshot=base.id, cut_time_ms=base.cut_time_ms)
            return base
        # Listed again (``_steps`` listed them too), and after valid-through was read: every
        # segment made durable before the watermark that vouches for cut_time is then seen.
        windows = log_windows(self.repo, self.topics, base)
        folded = fold_log(self.repo, windows, base, until_ms=cut_time, progress=self.progress)
        self.log_read = (self.log_read[0] + folded.events, self.log_read[1] + folded.bytes_read)
        self.cut_report = cut_report(self.repo, self.topics, cut_time, valid,
                                     offsets_after(windows, folded.cut))
        carried = Rejections.of_manifest(self.repo, base)
        carried.supersede({n: c.changes.keys() for n, c in folded.records.items()},
                          folded.catalog)
        screen = Screen(folded.catalog, base, carried)  # records of another dimension
        snapshot_id = f"{cut_time:013d}-{uuid.uuid4().hex[:8]}"
        collections: dict[str, CollectionState] = {}
        self.written = 0
        names = set(base.collections if base else ()) | set(folded.records) | \
            set(folded.touched_by_drop)
        sizes = {name: base.collections[name].buckets if base and name in base.collections
                 else choose_buckets(len(folded.records[name].changes) if name in folded.records
                                     else 0, self.min_buckets, self.target) for name in names}
        total, done = sum(sizes.values()), 0
        for name in sorted(names):
            prev = base.collections.get(name) if base else None
            changes = folded.records.get(name, BucketChanges())
            screen.changes(name, changes)
            nb = sizes[name]
            by_bucket = split_by_bucket(changes, nb)
            drop = folded.catalog.drop_filter(name)
            if prev is not None and screen.needs_buckets(name, drop):
                self._screen_buckets(screen, name, prev, by_bucket, drop)
            dropped = name in folded.touched_by_drop
            touched = set(range(nb)) if dropped else set(by_bucket)
            states: list[BucketState] = []
            for b in range(nb):
                lease.keep_alive()
                old = prev.bucket(b) if prev else None
                if b in touched:
                    where = (name, b, snapshot_id)
                    old = self._fold_bucket(where, old, by_bucket.get(b), drop, rewrite=dropped)
                if old is not None:
                    states.append(old)
                done += 1
                if self.progress is not None:
                    self.progress("buckets", done, total)
            state = collection_state(nb, states)
            if state.records or name in folded.catalog.live()["collections"]:
                collections[name] = state
        rejected, listing = screen.rejections.to_manifest(snapshot_id)
        manifest = Manifest(
            id=snapshot_id, parent=base.id if base else None,
            created_at_ms=int(time.time() * 1000), cut_time_ms=cut_time, cut=folded.cut,
            catalog=folded.catalog.to_json(), collections=collections,
            dimensions=screen.checked(collections), rejected=rejected)
        lease.check()  # a compactor that lost its lease must not commit
        if listing is not None:  # every rejected record, when the manifest lists only some
            self.repo.put_immutable(rejected_key(snapshot_id), listing)
        self.repo.put_immutable(manifest_key(snapshot_id), manifest.to_json())  # the commit
        self.rejected = screen.new
        screen.log_new("compaction")
        log.info("snapshot written", snapshot=snapshot_id, parent=manifest.parent,
                 cut_time_ms=cut_time, events=folded.events, records=manifest.records,
                 bytes_written=self.written, bytes_total=manifest.total_bytes,
                 left_out=len(screen.rejections), left_out_now=len(screen.new),
                 seconds=round(time.monotonic() - began, 3))
        return manifest

    def _screen_buckets(self, screen: Screen, name: str, prev: CollectionState,
                        by_bucket: dict[int, BucketChanges], drop: DropTimes | None) -> None:
        """Read and check the snapshot's buckets of ``name``, which it did not check against
        today's dimension; the records of another dimension get a tombstone in ``by_bucket``
        (so the bucket is touched, and they leave the state)."""
        for s in prev.states:
            views = [get_view(self.repo.store, f.path) for f in s.files]
            tombs = screen.bucket(name, s.files, views, by_bucket.get(s.bucket), drop)
            if tombs:
                into = by_bucket.setdefault(s.bucket, BucketChanges())
                for t in tombs:
                    into.add(t)

    def _fold_bucket(self, where: tuple[str, int, str], old: BucketState | None,
                     changes: BucketChanges | None, drop: Callable[[str], int | None] | None,
                     rewrite: bool) -> BucketState | None:
        """The bucket with ``changes`` folded in: a new delta file beside the old base, or,
        when a drop touched the bucket or its deltas would outgrow ``delta_ratio`` of the
        base, a new base holding the whole merged state."""
        change_rows = changes.rows() if changes else {}
        if old is None or old.base is None or rewrite or \
                old.delta_rows + len(change_rows) > self.delta_ratio * max(old.base.rows, 1):
            return self._rewrite_bucket(where, old, change_rows, drop)
        # Only headers are read: the row index says every key, version and content hash.
        prior = overlay(self._index(d).index_rows() for d in old.deltas)
        over = overlay([prior.values(), change_rows.values()])
        summary = RowSummary()
        out: list[Row] = []
        for row in merge_rows(self._index(old.base).index_rows(), over):
            if change_rows.get(row.key) is row:
                out.append(row)
            if is_live(row, drop):
                summary.add(row)
        if not out:
            return old
        delta = self._put(where, encode_rows(out, self.codec), "delta")
        if summary.records == 0:
            return None
        return BucketState(old.bucket, summary.records, summary.digest.hex,
                           dict(sorted(summary.tenants.items())), old.base, [*old.deltas, delta])

    def _rewrite_bucket(self, where: tuple[str, int, str], old: BucketState | None,
                        change_rows: dict[Key, Row], drop: Callable[[str], int | None] | None
                        ) -> BucketState | None:
        files = old.files if old else []
        # Unchanged rows are copied from the old base by runs, as restore does.
        enc = write_bucket_runs(files, [get_view(self.repo.store, f.path) for f in files],
                                change_rows.values(), drop, None, self.codec)
        if enc.records == 0:
            return None
        base = self._put(where, enc, "base")
        return BucketState(where[1], enc.records, enc.digest, enc.tenants, base, [])

    def _index(self, f: DataFile) -> RowIndex:
        return read_index(self.repo.store.get_range(f.path, 0, f.header_bytes), f.path)

    def _put(self, where: tuple[str, int, str], enc: EncodedFile, kind: str) -> DataFile:
        name, bucket, snapshot_id = where
        path = data_key(name, bucket, snapshot_id, kind)
        self.repo.put_immutable(path, enc.data)
        self.written += len(enc.data)
        return DataFile(path, bucket, enc.records, len(enc.data),
                        hashlib.sha256(enc.data).hexdigest(), enc.digest, enc.tenants,
                        enc.header_bytes, enc.rows, kind)


def collection_state(buckets: int, states: list[BucketState]) -> CollectionState:
    total = combine_written([WrittenState(s.records, s.digest, s.tenants)
                                     for s in states])
    return CollectionState(buckets, sorted(states, key=lambda s: s.bucket), total.records,
                           total.digest, total.tenants)
