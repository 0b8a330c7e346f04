"""Diff along the log: when the later state is the earlier one plus a stretch of retained log,
only the keys that stretch (or the earlier state's own log window) touches can differ, so only
those keys are read from the earlier snapshot's bucket files.

Why it is the same answer: a time target replays each partition up to its first event after
the target, so for T1 <= T2 the events of state(T2) are those of state(T1) plus, per
partition, the offsets from where the replay to T1 stopped to where the replay to T2 stops;
and the state model applies events in any order to the same result (DESIGN section 5). So
state(T2) = state(T1) merged with the changes of that stretch, bucket by bucket.

A bucket's base file carries a row index (key, byte length, content hash of every record), so
the records of a few keys are found in it without decoding anything and sliced out of their
blocks; its deltas are small and read whole. Records are compared by content hash: only
those that differ are decoded. A bucket no key touches is counted from the manifest without
being read.

Used when it applies (``plan_stretch``): both moments are times with T1 <= T2, the stretch
has no gap, and no collection or tenant drop happens in either log window of a compared
collection (a drop can remove records no event names; then the bucket comparison runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.audit.diff import Totals, join_rows, records_in_scope
from daemon.changelog.repository import Repository
from daemon.changelog.window import (
    CoverageGap,
    PartitionWindow,
    bound_gap,
    list_partition_segments,
    plan_window,
)
from daemon.objectstore.prefetch import prefetched
from daemon.progress import Progress
from daemon.restore.planner import Scope
from daemon.snapshot.compactor import Changes, fold_log, split_by_bucket
from daemon.snapshot.manifest import BucketState, DataFile, Manifest
from daemon.snapshot.state import BucketChanges, live, merge_rows, rows_for_keys


@dataclass
class Stretch:
    """The log between two moments, folded: the later catalog and the winning changes."""

    windows: list[PartitionWindow]
    folded: Changes

    @property
    def log_bytes(self) -> int:
        return sum(w.bytes for w in self.windows)


def plan_stretch(repo: Repository, topics: list[str], old_folded: Changes,
                 old_until_ms: int | None, new_until_ms: int | None) -> list[PartitionWindow] | None:
    """The windows from where the replay to the old moment stopped, or None when the log
    path does not apply (not two times in order, or a gap the new moment may need)."""
    if old_until_ms is None or new_until_ms is None or new_until_ms < old_until_ms:
        return None
    windows = []
    for topic in topics:
        for wm in repo.list_watermarks(topic):
            start = old_folded.cut.get(topic, {}).get(str(wm.partition), 0)
            listing = list_partition_segments(repo, topic, wm.partition)
            window = plan_window(listing, topic, wm.partition, start, wm.captured_through)
            bound_gap(repo, window, None)
            try:
                window.check_reach(new_until_ms, None)
            except CoverageGap:
                return None
            windows.append(window)
    return windows


def fold_stretch(repo: Repository, windows: list[PartitionWindow], old_folded: Changes,
                 new_until_ms: int, scope: Scope, progress: Progress | None = None) -> Stretch:
    # The later catalog is the earlier one plus the stretch's catalog events: fold onto a
    # copy (fold_log starts from a manifest's catalog).
    carrier = Manifest(id="", parent=None, created_at_ms=0, cut_time_ms=0, cut={},
                       catalog=orjson.loads(orjson.dumps(old_folded.catalog.to_json())))
    folded = fold_log(repo, windows, carrier, until_ms=new_until_ms,
                      collections=set(scope.collections) if scope.collections else None,
                      tenants=set(scope.tenants) if scope.tenants else None,
                      progress=progress)
    return Stretch(windows, folded)


def stretch_applies(old_folded: Changes, stretch: Stretch, names: set[str]) -> bool:
    """No drop in either log window of any compared collection."""
    return not (names & (old_folded.touched_by_drop | stretch.folded.touched_by_drop))


def stretch_rows(repo: Repository, name: str, snapshot: Manifest | None, old_folded: Changes,
                 stretch: Stretch, scope: Scope, totals: Totals,
                 progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    """Rows of one collection: per bucket of the earlier snapshot, the keys either log window
    touches, looked up in the bucket's files by their row index, merged, compared."""
    coll = snapshot.collections.get(name) if snapshot else None
    nb = coll.buckets if coll else 1
    early = split_by_bucket(old_folded.records.get(name, BucketChanges()), nb)
    late = split_by_bucket(stretch.folded.records.get(name, BucketChanges()), nb)
    drop1 = old_folded.catalog.drop_filter(name)
    drop2 = stretch.folded.catalog.drop_filter(name)
    touched = [b for b in range(nb) if b in early or b in late]
    states = {b: coll.bucket(b) if coll else None for b in touched}
    # One bucket's files in flight beside the one being searched: reading overlaps parsing.
    fetched = prefetched(repo.store, [f.path for b in touched for f in _files(states[b])],
                         depth=2)
    for b in range(nb):
        if progress is not None:
            progress("buckets", b, nb)
        state = states[b] if b in states else (coll.bucket(b) if coll else None)
        in_file = records_in_scope(state, scope)
        totals.buckets += 1
        if b not in early and b not in late:
            totals.buckets_skipped += 1
            totals.unchanged += in_file
            totals.records_from += in_file
            totals.records_to += in_file
            continue
        c1, c2 = early.get(b, BucketChanges()), late.get(b, BucketChanges())
        keys = set(c1.changes) | set(c2.changes)
        datas = [next(fetched) for _ in _files(state)]
        found = rows_for_keys(state, datas, keys)  # the snapshot's state of those keys
        if scope.tenants is not None:
            found = [r for r in found if r.key[0] in scope.tenants]
        before = list(live(merge_rows(iter(found), c1.rows()), drop1))
        after = live(merge_rows(iter(before), c2.rows()), drop2)
        rest = in_file - len(found)  # records of the bucket no change names: the same on both sides
        totals.unchanged += rest
        totals.records_from += rest
        totals.records_to += rest
        yield from join_rows(name, iter(before), after, totals)
    if progress is not None:
        progress("buckets", nb, nb)


def _files(state: BucketState | None) -> list[DataFile]:
    return state.files if state else []
