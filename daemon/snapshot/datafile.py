"""Snapshot data files: one Avro file of ``schemas/snapshot_record.avsc`` per collection bucket,
sorted by (tenant, id), and the order-independent state digest that proves a rebuilt state.

Records are spread over buckets by a stable hash of (tenant, id); the count is chosen per
collection when it is first compacted and kept in the manifest.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson

from daemon.errors import IntegrityError
from daemon.schemas_loader import load_schema

SNAPSHOT_SCHEMA = load_schema("snapshot_record.avsc")
DIGEST_MOD = 1 << 128


def bucket_of(tenant: str, record_id: str, buckets: int) -> int:
    """Stable across processes and versions (not Python's salted hash)."""
    h = hashlib.blake2b(f"{tenant}\x00{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") % buckets


def record_hash(rec: dict[str, Any]) -> int:
    """Hash of a record's content (not its version): what restore must reproduce."""
    vector, si, sv = rec.get("vector"), rec.get("sparse_indices"), rec.get("sparse_values")
    head = orjson.dumps([
        rec["collection"], rec["tenant"], rec["id"], rec.get("dimension"), rec.get("document"),
        bool(rec.get("document_is_json")), rec.get("metadata"), rec.get("acl"),
        rec.get("embedding_model"), rec.get("source"), rec.get("event_id"),
        rec.get("event_time"), rec.get("extra"),
        len(vector) if vector is not None else -1, len(si) if si is not None else -1,
        len(sv) if sv is not None else -1,
    ])
    h = hashlib.blake2b(head, digest_size=16)
    for part in (vector, si, sv):
        if part:
            h.update(part)
    return int.from_bytes(h.digest(), "little")


@dataclass
class StateDigest:
    """Sum of record hashes modulo 2^128: independent of order, so any two ways of building
    the same state (compaction, restore, a re-read of the output) give the same value."""

    value: int = 0
    count: int = 0

    def add(self, rec: dict[str, Any]) -> None:
        self.value = (self.value + record_hash(rec)) % DIGEST_MOD
        self.count += 1

    def merge(self, other: StateDigest) -> None:
        self.value = (self.value + other.value) % DIGEST_MOD
        self.count += other.count

    @property
    def hex(self) -> str:
        return f"{self.value:032x}"


@dataclass(frozen=True)
class EncodedFile:
    data: bytes
    records: int
    digest: str
    tenants: dict[str, int]


def encode_records(records: Iterable[dict[str, Any]], codec: str = "null") -> EncodedFile:
    """Encode (already sorted) records; counts, per-tenant counts and the digest come along."""
    digest = StateDigest()
    tenants: dict[str, int] = {}

    def tap() -> Iterator[dict[str, Any]]:
        for rec in records:
            digest.add(rec)
            tenants[rec["tenant"]] = tenants.get(rec["tenant"], 0) + 1
            yield rec

    buf = io.BytesIO()
    fastavro.writer(buf, SNAPSHOT_SCHEMA, tap(), codec=codec, validator=False,
                    sync_marker=b"vecwal-snapshot!")
    return EncodedFile(buf.getvalue(), digest.count, digest.hex, tenants)


def decode_records(data: bytes, where: str) -> Iterator[dict[str, Any]]:
    try:
        reader = fastavro.reader(io.BytesIO(data), SNAPSHOT_SCHEMA)
    except Exception as exc:
        raise IntegrityError(f"{where} is not a readable snapshot file: {exc}",
                             "run `vecwal verify --deep`; restore from an older snapshot") from None
    records: Iterator[dict[str, Any]] = iter(reader)  # type: ignore[arg-type]
    return records
