"""Executing a RestorePlan: fold the log window after the snapshot, then stream the state
bucket by bucket (snapshot bucket file merged with the bucket's changes) into a sink. Memory
holds the log window's winning changes and one bucket at a time."""

from __future__ import annotations

import time
from collections.abc import Iterator
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
from daemon.snapshot.datafile import decode_records
from daemon.snapshot.state import BucketChanges, merge_bucket

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
        states = []
        buckets = [b for b in range(nb)
                   if b in by_bucket or (prev is not None and prev.file_of(b) is not None)]
        files = [prev.file_of(b) if prev else None for b in buckets]
        # Bucket files are large (tens of MB): one in flight beside the one being merged.
        fetched = prefetched(repo.store, [f.path if f else None for f in files], depth=1)
        # A bucket the log did not touch is the snapshot's file as it is: a sink that can
        # take whole files gets its bytes (validation still re-reads every record).
        copyable = (scope.tenants is None and scope.embedding_model is None
                    and name not in folded.touched_by_drop
                    and hasattr(sink, "write_file"))
        for b, old_file, data in zip(buckets, files, fetched, strict=True):
            if copyable and b not in by_bucket and old_file is not None and data is not None:
                bytes_read += old_file.bytes
                states.append(sink.write_file(  # type: ignore[attr-defined]
                    name, b, data,
                    WrittenState(old_file.records, old_file.digest, dict(old_file.tenants))))
                continue
            old: Iterator[dict[str, Any]] = iter(())
            if old_file is not None and data is not None:
                bytes_read += old_file.bytes
                old = _in_tenants(decode_records(data, old_file.path), scope.tenants)
            merged = merge_bucket(old, by_bucket.get(b),
                                  lambda t, n=name: folded.catalog.drop_time(n, t))
            if scope.embedding_model is not None:  # after the merge: a newer write wins first
                merged = filter(scope.has_model, merged)
            states.append(sink.write_bucket(name, b, merged))
        written[name] = collection_state_digest(states)
        log.info("collection restored", collection=name, records=written[name].records,
                 sink=sink.name)
    sink.finish()
    seconds = time.monotonic() - began
    return RestoreResult(sink.name, written, scoped_catalog, folded.events, bytes_read, seconds,
                         records=sum(w.records for w in written.values()))


def _in_tenants(records: Iterator[dict[str, Any]], tenants: frozenset[str] | None
                ) -> Iterator[dict[str, Any]]:
    if tenants is None:
        return records
    return (r for r in records if r["tenant"] in tenants)


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
