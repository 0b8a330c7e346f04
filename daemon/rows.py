"""A record as snapshots keep it (``schemas/snapshot_record.avsc``): its key and version,
its Avro bytes and the hash of their *content* (every field before the version fields, which
the schema puts last), and the order-independent digest of a set of records.

The change log and snapshots both speak in rows: a scanned log event becomes the row a
snapshot would hold (``record_from_event``, ``Row.of``), compaction folds rows into data files
(``daemon.snapshot.datafile``), and restore and validation check them by their content
hashes. So this sits below both.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import fastavro
import xxhash

from daemon.avro_container import long_len
from daemon.schemas_loader import load_schema, schema_text

SNAPSHOT_SCHEMA = load_schema("snapshot_record.avsc")
DIGEST_MOD = 1 << 128
VERSION_FIELDS = ("last_offset", "last_timestamp", "last_partition", "last_topic")

SCHEMA_TEXT = schema_text("snapshot_record.avsc")
# Row.of and the content hash rely on it: the version is the record's tail.
assert tuple(f["name"] for f in json.loads(SCHEMA_TEXT)["fields"][-4:]) == VERSION_FIELDS, \
    "version fields last"
CONTENT_SCHEMA = fastavro.parse_schema({
    "type": "record", "name": "Content", "namespace": "io.vecwal.internal",
    "fields": json.loads(SCHEMA_TEXT)["fields"][:-len(VERSION_FIELDS)]})
"""Every field but the version: what a record's content hash is taken over."""

Key = tuple[str, str]
Version = tuple[int, str, int, int]


def key_hash(tenant: str, record_id: str) -> int:
    """A key's 64-bit hash, stable across processes and versions (not Python's salted
    hash): its bucket is this modulo the bucket count."""
    h = hashlib.blake2b(f"{tenant}\x00{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little")


def bucket_of(tenant: str, record_id: str, buckets: int) -> int:
    return key_hash(tenant, record_id) % buckets


def content_hash(content: bytes | memoryview) -> int:
    return xxhash.xxh3_128_intdigest(content)


def content_hash_bytes(content: bytes | memoryview) -> bytes:
    """``content_hash`` as 16 little-endian bytes (how row indexes store it)."""
    return xxhash.xxh3_128_digest(content)[::-1]


class Row:
    """One record of a data file: its key and version, and either its Avro bytes (``raw``,
    ``content_len`` of them content) or only the index entry (``raw`` is None). ``rec`` keeps
    the decoded dict when the row was made from one."""

    __slots__ = ("content_len", "deleted", "hash", "key", "raw", "rec", "version")

    def __init__(self, key: Key, version: Version, raw: bytes | memoryview | None,
                 content_len: int, hash_: int, deleted: bool,
                 rec: dict[str, Any] | None = None) -> None:
        self.key, self.version, self.raw = key, version, raw
        self.content_len, self.hash, self.deleted, self.rec = content_len, hash_, deleted, rec

    @classmethod
    def of(cls, rec: dict[str, Any]) -> Row:
        """Encode a record dict (a ``deleted`` key marks a tombstone)."""
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, SNAPSHOT_SCHEMA, rec)
        raw = buf.getvalue()
        version = (rec["last_timestamp"], rec["last_topic"], rec["last_partition"],
                   rec["last_offset"])
        # The version fields come last: their encoded length, from their values.
        topic_len = len(rec["last_topic"].encode())
        content_len = len(raw) - (long_len(rec["last_offset"]) + long_len(version[0])
                                  + long_len(version[2]) + long_len(topic_len) + topic_len)
        return cls((rec["tenant"], rec["id"]), version, raw, content_len,
                   content_hash(raw[:content_len]), bool(rec.get("deleted")), rec)

    @property
    def tenant(self) -> str:
        return self.key[0]

    def without_record(self) -> Row:
        """This row without its decoded dict: lighter to keep and to send to a process."""
        self.rec = None
        return self

    def record(self) -> dict[str, Any]:
        """The record as a dict (decoded from ``raw`` when not kept)."""
        if self.rec is None:
            if self.raw is None:
                raise ValueError("an index-only row has no record")
            rec: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
                io.BytesIO(self.raw), SNAPSHOT_SCHEMA, None)
            self.rec = rec
        return self.rec


def record_hash(rec: dict[str, Any]) -> int:
    """Hash of a record's content (every field but the version): what restore must
    reproduce. It is the blake2b of the content's Avro encoding, so a copied record is
    checked by hashing its bytes, without decoding them. ``rec`` needs no version fields."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, CONTENT_SCHEMA, rec)
    return content_hash(buf.getbuffer())


@dataclass
class StateDigest:
    """Sum of record hashes modulo 2^128: independent of order, so any two ways of building
    the same state (compaction, restore, a re-read of the output) give the same value."""

    value: int = 0
    count: int = 0

    def add(self, rec: dict[str, Any]) -> None:
        self.add_hash(record_hash(rec))

    def add_hash(self, h: int) -> None:
        self.value = (self.value + h) % DIGEST_MOD
        self.count += 1

    def merge(self, other: StateDigest) -> None:
        self.value = (self.value + other.value) % DIGEST_MOD
        self.count += other.count

    @property
    def hex(self) -> str:
        return f"{self.value:032x}"


@dataclass
class RowSummary:
    """Counts, per-tenant counts and digest of the live (non-tombstone) rows of a stream."""

    rows: int = 0
    digest: StateDigest = field(default_factory=StateDigest)
    tenants: dict[str, int] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows += 1
        if not row.deleted:
            self.digest.add_hash(row.hash)
            self.tenants[row.key[0]] = self.tenants.get(row.key[0], 0) + 1

    @property
    def records(self) -> int:
        return self.digest.count


RECORD_FIELDS = (
    "dimension", "vector", "sparse_indices", "sparse_values", "document", "document_is_json",
    "metadata", "acl", "embedding_model", "source", "event_id", "event_time", "extra",
)


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
