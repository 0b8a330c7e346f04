"""Diff along the log: when the later state is the earlier one plus a stretch of retained log,
only the keys that stretch (or the earlier state's own log window) touches can differ, so only
those keys are read from the earlier snapshot's bucket files.

Why it is the same answer: a time target replays each partition up to its first event after
the target, so for T1 <= T2 the events of state(T2) are those of state(T1) plus, per
partition, the offsets from where the replay to T1 stopped to where the replay to T2 stops;
and the state model applies events in any order to the same result (DESIGN section 5). So
state(T2) = ``merge_bucket``(state(T1), changes of that stretch), bucket by bucket.

A bucket file is sorted by (tenant, id) and written in Avro blocks of a few KB, so the
records of a few keys are found by reading the first key of every block (three strings at
the start of its bytes; nothing else is decoded) and decoding only the blocks that can hold
them. A bucket no key touches is counted from the manifest without being read.

Used when it applies (``plan_stretch``): both moments are times with T1 <= T2, the stretch
has no gap, and no collection or tenant drop happens in either log window of a compared
collection (a drop can remove records no event names; then the bucket comparison runs).
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson

from daemon.audit.diff import Totals, _join, _records_in_scope
from daemon.changelog.repository import Repository
from daemon.changelog.window import (
    CoverageGap,
    PartitionWindow,
    bound_gap,
    list_partition_segments,
    plan_window,
)
from daemon.errors import IntegrityError
from daemon.objectstore.prefetch import prefetched
from daemon.restore.planner import Scope
from daemon.snapshot.compactor import Changes, fold_log, split_by_bucket
from daemon.snapshot.manifest import Manifest
from daemon.snapshot.state import BucketChanges, merge_bucket

Key = tuple[str, str]


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
                 new_until_ms: int, scope: Scope) -> Stretch:
    # The later catalog is the earlier one plus the stretch's catalog events: fold onto a
    # copy (fold_log starts from a manifest's catalog).
    carrier = Manifest(id="", parent=None, created_at_ms=0, cut_time_ms=0, cut={},
                       catalog=orjson.loads(orjson.dumps(old_folded.catalog.to_json())))
    folded = fold_log(repo, windows, carrier, until_ms=new_until_ms,
                      collections=set(scope.collections) if scope.collections else None,
                      tenants=set(scope.tenants) if scope.tenants else None)
    return Stretch(windows, folded)


def stretch_applies(old_folded: Changes, stretch: Stretch, names: set[str]) -> bool:
    """No drop in either log window of any compared collection."""
    return not (names & (old_folded.touched_by_drop | stretch.folded.touched_by_drop))


def stretch_rows(repo: Repository, name: str, snapshot: Manifest | None, old_folded: Changes,
                 stretch: Stretch, scope: Scope, totals: Totals) -> Iterator[dict[str, Any]]:
    """Rows of one collection: per bucket of the earlier snapshot, the keys either log window
    touches, looked up in the bucket file, merged, compared."""
    coll = snapshot.collections.get(name) if snapshot else None
    nb = coll.buckets if coll else 1
    early = split_by_bucket(old_folded.records.get(name, BucketChanges()), nb)
    late = split_by_bucket(stretch.folded.records.get(name, BucketChanges()), nb)
    old_catalog, new_catalog = old_folded.catalog, stretch.folded.catalog
    touched = [b for b in range(nb) if b in early or b in late]
    files = [coll.file_of(b) if coll else None for b in touched]
    # One bucket file in flight beside the one being searched: reading overlaps parsing.
    fetched = prefetched(repo.store, [f.path if f else None for f in files], depth=1)
    for b in range(nb):
        f = coll.file_of(b) if coll else None
        in_file = _records_in_scope(f, scope)
        totals.buckets += 1
        if b not in early and b not in late:
            totals.buckets_skipped += 1
            totals.unchanged += in_file
            totals.records_from += in_file
            totals.records_to += in_file
            continue
        c1, c2 = early.get(b, BucketChanges()), late.get(b, BucketChanges())
        keys = sorted(set(c1.changes) | set(c2.changes))
        found: list[dict[str, Any]] = []
        data = next(fetched)  # touched buckets come in the order they were listed
        if f is not None and data is not None:
            found = records_for_keys(data, f.path, keys)
            if scope.tenants is not None:
                found = [r for r in found if r["tenant"] in scope.tenants]
        before = list(merge_bucket(iter(found), c1,
                                   lambda t: old_catalog.drop_time(name, t)))
        after = list(merge_bucket(iter(before), c2,
                                  lambda t: new_catalog.drop_time(name, t)))
        rest = in_file - len(found)  # records of the file no change names: the same on both sides
        totals.unchanged += rest
        totals.records_from += rest
        totals.records_to += rest
        yield from _join(iter(before), iter(after), totals)


def records_for_keys(data: bytes, where: str, keys: list[Key]) -> list[dict[str, Any]]:
    """The records of a bucket file (sorted by (tenant, id)) whose key is in ``keys`` (sorted),
    decoding only the blocks that can hold them."""
    wanted = set(keys)
    firsts: list[Key] = []
    blocks = []
    try:
        reader = fastavro.block_reader(io.BytesIO(data))
        schema: Any = reader.writer_schema
        head = [(f["name"], f["type"]) for f in schema["fields"][:3]]
        if head != [("collection", "string"), ("tenant", "string"), ("id", "string")]:
            # Not the layout _first_key reads: decode the whole file instead.
            every: Iterator[Any] = iter(fastavro.reader(io.BytesIO(data)))
            return [r for r in every if (r["tenant"], r["id"]) in wanted]
        for block in reader:
            if block.num_records == 0:
                continue
            payload: io.BytesIO = block.bytes_  # type: ignore[attr-defined]
            firsts.append(_first_key(payload.getbuffer()))
            blocks.append(block)
        need = sorted({bisect.bisect_right(firsts, k) - 1 for k in keys} - {-1})
        out = []
        for j in need:
            for rec in blocks[j]:
                assert isinstance(rec, dict)
                if (rec["tenant"], rec["id"]) in wanted:
                    out.append(rec)
        return out
    except Exception as exc:  # fastavro raises many kinds on a torn file
        raise IntegrityError(f"{where} is not a readable snapshot file: {exc}",
                             "run `vecwal verify --deep`; diff other moments") from None


def _first_key(buf: memoryview) -> Key:
    """(tenant, id) of a block's first record: fields 2 and 3 of snapshot_record.avsc, both
    Avro strings (zigzag varint length, then UTF-8)."""
    pos = 0
    out = []
    for _ in range(3):  # collection, tenant, id
        shift = n = 0
        while True:
            byte = buf[pos]
            pos += 1
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        length = (n >> 1) ^ -(n & 1)
        out.append(bytes(buf[pos:pos + length]).decode())
        pos += length
    return out[1], out[2]
