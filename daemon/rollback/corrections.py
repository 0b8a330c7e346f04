"""From a rollback's fold to its corrective events: for every affected key, its current state
and its rolled-back state (the base's row, then the log's winner, greatest version winning,
then the drops of each state's catalog), compared by content hash.

Order of the corrective events (``Corrections``), as a sink emits them:
1. the catalog changes (``catalog``): collection, alias and tenant puts and drops that make the
   live catalog the rolled-back one, collection puts first, so a consumer knows a collection's
   schema before a record of it;
2. one event per record whose state differs, in key order: an upsert of its rolled-back
   version (``Correction.row``) or a delete (``row`` None). Records whose state is the same are
   not written: the number of record events is the number of records that change.

The base's rows of affected keys are found by each bucket file's row index (``rows_at``):
only the blocks holding them are sliced (mapped from ``file://``; other stores fetch the
file). Buckets of a collection an excluded drop touched are read in full."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from daemon.objectstore import ObjectStore, get_view
from daemon.rollback.fold import RecordKey, RollbackFold, message_key, winner_row
from daemon.rollback.report import RollbackReport
from daemon.rows import Key, Row, bucket_of
from daemon.snapshot.dimensions import bucket_winners
from daemon.snapshot.manifest import Manifest
from daemon.snapshot.state import Catalog, is_live, rows_for_keys


@dataclass
class Correction:
    collection: str
    tenant: str
    id: str
    key: bytes | None
    """The Kafka message key the ingestion stream gave the record's last event (None: key
    by id, as a restore into Kafka does)."""
    row: Row | None
    """The rolled-back version to upsert; None: delete the record."""


@dataclass
class Corrections:
    catalog: list[dict[str, Any]] = field(default_factory=list)
    records: list[Correction] = field(default_factory=list)
    report: RollbackReport = field(default_factory=RollbackReport)


def resolve(store: ObjectStore, base: Manifest | None, fold: RollbackFold,
            collections: set[str] | None = None, tenants: set[str] | None = None
            ) -> Corrections:
    """The corrective events and the report of ``fold`` over ``base``."""
    base_rows = _base_rows(store, base, fold, collections, tenants)
    out = Corrections(report=RollbackReport(base=base.id if base else None,
                                            excluded_events=fold.excluded,
                                            events_read=fold.events))
    cur_cat, good_cat = fold.current_catalog, fold.good_catalog
    drops_now: dict[str, Any] = {}
    drops_then: dict[str, Any] = {}
    for key in sorted(fold.good):
        coll, tenant, rid = key
        if coll not in drops_now:
            drops_now[coll], drops_then[coll] = cur_cat.drop_filter(coll), \
                good_cat.drop_filter(coll)
        old = base_rows.get(key)
        last, kept = fold.current.get(key), fold.good[key]
        last_row = winner_row(last)
        now = _newer(old, last_row)
        then = _newer(old, last_row if kept is last else winner_row(kept))
        now = now if now is not None and is_live(now, drops_now[coll]) else None
        then = then if then is not None and is_live(then, drops_then[coll]) else None
        if now is None and then is None:
            kind = "untouched"  # absent in both (a later good delete, or a drop)
        elif now is not None and then is not None:
            kind = "untouched" if now.hash == then.hash else "reverted"
        else:
            kind = "removed" if then is None else "restored"
        out.report.add(kind, coll, tenant, rid)
        if kind != "untouched":
            out.records.append(Correction(coll, tenant, rid,
                                          message_key(last) if last else None, then))
    out.catalog = catalog_changes(cur_cat, good_cat, collections)
    out.report.catalog_changes = out.catalog
    return out


def _newer(a: Row | None, b: Row | None) -> Row | None:
    if a is None:
        return b
    if b is None:
        return a
    return b if b.version >= a.version else a


def _base_rows(store: ObjectStore, base: Manifest | None, fold: RollbackFold,
               collections: set[str] | None, tenants: set[str] | None) -> dict[RecordKey, Row]:
    """The base snapshot's live row of each affected key (deltas over base, greatest version;
    ``rows_for_keys``); for swept (collection, tenant) pairs every row, added to the affected
    keys."""
    if base is None:
        return {}
    out: dict[RecordKey, Row] = {}
    swept = {c for c, _ in fold.swept}
    for coll, state in base.collections.items():
        if coll not in swept or (collections is not None and coll not in collections):
            continue
        wanted = {t for c, t in fold.swept if c == coll}
        for s in state.states:
            datas = [get_view(store, f.path) for f in s.files]
            for row in bucket_winners(s.files, datas, None, None):
                tenant, rid = row.key
                key = (coll, tenant, rid)
                if (None in wanted or tenant in wanted) and (
                        tenants is None or tenant in tenants) and key not in fold.good:
                    fold.good[key] = fold.current.get(key)
                if key in fold.good:
                    out[key] = row
    by_bucket: dict[tuple[str, int], set[Key]] = {}
    for coll, tenant, rid in fold.good:
        held = base.collections.get(coll)
        if held is None or coll in swept:
            continue
        by_bucket.setdefault((coll, bucket_of(tenant, rid, held.buckets)), set()).add(
            (tenant, rid))
    for (coll, b), keys in sorted(by_bucket.items()):
        bucket = base.collections[coll].bucket(b)
        if bucket is None:
            continue
        for row in rows_for_keys(bucket, [get_view(store, f.path) for f in bucket.files],
                                 keys):
            out[(coll, *row.key)] = row
    return out


def catalog_changes(now: Catalog, then: Catalog, collections: set[str] | None
                    ) -> list[dict[str, Any]]:
    """The catalog events that turn the live catalog ``now`` into ``then``: puts of what
    differs or is missing, drops of what ``then`` lacks; collection puts first."""
    a, b = now.live(), then.live()

    def scoped(coll: str) -> bool:
        return collections is None or coll in collections

    out: list[dict[str, Any]] = []
    for coll in sorted(set(a["collections"]) | set(b["collections"])):
        if scoped(coll) and a["collections"].get(coll) != b["collections"].get(coll):
            out.append({"op": "collection.put", "collection": coll,
                        "schema": b["collections"][coll]} if coll in b["collections"] else
                       {"op": "collection.drop", "collection": coll})
    for alias in sorted(set(a["aliases"]) | set(b["aliases"])):
        coll = b["aliases"].get(alias) or a["aliases"][alias]
        # An alias may move between collections: in scope when any side names one in it.
        named = {e["collection"] for e in (now.aliases.get(alias), then.aliases.get(alias))
                 if e is not None} | {coll}
        if any(scoped(c) for c in named) and a["aliases"].get(alias) != b["aliases"].get(alias):
            op = "alias.put" if alias in b["aliases"] else "alias.drop"
            out.append({"op": op, "collection": coll, "alias": alias})
    for coll in sorted(set(a["tenants"]) | set(b["tenants"])):
        ta, tb = a["tenants"].get(coll, {}), b["tenants"].get(coll, {})
        for tenant in sorted(set(ta) | set(tb)):
            if scoped(coll) and ta.get(tenant) != tb.get(tenant):
                out.append({"op": "tenant.put", "collection": coll, "tenant": tenant,
                            "settings": tb[tenant]} if tenant in tb else
                           {"op": "tenant.drop", "collection": coll, "tenant": tenant})
    return out


def iter_upserts(corrections: Corrections) -> Iterator[dict[str, Any]]:
    """The rolled-back records the corrections upsert, decoded (tests, read-back)."""
    for c in corrections.records:
        if c.row is not None:
            yield c.row.record()
