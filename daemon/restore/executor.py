"""Executing a RestorePlan: fold the log window after the snapshot, then stream the state
bucket by bucket (snapshot bucket file merged with the bucket's changes) into a sink. Memory
holds the log window's winning changes and one bucket at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.changelog.repository import Repository
from daemon.objectstore.prefetch import prefetched
from daemon.restore.planner import RestorePlan
from daemon.restore.sinks import Sink, WrittenState
from daemon.snapshot.compactor import (
    choose_buckets,
    collection_state_digest,
    fold_log,
    split_by_bucket,
)
from daemon.snapshot.datafile import Row, read_rows
from daemon.snapshot.manifest import BucketState
from daemon.snapshot.state import BucketChanges, live, merge_rows, overlay

log = structlog.get_logger("vecwal.restore")


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

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def execute(repo: Repository, plan: RestorePlan, sink: Sink) -> RestoreResult:
    began = time.monotonic()
    scope = plan.scope
    base = plan.snapshot
    folded = fold_log(repo, plan.windows, base, until_ms=plan.until_ms,
                      until_offsets=plan.target.offsets,
                      collections=set(scope.collections) if scope.collections else None,
                      tenants=set(scope.tenants) if scope.tenants else None)
    catalog = folded.catalog.live()
    names = set(base.collections if base else ()) | set(folded.records)
    names = {n for n in names if scope.has_collection(n)}
    sink.begin()
    # The catalog first: a database rebuilt from the sink needs each collection's schema
    # (dimension, metric, index) before its first record.
    scoped_catalog = _scope_catalog(catalog, plan)
    sink.write_catalog(scoped_catalog)
    written: dict[str, WrittenState] = {}
    bytes_read = folded.bytes_read
    for name in sorted(names):
        prev = base.collections.get(name) if base else None
        changes = folded.records.get(name, BucketChanges())
        nb = prev.buckets if prev else choose_buckets(len(changes.changes), 16, 50_000)
        by_bucket = split_by_bucket(changes, nb)
        buckets = sorted(set(by_bucket) | {s.bucket for s in (prev.states if prev else [])})
        olds = [prev.bucket(b) if prev else None for b in buckets]
        # Bucket files are large (tens of MB): one in flight beside the one being merged.
        fetched = prefetched(repo.store, [f.path for s in olds if s for f in s.files], depth=1)
        drop = folded.catalog.drop_filter(name)
        states = []
        for b, old in zip(buckets, olds, strict=True):
            datas = [next(fetched) for _ in (old.files if old else [])]
            bytes_read += sum(f.bytes for f in (old.files if old else []))
            # A bucket the log did not touch and no delta changed is the snapshot's file as
            # it is: a sink that can take whole files gets its bytes.
            if (old is not None and old.base is not None and not old.deltas
                    and b not in by_bucket and scope.tenants is None
                    and name not in folded.touched_by_drop and hasattr(sink, "write_file")):
                assert datas[0] is not None
                states.append(sink.write_file(
                    name, b, datas[0], WrittenState(old.records, old.digest, dict(old.tenants))))
                continue
            rows = _bucket_rows(old, datas, by_bucket.get(b), drop, scope.tenants)
            if hasattr(sink, "write_rows"):
                states.append(sink.write_rows(name, b, rows))
            else:
                states.append(sink.write_bucket(name, b, (r.record() for r in rows)))
        written[name] = collection_state_digest(states)
        log.info("collection restored", collection=name, records=written[name].records,
                 sink=sink.name)
    sink.finish()
    seconds = time.monotonic() - began
    return RestoreResult(sink.name, written, scoped_catalog, folded.events, bytes_read, seconds,
                         records=sum(w.records for w in written.values()))


def _bucket_rows(old: BucketState | None, datas: list[bytes | None],
                 changes: BucketChanges | None, drop: Callable[[str], int | None] | None,
                 tenants: frozenset[str] | None) -> Iterator[Row]:
    """The bucket's records at the target, sorted by key: its base, then its deltas in order,
    then the log's changes, the greatest version winning per key."""
    base: Iterator[Row] = iter(())
    later: list[Iterable[Row]] = []
    for f, data in zip(old.files if old else [], datas, strict=True):
        assert data is not None
        rows = read_rows(data, f.path)
        if f.kind == "base":
            base = rows
        else:
            later.append(rows)
    if changes is not None:
        later.append(changes.rows().values())
    merged = live(merge_rows(base, overlay(later)), drop)
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
