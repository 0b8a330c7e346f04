"""The difference between two moments: records added, updated (and in which parts) and
deleted, and catalog changes, between the state at T1 and the state at T2.

Each state is what a restore to that moment would produce, built with the restore machinery:
the newest snapshot at or before T (planner ``gather``/``make_plan``) plus the log after its
cut folded up to T (``fold_log``). The two states are then compared bucket by bucket: records
are bucketed by a stable hash of (tenant, id) and sorted by (tenant, id) inside a bucket, so
each side of a bucket is the snapshot's bucket (base and deltas) merged with that bucket's
log changes (``executor.bucket_rows``), a stream of rows sorted by key, and the comparison is
a merge join on keys and content hashes: only records whose content differs are decoded.
Memory holds the two log windows' winning changes and one bucket pair at a time.

A bucket made of the same files in both states (base and deltas, same paths and sha256) that
neither log window touches is the same on both sides: it is counted as unchanged without being
read. When both moments are snapshot cuts, every bucket the second snapshot did not touch is
skipped.

If the two sides bucket a collection differently (a collection that only one snapshot holds,
or one recreated with another bucket count), buckets are grouped by the greatest common
divisor of the two counts (``hash % n % g == hash % g`` when g divides n) and each side's
buckets of a group are merged (``heapq.merge``); memory then holds one group.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from daemon.changelog.repository import Repository
from daemon.errors import IntegrityError, VecwalError
from daemon.objectstore.prefetch import prefetched
from daemon.progress import Progress
from daemon.restore.executor import bucket_rows
from daemon.restore.planner import RestorePlan, Scope, gather, make_plan
from daemon.restore.target import RestoreTarget
from daemon.rows import Row
from daemon.snapshot.compactor import Changes, fold_log, split_by_bucket
from daemon.snapshot.manifest import BucketState, CollectionState
from daemon.snapshot.state import BucketChanges, DropTimes

COLUMNS = ("kind", "change", "collection", "tenant", "id", "parts", "old_time", "new_time",
           "detail")
"""Every diff row has exactly these keys, in this order."""

PARTS: dict[str, tuple[str, ...]] = {
    "vector": ("dimension", "vector", "sparse_indices", "sparse_values"),
    "metadata": ("metadata",),
    "document": ("document", "document_is_json"),
    "acl": ("acl",),
    "model": ("embedding_model",),
    "other": ("source", "event_id", "event_time", "extra"),
}
"""Record fields by the part of the record a change is reported in."""


@dataclass
class Totals:
    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    """Present at both moments with the same content (skipped buckets included)."""
    rewritten: int = 0
    """Of ``unchanged``: written again with the same content between the two moments."""
    parts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))
    buckets: int = 0
    buckets_skipped: int = 0
    records_from: int = 0
    records_to: int = 0

    def add(self, other: Totals) -> None:
        for name in ("added", "updated", "deleted", "unchanged", "rewritten", "buckets",
                     "buckets_skipped", "records_from", "records_to"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for p, n in other.parts.items():
            self.parts[p] += n

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "deleted": self.deleted,
                "unchanged": self.unchanged, "rewritten": self.rewritten,
                "records_from": self.records_from, "records_to": self.records_to,
                "parts": dict(self.parts), "buckets": self.buckets,
                "buckets_skipped": self.buckets_skipped}


@dataclass
class StateAt:
    """One side of a diff: the restore plan to T and its folded log window."""

    plan: RestorePlan
    folded: Changes

    def collection(self, name: str) -> CollectionState | None:
        snap = self.plan.snapshot
        return snap.collections.get(name) if snap else None

    @property
    def label(self) -> dict[str, Any]:
        snap = self.plan.snapshot
        return {"target": self.plan.target.label, "until_ms": self.plan.until_ms,
                "snapshot": snap.id if snap else None,
                "log_events": self.folded.events}


def state_at(repo: Repository, topics: list[str], target: RestoreTarget, scope: Scope,
             allow_incomplete: bool = False, progress: Progress | None = None) -> StateAt:
    plan = make_plan(gather(repo, topics, target), target, scope, allow_incomplete)
    folded = fold_log(repo, plan.windows, plan.snapshot, until_ms=plan.until_ms,
                      until_offsets=plan.target.offsets,  # resolved: latest has offsets
                      collections=set(scope.collections) if scope.collections else None,
                      tenants=set(scope.tenants) if scope.tenants else None,
                      progress=progress)
    return StateAt(plan, folded)


def labelled(progress: Progress | None, label: str) -> Progress | None:
    """``progress`` with ``label`` before each ``what`` ("orders: buckets")."""
    if progress is None:
        return None
    report = progress
    return lambda what, done, total: report(f"{label}: {what}", done, total)


@dataclass
class Diff:
    """The rows (a one-pass iterator: catalog rows, then records collection by collection,
    bucket by bucket, by (tenant, id)), then ``totals`` per collection once rows are read."""

    old: StateAt
    new: StateAt
    scope: Scope
    rows: Iterator[dict[str, Any]]
    totals: dict[str, Totals] = field(default_factory=dict)
    seconds: float = 0.0
    method: str = "buckets"
    """How the states were compared: ``buckets``, or ``log`` (along the log between them)."""

    @property
    def total(self) -> Totals:
        t = Totals()
        for one in self.totals.values():
            t.add(one)
        return t

    def total_rows(self) -> list[dict[str, Any]]:
        """One ``total`` row per collection and one for all (collection ``*``)."""
        out = []
        for name, t in [*sorted(self.totals.items()), ("*", self.total)]:
            row = dict.fromkeys(COLUMNS)
            row.update(kind="total", collection=name, detail=t.to_dict())
            out.append(row)
        return out


METHODS = ("auto", "buckets", "log")

LOG_PATH_MIN_BYTES = 64 << 20
"""``auto`` diffs along the log when the log between the moments is at most this many bytes or
a quarter of the snapshot bytes the bucket comparison would read, whichever is more."""


def diff(repo: Repository, topics: list[str], old: RestoreTarget, new: RestoreTarget,
         scope: Scope | None = None, allow_incomplete: bool = False,
         method: str = "auto", progress: Progress | None = None) -> Diff:
    """The difference between the states at ``old`` and ``new``. Planning and the log folds
    happen here; bucket files are read as ``rows`` is iterated.

    ``method``: ``buckets`` compares the two restore states bucket by bucket; ``log`` diffs
    along the log between the moments (diff_log.py) where that applies, else falls back to
    ``buckets``; ``auto`` picks ``log`` when it applies and reads fewer bytes.

    ``progress`` hears the log folds ("from: log partitions", "to: log partitions") here and
    the buckets compared of each collection ("NAME: buckets") as ``rows`` is iterated."""
    from daemon.audit import diff_log

    if method not in METHODS:
        raise VecwalError(f"diff method {method!r} is unknown", f"use one of {METHODS}")
    scope = scope or Scope()
    began = time.monotonic()
    a = state_at(repo, topics, old, scope, allow_incomplete, labelled(progress, "from"))
    new_plan = make_plan(gather(repo, topics, new), new, scope, allow_incomplete)
    stretch = None
    if method != "buckets" and a.plan.target.offsets is None \
            and new_plan.target.offsets is None:
        windows = diff_log.plan_stretch(repo, topics, a.folded, a.plan.until_ms,
                                        new_plan.until_ms)
        budget = max(LOG_PATH_MIN_BYTES, _snapshot_bytes(a.plan, new_plan, scope) // 4)
        if windows is not None and (method == "log" or
                                    sum(w.bytes for w in windows) <= budget):
            assert new_plan.until_ms is not None
            stretch = diff_log.fold_stretch(repo, windows, a.folded, new_plan.until_ms, scope,
                                            labelled(progress, "to"))
            names = _names(a.plan, a.folded, stretch.folded, scope)
            if not diff_log.stretch_applies(a.folded, stretch, names):
                stretch = None
    if stretch is None:
        b = StateAt(new_plan, fold_log(
            repo, new_plan.windows, new_plan.snapshot, until_ms=new_plan.until_ms,
            until_offsets=new_plan.target.offsets,
            collections=set(scope.collections) if scope.collections else None,
            tenants=set(scope.tenants) if scope.tenants else None,
            progress=labelled(progress, "to")))
    else:
        b = StateAt(new_plan, stretch.folded)
    result = Diff(a, b, scope, iter(()), method="buckets" if stretch is None else "log")

    def rows() -> Iterator[dict[str, Any]]:
        yield from catalog_rows(a.folded.catalog.live(), b.folded.catalog.live(), scope)
        if stretch is None:
            names = {n for side in (a, b) for n in (
                *(side.plan.snapshot.collections if side.plan.snapshot else ()),
                *side.folded.records)}
        else:
            names = _names(a.plan, a.folded, stretch.folded, scope)
        for name in sorted(n for n in names if scope.has_collection(n)):
            totals = result.totals.setdefault(name, Totals())
            report = labelled(progress, name)
            if stretch is None:
                yield from _collection_rows(repo, name, a, b, scope, totals, report)
            else:
                yield from diff_log.stretch_rows(repo, name, a.plan.snapshot, a.folded,
                                                 stretch, scope, totals, report)
        result.seconds = time.monotonic() - began

    result.rows = rows()
    return result


def _names(plan: RestorePlan, early: Changes, late: Changes, scope: Scope) -> set[str]:
    snap = plan.snapshot
    return {n for n in (*(snap.collections if snap else ()), *early.records, *late.records)
            if scope.has_collection(n)}


def _snapshot_bytes(a: RestorePlan, b: RestorePlan, scope: Scope) -> int:
    """Bytes of the two moments' snapshot files that are not shared (in scope)."""
    files: dict[str, int] = {}
    for plan in (a, b):
        if plan.snapshot is None:
            continue
        for name, c in plan.snapshot.collections.items():
            if scope.has_collection(name):
                for f in c.files:
                    files[f.path] = f.bytes if f.path not in files else 0
    return sum(files.values())


# -- catalog ----------------------------------------------------------------------------------

def catalog_rows(old: dict[str, Any], new: dict[str, Any], scope: Scope
                 ) -> Iterator[dict[str, Any]]:
    """Collections (schema: dimension, metric, index configuration), aliases and tenants
    added, removed or changed, from two live catalogs (``Catalog.live()``)."""

    def row(kind: str, change: str, collection: str, tenant: str | None, ident: str | None,
            detail: dict[str, Any]) -> dict[str, Any]:
        r = dict.fromkeys(COLUMNS)
        r.update(kind=kind, change=change, collection=collection, tenant=tenant, id=ident,
                 detail=detail)
        return r

    oc, nc = old["collections"], new["collections"]
    for name in sorted(set(oc) | set(nc)):
        if not scope.has_collection(name) or oc.get(name) == nc.get(name):
            continue
        change = "added" if name not in oc else "removed" if name not in nc else "changed"
        detail: dict[str, Any] = {"old": oc.get(name), "new": nc.get(name)}
        if change == "changed":
            keys = set(oc[name]) | set(nc[name])
            detail["keys"] = sorted(k for k in keys if oc[name].get(k) != nc[name].get(k))
        yield row("collection", change, name, None, None, detail)
    oa, na = old["aliases"], new["aliases"]
    for alias in sorted(set(oa) | set(na)):
        if oa.get(alias) == na.get(alias):
            continue
        coll = na.get(alias) or oa.get(alias)
        if not (scope.has_collection(oa.get(alias, "")) or scope.has_collection(coll)):
            continue
        change = "added" if alias not in oa else "removed" if alias not in na else "changed"
        yield row("alias", change, coll, None, alias, {"old": oa.get(alias), "new": na.get(alias)})
    ot, nt = old["tenants"], new["tenants"]
    for coll in sorted(set(ot) | set(nt)):
        if not scope.has_collection(coll):
            continue
        before, after = ot.get(coll, {}), nt.get(coll, {})
        for tenant in sorted(set(before) | set(after)):
            if scope.tenants is not None and tenant not in scope.tenants:
                continue
            if before.get(tenant) == after.get(tenant) and (tenant in before) == (tenant in after):
                continue
            change = "added" if tenant not in before else "removed" if tenant not in after \
                else "changed"
            yield row("tenant", change, coll, tenant, None,
                      {"old": before.get(tenant), "new": after.get(tenant)})


# -- records ----------------------------------------------------------------------------------

@dataclass
class _Side:
    state: StateAt
    coll: CollectionState | None
    buckets: int
    changes: dict[int, BucketChanges]
    dropped: bool
    """A drop in the log window: every bucket of the collection may have changed."""
    drop: DropTimes | None

    def group(self, g: int, c: int) -> list[int]:
        return list(range(c, self.buckets, g))

    def bucket(self, b: int) -> BucketState | None:
        return self.coll.bucket(b) if self.coll else None

    def paths(self, b: int) -> list[str]:
        st = self.bucket(b)
        return [f.path for f in st.files] if st else []


def _side(state: StateAt, name: str, buckets: int) -> _Side:
    coll = state.collection(name)
    changes = state.folded.records.get(name, BucketChanges())
    return _Side(state, coll, buckets, split_by_bucket(changes, buckets),
                 name in state.folded.touched_by_drop, state.folded.catalog.drop_filter(name))


def _collection_rows(repo: Repository, name: str, a: StateAt, b: StateAt, scope: Scope,
                     totals: Totals, progress: Progress | None = None
                     ) -> Iterator[dict[str, Any]]:
    ca, cb = a.collection(name), b.collection(name)
    na = ca.buckets if ca else None
    nb = cb.buckets if cb else None
    n_old, n_new = na or nb or 1, nb or na or 1  # a log-only side takes the other's layout
    g = math.gcd(n_old, n_new)
    old, new = _side(a, name, n_old), _side(b, name, n_new)
    groups = []
    for c in range(g):
        ob, nb_ = old.group(g, c), new.group(g, c)
        if _shared_and_untouched(old, new, ob, nb_):
            n = records_in_scope(old.bucket(ob[0]), scope)
            totals.buckets += 1
            totals.buckets_skipped += 1
            totals.unchanged += n
            totals.records_from += n
            totals.records_to += n
            continue
        groups.append((c, ob, nb_))
    done = g - len(groups)  # counted unread
    if progress is not None:
        progress("buckets", done, g)
    # Fetch every file the remaining groups need, in order, a few ahead.
    paths: list[str | None] = []
    for _, ob, nb_ in groups:
        paths += [p for bucket in ob for p in old.paths(bucket)]
        paths += [p for bucket in nb_ for p in new.paths(bucket)]
    fetched = prefetched(repo.store, paths, depth=2)
    for _, ob, nb_ in groups:
        totals.buckets += 1
        left = _stream(old, ob, [[next(fetched) for _ in old.paths(x)] for x in ob], scope)
        right = _stream(new, nb_, [[next(fetched) for _ in new.paths(x)] for x in nb_], scope)
        yield from join_rows(name, left, right, totals)
        done += 1
        if progress is not None:
            progress("buckets", done, g)


def _shared_and_untouched(old: _Side, new: _Side, ob: list[int], nb: list[int]) -> bool:
    """One bucket on each side, made of the same files (base and deltas), no change or drop in
    either log window: the same records, counted without reading them."""
    if len(ob) != 1 or len(nb) != 1 or old.dropped or new.dropped:
        return False
    if ob[0] in old.changes or nb[0] in new.changes:
        return False
    sa, sb = old.bucket(ob[0]), new.bucket(nb[0])
    return sa is not None and sb is not None and \
        [(f.path, f.sha256) for f in sa.files] == [(f.path, f.sha256) for f in sb.files]


def records_in_scope(state: BucketState | None, scope: Scope) -> int:
    if state is None:
        return 0
    if scope.tenants is None:
        return state.records
    return sum(n for t, n in state.tenants.items() if t in scope.tenants)


def _stream(side: _Side, buckets: list[int], data: list[list[bytes | None]], scope: Scope
            ) -> Iterator[Row]:
    """The side's rows of these buckets, sorted by (tenant, id): each bucket's base merged with
    its deltas and the log's changes, as a restore would write it."""
    streams = []
    for bucket, datas in zip(buckets, data, strict=True):
        if any(d is None for d in datas):
            raise IntegrityError(f"a data file of bucket {bucket} vanished while read",
                                 "run `vecwal verify`; diff other moments")
        streams.append(bucket_rows(side.bucket(bucket), datas,  # type: ignore[arg-type]
                                   side.changes.get(bucket), side.drop, scope.tenants))
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda r: r.key)


def join_rows(collection: str, left: Iterator[Row], right: Iterator[Row], totals: Totals
              ) -> Iterator[dict[str, Any]]:
    """Merge join of two row streams sorted by (tenant, id). Rows with the same content hash
    are the same record (content is every field but the version): only records whose content
    differs are decoded, to say which parts changed."""
    from daemon.status import iso_ms

    def row(change: str, key: tuple[str, str], parts: list[str] | None,
            old: Row | None, new: Row | None) -> dict[str, Any]:
        r = dict.fromkeys(COLUMNS)
        r.update(kind="record", change=change, collection=collection,
                 tenant=key[0], id=key[1], parts=parts,
                 old_time=iso_ms(old.version[0]) if old else None,
                 new_time=iso_ms(new.version[0]) if new else None)
        return r

    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.key < b.key):
            assert a is not None
            totals.deleted += 1
            totals.records_from += 1
            yield row("deleted", a.key, None, a, None)
            a = next(left, None)
        elif a is None or b.key < a.key:
            totals.added += 1
            totals.records_to += 1
            yield row("added", b.key, None, None, b)
            b = next(right, None)
        else:
            totals.records_from += 1
            totals.records_to += 1
            if a.hash == b.hash:
                totals.unchanged += 1
                if a.version != b.version:
                    totals.rewritten += 1
            else:
                parts = changed_parts(a.record(), b.record())
                totals.updated += 1
                for p in parts:
                    totals.parts[p] += 1
                yield row("updated", b.key, parts, a, b)
            a, b = next(left, None), next(right, None)


def changed_parts(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The parts (PARTS) in which two versions of a record differ; [] if only the version
    (time, offset) differs."""
    return [p for p, names in PARTS.items() if any(a.get(n) != b.get(n) for n in names)]
