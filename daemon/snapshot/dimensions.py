"""A record's dimension against its collection's, where compaction and restore know both: the
winning row per key, and the catalog at the fold's cut.

Capture checks each upsert against the dimension it knows, but it cannot always know it: a
``collection.put`` may sit in a partition capture has not read yet (DESIGN section 1), and
records captured before capture learned dimensions from the repository were never checked. So
the state is checked again: a live record whose ``dimension`` differs from its collection's
schema dimension at the cut is an integrity error of that record. It is left out: its winning
row is replaced by a tombstone of the same key and version (the fold keeps only the winning
write per key, so an earlier version does not come back), and it becomes a ``Rejected``
(``snapshot.rejects``) that the manifest keeps and restore reports. A record without a dense
vector, or of a collection whose dimension is not known at the cut, is not checked.

Two places hold rows to check:

- the log's winning changes (``reject_changes``): every compaction and restore;
- a snapshot's bucket files (``screen_rows`` over the bucket's merged rows), only when the
  snapshot did not check the collection against the dimension the catalog now says
  (``Manifest.dimensions``): a snapshot of format 3, a collection whose ``collection.put`` came
  after the snapshot, or a re-created one. Compaction then writes a snapshot that has checked
  it; restores do it bucket by bucket until then."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import structlog

from daemon.avro_long import avro_long
from daemon.changelog.scan_loop import varint
from daemon.rows import RECORD_FIELDS, Row
from daemon.snapshot.datafile import read_rows
from daemon.snapshot.manifest import DataFile, Manifest
from daemon.snapshot.rejects import Rejected, Rejections
from daemon.snapshot.state import BucketChanges, Catalog, DropTimes, live, merge_rows, overlay

log = structlog.get_logger("vecwal.dimensions")


def catalog_dimensions(catalog: Catalog) -> dict[str, int]:
    """collection -> the dimension its live schema declares (collections without one, or
    dropped, are left out)."""
    out = {}
    for coll, entry in catalog.collections.items():
        schema = entry.get("schema")
        if entry.get("dropped") or not isinstance(schema, dict):
            continue
        dim = schema.get("dimension")
        if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0:
            out[coll] = dim
    return dict(sorted(out.items()))


def unchecked(base: Manifest | None, dimensions: Mapping[str, int]) -> dict[str, int]:
    """The collections of ``base`` whose records were not checked against the dimension
    ``dimensions`` gives them: collection -> that dimension."""
    if base is None:
        return {}
    return {c: d for c, d in dimensions.items()
            if c in base.collections and base.dimensions.get(c) != d}


def row_dimension(row: Row) -> int | None:
    """The ``dimension`` field of a snapshot row, read from its bytes (None: no vector)."""
    raw = row.raw
    if raw is None:
        raise ValueError("an index-only row has no dimension")
    pos = 0
    for _ in range(3):  # collection, tenant, id
        n, pos = varint(raw, pos)
        pos += n
    branch, pos = varint(raw, pos)
    if branch == 0:
        return None
    return varint(raw, pos)[0]


def rejected_of(collection: str, row: Row, dimension: int, expected: int) -> Rejected:
    ts, topic, partition, offset = row.version
    return Rejected(collection, row.key[0], row.key[1], topic, partition, offset, ts,
                    dimension, expected)


def tombstone(collection: str, row: Row) -> Row:
    """A tombstone with ``row``'s key and version: laid over the row, it removes it."""
    ts, topic, partition, offset = row.version
    rec = {"collection": collection, "tenant": row.key[0], "id": row.key[1],
           **dict.fromkeys(RECORD_FIELDS), "document_is_json": False,
           "last_offset": offset, "last_timestamp": ts, "last_partition": partition,
           "last_topic": topic, "deleted": True}
    return Row.of(rec).without_record()


def screen_rows(collection: str, rows: Iterable[Row], expected: int
                ) -> tuple[list[Row], list[Rejected]]:
    """Among live ``rows`` (with their bytes), those whose dimension is not ``expected``:
    a tombstone for each, and each as a ``Rejected``."""
    want = b"\x02" + avro_long(expected)  # the union's int branch, then the value
    skip = _str_len(collection)
    tombs, found = [], []
    for row in rows:
        if row.deleted:
            continue
        raw = row.raw
        assert raw is not None
        tenant, rid = row.key
        pos = skip + _str_len(tenant) + _str_len(rid)
        if raw[pos] == 0 or raw[pos:pos + len(want)] == want:
            continue  # no vector, or the right dimension
        dim = row_dimension(row)
        if dim is None or dim == expected:
            continue
        tombs.append(tombstone(collection, row))
        found.append(rejected_of(collection, row, dim, expected))
    return tombs, found


def reject_changes(collection: str, changes: BucketChanges, expected: int,
                   drop: Callable[[str], int | None] | None) -> list[Rejected]:
    """Replace every live winning change of ``changes`` (``drop``: the collection's drop
    times) whose dimension is not ``expected`` by its tombstone, in place; the records it
    rejected."""
    tombs, found = screen_rows(collection, live(changes.changes.values(), drop), expected)
    for t in tombs:
        changes.changes[t.key] = t
    return found


def _str_len(s: str) -> int:
    n = len(s.encode()) if not s.isascii() else len(s)
    return len(avro_long(n)) + n


def bucket_winners(files: Sequence[DataFile], datas: Sequence[bytes | memoryview],
                   changes: BucketChanges | None, drop: Callable[[str], int | None] | None
                   ) -> Iterator[Row]:
    """The live rows of a bucket (its base, its deltas in order, then ``changes``; the
    greatest version winning per key), with their bytes."""
    base: Iterable[Row] = ()
    later: list[Iterable[Row]] = []
    for f, data in zip(files, datas, strict=True):
        if f.kind == "base":
            base = read_rows(data, f.path)
        else:
            later.append(read_rows(data, f.path))
    if changes is not None:
        later.append(changes.rows().values())
    return live(merge_rows(base, overlay(later)), drop)


class Screen:
    """The dimension checks of one fold at its cut (a compaction, or a restore): the
    dimensions its catalog declares, the collections its snapshot did not check against
    them, and the records rejected so far (the snapshot's, carried, and new ones)."""

    def __init__(self, catalog: Catalog, base: Manifest | None, carried: Rejections) -> None:
        self.catalog = catalog
        self.dimensions = catalog_dimensions(catalog)
        self.recheck = unchecked(base, self.dimensions)
        self.base_cut_ms = base.cut_time_ms if base is not None else None
        self.rejections = carried
        self.new: list[Rejected] = []

    def changes(self, collection: str, changes: BucketChanges) -> None:
        """Reject the log's winning changes of ``collection`` of another dimension."""
        want = self.dimensions.get(collection)
        if want is not None and changes.changes:
            self.found(reject_changes(collection, changes, want,
                                      self.catalog.drop_filter(collection)))

    def needs_buckets(self, collection: str, drop: DropTimes | None) -> bool:
        """Must the snapshot's buckets of ``collection`` be read and checked? Not when the
        snapshot checked them against today's dimension, or a drop after its cut removed
        every record it holds."""
        if collection not in self.recheck:
            return False
        return not (drop is not None and drop.collection is not None
                    and self.base_cut_ms is not None and drop.collection >= self.base_cut_ms)

    def bucket(self, collection: str, files: Sequence[DataFile],
               datas: Sequence[bytes | memoryview], changes: BucketChanges | None,
               drop: DropTimes | None) -> list[Row]:
        """Check one bucket of the snapshot (with the log's ``changes`` laid over it): the
        tombstones that leave out its records of another dimension."""
        tombs, found = screen_rows(collection, bucket_winners(files, datas, changes, drop),
                                   self.recheck[collection])
        self.found(found)
        return tombs

    def checked(self, collections: Iterable[str]) -> dict[str, int]:
        """``Manifest.dimensions`` of a snapshot written from this fold."""
        return {c: self.dimensions[c] for c in sorted(collections) if c in self.dimensions}

    def found(self, found: list[Rejected]) -> None:
        """Records found of another dimension (by this fold, or a worker of it)."""
        self.new.extend(found)
        self.rejections.add(found)

    def log_new(self, what: str) -> None:
        """One warning line per collection with records found by this fold."""
        by_coll: dict[str, list[Rejected]] = {}
        for r in self.new:
            by_coll.setdefault(r.collection, []).append(r)
        for coll, rs in sorted(by_coll.items()):
            log.warning(f"{what}: records left out, their dimension is not their "
                        "collection's", collection=coll, records=len(rs),
                        first=[r.describe() for r in sorted(rs)[:5]],
                        hint="re-send them with the collection's dimension, or delete them; "
                             "`vecwal verify` lists them")
