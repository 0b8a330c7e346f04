"""Manifest: the commit point of a snapshot, written last and create-only. It names the cut
(per-partition offsets and the cut time), the catalog, and every data file with its count,
size, sha256 and state digest. Data files are shared between snapshots: an untouched bucket is
referenced again, not copied. A bucket is a base file plus the delta files of later
compactions; a compaction rewrites the base only when its deltas have grown large. Since
format 4 it also says which dimension each collection's records were checked against, and the
records the snapshot leaves out because their dimension is not their collection's
(``rejected``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from daemon.errors import IntegrityError

MANIFEST_FORMAT = 4
"""4: ``dimensions`` and ``rejected`` (3: the same without them; 2: blake2b-128 content
hashes, with row index format 1; 1: no deltas)."""
READABLE_FORMATS = (3, 4)
"""Format 3 is read as format 4 with nothing checked: every collection's records are then
screened for their dimension by the next compaction, and by restores until then."""
SNAPSHOTS_ROOT = "snapshots/"
DATA_ROOT = "data/"


class ManifestFormatError(IntegrityError):
    """A manifest written by a vecwal of another format: skipped, not trusted."""


def manifest_key(snapshot_id: str) -> str:
    return f"{SNAPSHOTS_ROOT}{snapshot_id}/manifest.json"


def snapshot_id_from_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == "snapshots" and parts[2] == "manifest.json":
        return parts[1]
    return None


def data_key(collection: str, bucket: int, file_id: str, kind: str = "base") -> str:
    suffix = "" if kind == "base" else f".{kind}"
    return f"{DATA_ROOT}{collection}/b={bucket:04d}/{file_id}{suffix}.avro"


@dataclass(frozen=True)
class DataFile:
    """One data file: a bucket's *base* (its records at some cut) or a *delta* (the rows a
    later compaction changed in it, tombstones included)."""

    path: str
    bucket: int
    records: int
    """Live records in the file (tombstones not counted)."""
    bytes: int
    sha256: str
    digest: str
    tenants: dict[str, int]
    header_bytes: int
    """The Avro header with the row index: a ranged read of this many bytes gives it."""
    rows: int = 0
    kind: str = "base"


@dataclass(frozen=True)
class BucketState:
    """A bucket at the snapshot's cut: its base file (if any) with the deltas after it, in
    order, and what they make together (counts, digest)."""

    bucket: int
    records: int
    digest: str
    tenants: dict[str, int]
    base: DataFile | None
    deltas: list[DataFile] = field(default_factory=list)

    @property
    def files(self) -> list[DataFile]:
        return ([self.base] if self.base else []) + self.deltas

    @property
    def delta_rows(self) -> int:
        return sum(d.rows for d in self.deltas)


@dataclass(frozen=True)
class CollectionState:
    buckets: int
    states: list[BucketState]
    """Non-empty buckets, by bucket number."""
    records: int
    digest: str
    tenants: dict[str, int]

    def bucket(self, b: int) -> BucketState | None:
        for s in self.states:
            if s.bucket == b:
                return s
        return None

    @property
    def files(self) -> list[DataFile]:
        return [f for s in self.states for f in s.files]


@dataclass(frozen=True)
class Manifest:
    id: str
    parent: str | None
    created_at_ms: int
    cut_time_ms: int
    cut: dict[str, dict[str, int]]
    """topic -> partition (as text) -> first offset not in the snapshot."""
    catalog: dict[str, Any]
    collections: dict[str, CollectionState] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT
    dimensions: dict[str, int] = field(default_factory=dict)
    """collection -> the dimension every record of it in this snapshot has (or no vector):
    they were checked against it. A collection not named here was not checked (format 3, or
    no dimension known at the cut)."""
    rejected: dict[str, Any] = field(default_factory=dict)
    """Records the state at the cut leaves out because their dimension is not their
    collection's: ``count``, the first ``records`` and, when there are more, the ``object``
    that lists them all (``snapshot.rejects.Rejections``). Empty: none."""

    def cut_of(self, topic: str, partition: int) -> int:
        return self.cut.get(topic, {}).get(str(partition), 0)

    @property
    def records(self) -> int:
        return sum(c.records for c in self.collections.values())

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for c in self.collections.values() for f in c.files)

    @property
    def delta_bytes(self) -> int:
        return sum(d.bytes for c in self.collections.values() for s in c.states for d in s.deltas)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            raw = orjson.loads(data)
            if raw.get("format") not in READABLE_FORMATS:
                raise ManifestFormatError(
                    f"snapshot {raw.get('id')} has manifest format {raw.get('format')}, this "
                    f"vecwal reads formats {READABLE_FORMATS[0]} to {READABLE_FORMATS[-1]}",
                    "snapshots of another format are skipped: restores replay the log from the "
                    "newest readable snapshot, and the next `vecwal compact` writes a new one")
            colls = {name: CollectionState(
                c["buckets"], [_bucket_state(b) for b in c["states"]], c["records"],
                c["digest"], c["tenants"]) for name, c in raw["collections"].items()}
            return cls(raw["id"], raw["parent"], raw["created_at_ms"], raw["cut_time_ms"],
                       raw["cut"], raw["catalog"], colls, raw["format"],
                       raw.get("dimensions", {}), raw.get("rejected", {}))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise IntegrityError(f"manifest is not valid: {exc}",
                                 "run `vecwal verify`; restore from another snapshot") from None


def _bucket_state(raw: dict[str, Any]) -> BucketState:
    base = DataFile(**raw["base"]) if raw["base"] else None
    return BucketState(raw["bucket"], raw["records"], raw["digest"], raw["tenants"], base,
                       [DataFile(**d) for d in raw["deltas"]])
