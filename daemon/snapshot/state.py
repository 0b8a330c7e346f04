"""The state model shared by compaction and restore (DESIGN sections 4 and 5).

An event's *version* is (timestamp, topic, partition, offset); for every key the greatest
version wins. Keys are (collection, tenant, id) for records; catalog entries are keyed by
collection, alias, or (collection, tenant). A ``collection.drop`` (``tenant.drop``) at time t
removes every record of that collection (tenant) whose last write is not later than t: stated
in time, since catalog events and records sit in different partitions. Because every rule
compares versions or times, applying a set of events in any order gives the same state, which
is what lets a snapshot plus the log after it equal a replay from the beginning.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

Version = tuple[int, str, int, int]

RECORD_FIELDS = (
    "dimension", "vector", "sparse_indices", "sparse_values", "document", "document_is_json",
    "metadata", "acl", "embedding_model", "source", "event_id", "event_time", "extra",
)


def version_of(rec: dict[str, Any]) -> Version:
    """The version of a snapshot record (or of a change built by ``record_from_event``)."""
    return (rec["last_timestamp"], rec["last_topic"], rec["last_partition"], rec["last_offset"])


def record_from_event(ev: dict[str, Any], topic: str, partition: int) -> dict[str, Any]:
    """A change-log upsert or delete as a snapshot record; deletes carry ``deleted=True``."""
    rec = {"collection": ev["collection"], "tenant": ev["tenant"], "id": ev["id"]}
    for name in RECORD_FIELDS:
        rec[name] = ev.get(name)
    rec["document_is_json"] = bool(ev.get("document_is_json"))
    rec["last_offset"], rec["last_timestamp"] = ev["offset"], ev["timestamp"]
    rec["last_partition"], rec["last_topic"] = partition, topic
    if ev["op"] == "delete":
        rec["deleted"] = True
    return rec


@dataclass
class Catalog:
    """Collections (schema), aliases and tenants, with the drop times records obey.

    Entries are kept with their version; a drop is kept as a tombstone so that a put with a
    smaller version, applied later, cannot bring the entry back."""

    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)
    tenants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    collection_drops: dict[str, int] = field(default_factory=dict)
    """collection -> time of its newest drop."""
    tenant_drops: dict[str, dict[str, int]] = field(default_factory=dict)
    """collection -> tenant -> time of its newest drop."""

    def apply(self, ev: dict[str, Any], topic: str, partition: int) -> None:
        op, coll = ev["op"], ev["collection"]
        ver = [ev["timestamp"], topic, partition, ev["offset"]]
        ts = ev["timestamp"]
        if op == "collection.put":
            _lww(self.collections, coll, {"schema": orjson.loads(ev["schema"]), "version": ver})
        elif op == "collection.drop":
            _lww(self.collections, coll, {"dropped": True, "version": ver})
            self.collection_drops[coll] = max(ts, self.collection_drops.get(coll, ts))
        elif op == "alias.put":
            _lww(self.aliases, ev["alias"], {"collection": coll, "version": ver})
        elif op == "alias.drop":
            _lww(self.aliases, ev["alias"], {"dropped": True, "collection": coll, "version": ver})
        elif op == "tenant.put":
            settings = orjson.loads(ev["settings"]) if ev.get("settings") else {}
            _lww(self.tenants.setdefault(coll, {}), ev["tenant"],
                 {"settings": settings, "version": ver})
        elif op == "tenant.drop":
            _lww(self.tenants.setdefault(coll, {}), ev["tenant"], {"dropped": True, "version": ver})
            drops = self.tenant_drops.setdefault(coll, {})
            drops[ev["tenant"]] = max(ts, drops.get(ev["tenant"], ts))

    def drop_time(self, collection: str, tenant: str) -> int | None:
        """Records of (collection, tenant) last written at or before this time are gone."""
        times = [t for t in (self.collection_drops.get(collection),
                             self.tenant_drops.get(collection, {}).get(tenant)) if t is not None]
        return max(times) if times else None

    def live(self) -> dict[str, Any]:
        """The catalog as users see it: no tombstones, no entries a drop removed."""
        collections = {c: e["schema"] for c, e in sorted(self.collections.items())
                       if not e.get("dropped")}
        aliases = {}
        for alias, e in sorted(self.aliases.items()):
            dropped_at = self.collection_drops.get(e["collection"])
            if not e.get("dropped") and (dropped_at is None or e["version"][0] > dropped_at):
                aliases[alias] = e["collection"]
        tenants: dict[str, dict[str, Any]] = {}
        for coll, entries in sorted(self.tenants.items()):
            for tenant, e in sorted(entries.items()):
                dropped_at = self.collection_drops.get(coll)
                if not e.get("dropped") and (dropped_at is None or e["version"][0] > dropped_at):
                    tenants.setdefault(coll, {})[tenant] = e["settings"]
        return {"collections": collections, "aliases": aliases, "tenants": tenants}

    def to_json(self) -> dict[str, Any]:
        return {"collections": self.collections, "aliases": self.aliases, "tenants": self.tenants,
                "collection_drops": self.collection_drops, "tenant_drops": self.tenant_drops}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Catalog:
        return cls(raw["collections"], raw["aliases"], raw["tenants"], raw["collection_drops"],
                   raw["tenant_drops"])


def _lww(table: dict[str, dict[str, Any]], key: str, entry: dict[str, Any]) -> None:
    old = table.get(key)
    if old is None or tuple(entry["version"]) > tuple(old["version"]):
        table[key] = entry


@dataclass
class BucketChanges:
    """The winning change per (tenant, id) of one bucket (deletes included)."""

    changes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(self, rec: dict[str, Any]) -> None:
        key = (rec["tenant"], rec["id"])
        old = self.changes.get(key)
        if old is None or version_of(rec) > version_of(old):
            self.changes[key] = rec


def merge_bucket(old: Iterable[dict[str, Any]], changes: BucketChanges | None,
                 drop_time: Any) -> Iterator[dict[str, Any]]:
    """The bucket's new state, sorted by (tenant, id): ``old`` (sorted) merged with
    ``changes`` by version, deletes and drops applied. ``drop_time(tenant)`` gives the time at
    or before which a record of that tenant is gone (or None)."""
    pending = sorted((changes.changes if changes else {}).items())
    i = 0

    def keep(rec: dict[str, Any]) -> bool:
        if rec.get("deleted"):
            return False
        dropped = drop_time(rec["tenant"])
        return dropped is None or rec["last_timestamp"] > dropped

    for rec in old:
        key = (rec["tenant"], rec["id"])
        while i < len(pending) and pending[i][0] < key:
            if keep(pending[i][1]):
                yield _clean(pending[i][1])
            i += 1
        if i < len(pending) and pending[i][0] == key:
            change = pending[i][1]
            i += 1
            rec = change if version_of(change) > version_of(rec) else rec
        if keep(rec):
            yield _clean(rec)
    for _, change in pending[i:]:
        if keep(change):
            yield _clean(change)


def _clean(rec: dict[str, Any]) -> dict[str, Any]:
    if "deleted" in rec:
        rec = {k: v for k, v in rec.items() if k != "deleted"}
    return rec
