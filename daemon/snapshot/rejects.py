"""The records a state leaves out because their dimension is not their collection's
(``snapshot.dimensions`` finds them): each as a ``Rejected`` with where it was written, and
the set of them a snapshot carries (``Rejections``).

A snapshot's set is every record of its state at the cut that was left out, whichever
compaction found it: compaction carries its parent's set forward, drops the entries a later
write of the same key or a drop supersedes (a re-sent record, a delete), and adds its own.
The manifest holds the count and the first ``LISTED`` entries; when there are more, every
entry is in ``snapshots/<id>/rejected.json``, written create-only before the manifest (and
shared by a later snapshot whose set did not change)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from daemon.changelog.repository import Repository
from daemon.errors import IntegrityError, ObjectNotFound
from daemon.snapshot.manifest import SNAPSHOTS_ROOT, Manifest
from daemon.snapshot.state import Catalog

LISTED = 100
"""Entries a manifest lists itself; more go to the snapshot's ``rejected.json``."""


@dataclass(frozen=True, order=True)
class Rejected:
    """One record left out: its key, the write that was its last (topic, partition, offset,
    timestamp), its dimension and the collection's."""

    collection: str
    tenant: str
    id: str
    topic: str
    partition: int
    offset: int
    timestamp: int
    dimension: int
    expected: int

    @property
    def key(self) -> tuple[str, str, str]:
        return self.collection, self.tenant, self.id

    def describe(self) -> str:
        who = f"{self.tenant}/{self.id}" if self.tenant else self.id
        return (f"{who} ({self.dimension} values, not {self.expected}; "
                f"{self.topic}/{self.partition}@{self.offset})")


def rejected_key(snapshot_id: str) -> str:
    return f"{SNAPSHOTS_ROOT}{snapshot_id}/rejected.json"


@dataclass
class Rejections:
    """A set of rejected records, one per key (the newest write wins)."""

    by_key: dict[tuple[str, str, str], Rejected]
    object: str | None = None
    """Where the whole set is stored, when a manifest names one and nothing changed since."""

    @classmethod
    def empty(cls) -> Rejections:
        return cls({})

    def __len__(self) -> int:
        return len(self.by_key)

    def add(self, items: Iterable[Rejected]) -> None:
        for r in items:
            old = self.by_key.get(r.key)
            if old is None or (r.timestamp, r.topic, r.partition, r.offset) > \
                    (old.timestamp, old.topic, old.partition, old.offset):
                self.by_key[r.key] = r
                self.object = None

    def records(self, collection: str | None = None) -> list[Rejected]:
        """Sorted by key; only ``collection``'s when given."""
        return sorted(r for r in self.by_key.values()
                      if collection is None or r.collection == collection)

    def supersede(self, changed: Mapping[str, Iterable[tuple[str, str]]], catalog: Catalog
                  ) -> None:
        """Forget the entries a later write of their key (``changed``: collection -> keys
        with a change after the cut) or a drop at or after their write supersedes."""
        gone: set[tuple[str, str, str]] = set()
        for coll, keys in changed.items():
            gone.update((coll, t, i) for t, i in keys if (coll, t, i) in self.by_key)
        for key, r in self.by_key.items():
            dropped = catalog.drop_time(r.collection, r.tenant)
            if dropped is not None and r.timestamp <= dropped:
                gone.add(key)
        for key in gone:
            del self.by_key[key]
            self.object = None

    def keys_by_collection(self) -> dict[str, set[tuple[str, str]]]:
        """collection -> the (tenant, id) keys of its entries."""
        out: dict[str, set[tuple[str, str]]] = {}
        for coll, tenant, rid in self.by_key:
            out.setdefault(coll, set()).add((tenant, rid))
        return out

    def scoped(self, collections: set[str] | None, tenants: set[str] | None) -> Rejections:
        return Rejections({k: r for k, r in self.by_key.items()
                           if (collections is None or r.collection in collections)
                           and (tenants is None or r.tenant in tenants)}, None)

    # -- in a manifest --------------------------------------------------------------------
    def to_manifest(self, snapshot_id: str) -> tuple[dict[str, Any], bytes | None]:
        """The manifest's ``rejected`` field, and the bytes of ``rejected.json`` to write
        first (None: the manifest lists every entry, or an existing object is reused)."""
        if not self.by_key:
            return {}, None
        listed = self.records()
        field: dict[str, Any] = {"count": len(listed),
                                 "records": [asdict(r) for r in listed[:LISTED]]}
        if len(listed) <= LISTED:
            return field, None
        if self.object is not None:
            field["object"] = self.object
            return field, None
        field["object"] = rejected_key(snapshot_id)
        return field, orjson.dumps([asdict(r) for r in listed])

    @classmethod
    def of_manifest(cls, repo: Repository, manifest: Manifest | None) -> Rejections:
        """A snapshot's set: the manifest's entries, or all of them from its object."""
        field = manifest.rejected if manifest is not None else {}
        if not field:
            return cls.empty()
        obj = field.get("object")
        try:
            raw = orjson.loads(repo.store.get(obj)) if obj else field["records"]
            items = [Rejected(**r) for r in raw]
        except ObjectNotFound:
            raise IntegrityError(
                f"{obj} is missing: snapshot {manifest.id if manifest else '-'} names it for "
                f"the {field.get('count')} records it left out for their dimension",
                "the list is lost, the state is not: `vecwal verify` reports the first "
                "entries from the manifest") from None
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise IntegrityError(f"the rejected records of snapshot "
                                 f"{manifest.id if manifest else '-'} do not parse: {exc}",
                                 "run `vecwal verify`") from None
        out = cls({})
        out.add(items)
        out.object = obj
        return out


def listed_in(manifest: Manifest) -> tuple[int, list[Rejected]]:
    """The count and the entries a manifest lists itself (no object read)."""
    field = manifest.rejected or {}
    return int(field.get("count", 0)), [Rejected(**r) for r in field.get("records", [])]
