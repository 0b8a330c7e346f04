"""Segment: one Avro object file holding the captured events of offsets [start, end) of one
partition, in offset order. Self-describing: its header metadata repeats topic, partition,
range, timestamp bounds, record count and the record schema's fingerprint.

Encoding is deterministic (the sync marker derives from the segment key), so the same events
always give the same bytes: an identical re-upload after a crash compares equal.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro

from daemon.avro_container import container_block, container_header
from daemon.changelog.keys import SegmentKey
from daemon.errors import IntegrityError
from daemon.native.records import record_codec
from daemon.schemas_loader import load_schema, schema_fingerprint, schema_text
from daemon.spans import Gathered

SEGMENT_FORMAT = "1"
RECORD_SCHEMA_FILE = "changelog_record.avsc"
RECORD_SCHEMA = load_schema(RECORD_SCHEMA_FILE)
_CODEC = record_codec()

_META = "vecwal."
SEGMENT_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class SegmentHeader:
    key: SegmentKey
    count: int
    min_timestamp: int | None
    max_timestamp: int | None
    schema_fingerprint: str
    format: str


def encode_segment(key: SegmentKey, records: Sequence[dict[str, Any]], codec: str = "null") -> bytes:
    """Avro container bytes for ``records`` (already in offset order, inside [start, end))."""
    timestamps = [r["timestamp"] for r in records]
    return encode_segment_datums(key, [record_datum(r) for r in records],
                                 min(timestamps, default=None), max(timestamps, default=None),
                                 codec)


def record_datum(record: dict[str, Any]) -> bytes:
    """One change-log record's Avro binary encoding (a datum of the segment's blocks): by the
    C record codec when it is built, else (and for any record it refuses) by fastavro, the
    reference it equals byte for byte (tests/unit/test_recordcodec.py)."""
    if _CODEC is not None:
        try:
            datum: bytes = _CODEC.encode_record(record)
            return datum
        except (TypeError, ValueError, OverflowError):
            pass  # a value the writer does not take as is: fastavro decides
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, RECORD_SCHEMA, record)
    return buf.getvalue()


def encode_segment_datums(key: SegmentKey, datums: Sequence[bytes], min_timestamp: int | None,
                          max_timestamp: int | None, codec: str = "null") -> bytes:
    """Avro container bytes for records already encoded (``record_datum``, or capture's native
    codec), in offset order. Blocks hold up to ``SEGMENT_BLOCK_BYTES`` of datums each."""
    return segment_pieces(key, datums, min_timestamp, max_timestamp, codec).join()


def segment_pieces(key: SegmentKey, datums: Sequence[bytes], min_timestamp: int | None,
                   max_timestamp: int | None, codec: str = "null") -> Gathered:
    """``encode_segment_datums`` as pieces, not joined: the framing and, with the null codec,
    the datums themselves (a file store writes them with no copy)."""
    meta = {
        "avro.schema": schema_text(RECORD_SCHEMA_FILE),
        "avro.codec": codec,
        _META + "format": SEGMENT_FORMAT,
        _META + "topic": key.topic,
        _META + "partition": str(key.partition),
        _META + "from": str(key.start),
        _META + "to": str(key.end),
        _META + "count": str(len(datums)),
        _META + "min_timestamp": "" if min_timestamp is None else str(min_timestamp),
        _META + "max_timestamp": "" if max_timestamp is None else str(max_timestamp),
        _META + "schema_fingerprint": schema_fingerprint(RECORD_SCHEMA_FILE),
    }
    sync = hashlib.sha256(key.avro.encode()).digest()[:16]
    header = container_header({k: v.encode() for k, v in meta.items()}, sync)
    parts: list[bytes | bytearray | memoryview] = [header]
    first, size = 0, 0
    for i, datum in enumerate(datums):
        size += len(datum)
        if size >= SEGMENT_BLOCK_BYTES or i == len(datums) - 1:
            parts += container_block(datums[first:i + 1], i + 1 - first, size, codec, sync)
            first, size = i + 1, 0
    return Gathered(parts)


def read_header(data: bytes, where: str = "segment") -> SegmentHeader:
    reader = _reader(data, where)
    return parse_header(reader.metadata)


def decode_segment(data: bytes, where: str = "segment"
                   ) -> tuple[SegmentHeader, Iterator[dict[str, Any]]]:
    """The header and an iterator over the records. Raises IntegrityError if undecodable."""
    reader = _reader(data, where)
    return parse_header(reader.metadata), iter(reader)


def read_records(key: SegmentKey, data: bytes) -> list[dict[str, Any]]:
    """Every record of the segment ``key`` (``data``: its bytes), decoded by fastavro; the
    header must name ``key`` and count the records. Raises IntegrityError otherwise."""
    header, records = decode_segment(data, key.avro)
    if header.key != key:
        raise IntegrityError(f"{key.avro} says it holds {header.key}",
                             "the object was renamed or overwritten; run `vecwal verify --deep`")
    try:
        out = list(records)
    except Exception as exc:  # fastavro raises many kinds on a torn block
        raise IntegrityError(f"{key.avro} is truncated or corrupt: {type(exc).__name__}: {exc}",
                             "restore to a time before this segment, or from a copy") from None
    if len(out) != header.count:
        raise IntegrityError(
            f"{key.avro} holds {len(out)} records, its header says {header.count}: truncated",
            "restore to a time before this segment, or from a copy")
    return out


def _reader(data: bytes, where: str) -> Any:
    """A reader of the segment. A segment written with today's record schema (its header
    says so by fingerprint) is read with its own schema: schema resolution would double the
    cost of decoding. Any other is resolved to today's schema."""
    try:
        reader = fastavro.reader(io.BytesIO(data))
        if reader.metadata.get(_META + "schema_fingerprint") != schema_fingerprint(
                RECORD_SCHEMA_FILE):
            reader = fastavro.reader(io.BytesIO(data), RECORD_SCHEMA)
        return reader
    except Exception as exc:
        raise IntegrityError(
            f"{where} is not a readable Avro file (truncated or corrupt): "
            f"{type(exc).__name__}: {exc}",
            "the object is truncated or corrupt; run `vecwal verify --deep`",
        ) from None


def parse_header(meta: dict[str, str]) -> SegmentHeader:
    try:
        key = SegmentKey(meta[_META + "topic"], int(meta[_META + "partition"]),
                         int(meta[_META + "from"]), int(meta[_META + "to"]))
        lo, hi = meta[_META + "min_timestamp"], meta[_META + "max_timestamp"]
        return SegmentHeader(key, int(meta[_META + "count"]), int(lo) if lo else None,
                             int(hi) if hi else None, meta[_META + "schema_fingerprint"],
                             meta[_META + "format"])
    except (KeyError, ValueError) as exc:
        raise IntegrityError(f"segment header lacks vecwal metadata ({exc})",
                             "this Avro file was not written by vecwal") from None
