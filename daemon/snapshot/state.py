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

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from daemon.errors import IntegrityError
from daemon.rows import Key, Row
from daemon.snapshot.datafile import read_rows, rows_at

if TYPE_CHECKING:
    from daemon.snapshot.manifest import BucketState

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

    def drop_filter(self, collection: str) -> DropTimes | None:
        """``drop_time`` for one collection's tenants, or None when nothing of it was dropped."""
        if collection not in self.collection_drops and not self.tenant_drops.get(collection):
            return None
        return DropTimes(self.collection_drops.get(collection),
                         dict(self.tenant_drops.get(collection, {})))

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


@dataclass(frozen=True)
class DropTimes:
    """One collection's drop times: called with a tenant, the time at or before which its
    records are gone (or None). Plain data, so it crosses to a worker process."""

    collection: int | None
    tenants: dict[str, int]

    def __call__(self, tenant: str) -> int | None:
        t = self.tenants.get(tenant)
        if t is None or (self.collection is not None and self.collection > t):
            return self.collection
        return t


def _lww(table: dict[str, dict[str, Any]], key: str, entry: dict[str, Any]) -> None:
    old = table.get(key)
    if old is None or tuple(entry["version"]) > tuple(old["version"]):
        table[key] = entry


@dataclass
class BucketChanges:
    """The winning change per (tenant, id) of one bucket, as rows (deletes: tombstones)."""

    changes: dict[Key, Row] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        old = self.changes.get(row.key)
        if old is None or row.version > old.version:
            self.changes[row.key] = row

    def rows(self) -> dict[Key, Row]:
        """The changes, keyed like ``changes``."""
        return self.changes


def overlay(sources: Iterable[Iterable[Row]]) -> dict[Key, Row]:
    """The greatest-version row per key over several row streams (deltas, log changes):
    small next to a bucket's base, so it is held in memory and merged with the base."""
    over: dict[Key, Row] = {}
    for rows in sources:
        for row in rows:
            old = over.get(row.key)
            if old is None or row.version >= old.version:
                over[row.key] = row
    return over


def merge_rows(base: Iterable[Row], over: dict[Key, Row]) -> Iterator[Row]:
    """``base`` (sorted by key) merged with ``over``: per key the row of greater version,
    sorted by key, tombstones included (``live`` drops them)."""
    pending = sorted(over.items())
    n = len(pending)
    i = 0
    for row in base:
        key = row.key
        while i < n and pending[i][0] < key:
            yield pending[i][1]
            i += 1
        if i < n and pending[i][0] == key:
            change = pending[i][1]
            i += 1
            if change.version >= row.version:
                row = change
        yield row
    while i < n:
        yield pending[i][1]
        i += 1


def live(rows: Iterable[Row], drop_time: Callable[[str], int | None] | None) -> Iterator[Row]:
    """The rows that are records of the state: no tombstone, none a drop removed.
    ``drop_time(tenant)`` gives the time at or before which a record of that tenant is gone."""
    if drop_time is None:
        return (r for r in rows if not r.deleted)
    return (r for r in rows if is_live(r, drop_time))


def is_live(row: Row, drop_time: Callable[[str], int | None] | None) -> bool:
    if row.deleted:
        return False
    dropped = drop_time(row.key[0]) if drop_time is not None else None
    return dropped is None or row.version[0] > dropped


def rows_for_keys(state: BucketState | None, datas: Sequence[bytes | memoryview | None],
                  keys: set[Key]) -> list[Row]:
    """The bucket's live rows (base merged with its deltas) whose key is in ``keys``, sorted:
    found by the base's row index, whose bytes alone are sliced out; deltas are small and
    read whole. ``datas``: the bytes of ``state.files``, in order (None: it vanished)."""
    if state is None:
        return []
    base: list[Row] = []
    later: list[list[Row]] = []
    for f, data in zip(state.files, datas, strict=True):
        if data is None:
            raise IntegrityError(f"{f.path} vanished while read", "run `vecwal verify`")
        if f.kind == "base":
            base = rows_at(data, f.path, keys)
        else:
            later.append([r for r in read_rows(data, f.path) if r.key in keys])
    return list(live(merge_rows(iter(base), overlay(later)), None))
