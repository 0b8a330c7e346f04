"""Scanning a segment's Avro bytes without decoding its records, and splicing the snapshot
record of an upsert or delete out of them.

Folding the log (compaction, restore, audit diff) turns every upsert and delete into a
snapshot record ``Row``: the Avro bytes of ``schemas/snapshot_record.avsc``, its content hash
and its version. Decoding each change-log record with fastavro and encoding the snapshot record
again costs ~60 µs per 768-dimension event; almost all of those bytes do not change.

**The splice.** In Avro a record is the concatenation of its fields' encodings, in schema
order, with nothing between them; a field's encoding depends only on its type and value. Lined
up, the two schemas are (``=`` byte-identical types)::

    ChangeLogRecord                         SnapshotRecord
    offset long, timestamp long             .
    key [null,bytes], op string             .
    collection string, tenant string    =   collection string, tenant string
    id [null,string]                        id string
    dimension .. source (10 fields)     =   dimension .. source (10 fields)
    alias, schema, settings                 .
    event_id, event_time, extra         =   event_id, event_time, extra
    producer_timestamp                      .
                                            last_offset long, last_timestamp long,
                                            last_partition int, last_topic string

A union encodes as its branch index (a zigzag varint: ``0x02`` for branch 1) followed by the
branch's value, so a present id, ``0x02`` + string, is the snapshot's plain string once the
branch byte is dropped. Hence the snapshot record of an event is, byte for byte::

    bytes[collection .. id branch) + bytes[id string .. end of source)
      + bytes[event_id .. end of extra)                        <- the content, content_len
      + bytes[offset .. end of timestamp]                      <- last_offset, last_timestamp
      + long(partition) + long(len(topic)) + topic             <- from the segment key

which is exactly what ``Row.of(record_from_event(event, topic, partition))`` encodes: the same
field values, in the same order, in the same canonical encoding (fastavro writes minimal
varints, and the scanner refuses a non-minimal union branch or boolean byte rather than copy
one). A delete is spliced the same way (its fields are usually nulls; whatever it carries,
``record_from_event`` copies too) and its row is a tombstone. ``tests/unit/test_scan.py``
checks the equality on random events.

**Checks.** The scanner checks what fastavro's reader checks and what ``read_records`` adds:
the container header, each block's sync marker, that each block's records end exactly at the
block's end, that the count of records equals the header's ``vecwal.count``, that the header
names the segment, and that every string is UTF-8. Any disagreement raises IntegrityError;
a segment is scanned completely before its first event is returned, as ``read_records`` does.

Only segments written with today's record schema (by its fingerprint in the header) are
scanned; any other is decoded by fastavro with schema resolution and folded the old way
(``record_from_event`` and ``Row.of``), so older segments stay readable.
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any, NamedTuple

import fastavro

from daemon.avro_container import decompress
from daemon.avro_long import avro_long
from daemon.changelog.keys import SegmentKey
from daemon.changelog.scan_loop import EMITTED, Damage, length, scan_records, varint
from daemon.changelog.segment import (
    RECORD_SCHEMA,
    RECORD_SCHEMA_FILE,
    SegmentHeader,
    parse_header,
    read_records,
)
from daemon.errors import IntegrityError
from daemon.rows import Row, content_hash, record_from_event
from daemon.schemas_loader import schema_fingerprint

MAGIC = b"Obj\x01"
_TORN_HINT = "restore to a time before this segment, or from a copy"


class ScannedEvent(NamedTuple):
    """One change-log record, located in its block's bytes: what the stop rules and the fold
    look at, decoded; everything else as positions in ``view``."""

    offset: int
    timestamp: int
    op: str
    collection: str
    tenant: str
    id: str | None
    view: memoryview
    """The decompressed block (for codec null: the whole segment)."""
    start: int
    """The record's first byte (its offset)."""
    version_end: int
    """After its timestamp."""
    content_start: int
    """Its collection."""
    id_mark: int
    """Its id's union branch."""
    id_start: int
    """After that branch."""
    source_end: int
    """After its source field (before alias)."""
    tail_start: int
    """Its event_id."""
    tail_end: int
    """After its extra (before producer_timestamp, which the snapshot does not keep)."""
    end: int

    def row(self, topic: str, partition: int) -> Row:
        """The snapshot record of this upsert or delete (a tombstone), spliced (see above)."""
        (offset, timestamp, op, _, tenant, rid, view, start, version_end, cs, im, ids, se, ts,
         te, _end) = self
        raw = b"".join((view[cs:im], view[ids:se], view[ts:te], view[start:version_end],
                        _version_tail(topic, partition)))
        content_len = (im - cs) + (se - ids) + (te - ts)
        return Row((tenant, rid), (timestamp, topic, partition, offset),  # type: ignore[arg-type]
                   raw, content_len, content_hash(memoryview(raw)[:content_len]),
                   op == "delete")

    def event(self) -> dict[str, Any]:
        """The record decoded as fastavro decodes it from the segment (catalog events)."""
        rec: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
            io.BytesIO(self.view[self.start:self.end]), RECORD_SCHEMA, None)
        return rec


if ScannedEvent._fields != EMITTED:  # scan_loop's MARKS and CAPTURES, in this order
    raise ImportError(f"scan_loop emits {EMITTED}, ScannedEvent holds {ScannedEvent._fields}")


class DecodedEvent:
    """A record of a segment fastavro decoded (a foreign record schema): the same face as
    ``ScannedEvent``, folded the old way."""

    __slots__ = ("collection", "ev", "id", "offset", "op", "tenant", "timestamp")

    def __init__(self, ev: dict[str, Any]) -> None:
        self.ev = ev
        self.offset: int = ev["offset"]
        self.timestamp: int = ev["timestamp"]
        self.op: str = ev["op"]
        self.collection: str = ev["collection"]
        self.tenant: str = ev["tenant"]
        self.id: str | None = ev["id"]

    def row(self, topic: str, partition: int) -> Row:
        return Row.of(record_from_event(self.ev, topic, partition)).without_record()

    def event(self) -> dict[str, Any]:
        return self.ev


Event = ScannedEvent | DecodedEvent


@cache
def _version_tail(topic: str, partition: int) -> bytes:
    """last_partition and last_topic, encoded: the same for every event of a partition."""
    t = topic.encode()
    return avro_long(partition) + avro_long(len(t)) + t


def scan_segment(key: SegmentKey, data: bytes) -> list[Event]:
    """Every event of the segment ``key`` (``data``: its bytes), in file order. Raises
    IntegrityError if the bytes are damaged, or are not the segment ``key``."""
    if not isinstance(data, bytes):
        data = bytes(data)
    try:
        header, codec, sync, pos = read_container_header(data)
    except (Damage, IndexError, UnicodeDecodeError) as exc:
        raise IntegrityError(
            f"{key.avro} is not a readable Avro file (truncated or corrupt): {_what(exc)}",
            "the object is truncated or corrupt; run `vecwal verify --deep`") from None
    if header.key != key:
        raise IntegrityError(f"{key.avro} says it holds {header.key}",
                             "the object was renamed or overwritten; run `vecwal verify --deep`")
    if header.schema_fingerprint != schema_fingerprint(RECORD_SCHEMA_FILE):
        return [DecodedEvent(ev) for ev in read_records(key, data)]
    out: list[Event] = []
    try:
        _scan_blocks(data, pos, codec, sync, out)
    except (Damage, IndexError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{key.avro} is truncated or corrupt: {_what(exc)}",
                             _TORN_HINT) from None
    if len(out) != header.count:
        raise IntegrityError(
            f"{key.avro} holds {len(out)} records, its header says {header.count}: truncated",
            _TORN_HINT)
    return out


def _what(exc: Exception) -> str:
    if isinstance(exc, IndexError):
        return "a record runs past the end of the file"
    if isinstance(exc, UnicodeDecodeError):
        return "a string is not UTF-8"
    return str(exc)


def read_container_header(data: bytes) -> tuple[SegmentHeader, str, bytes, int]:
    """The segment header, codec and sync marker of an Avro container, and where its first
    block starts."""
    if data[:4] != MAGIC:
        raise Damage("no Avro magic")
    pos = 4
    meta: dict[str, str] = {}
    while True:
        n, pos = varint(data, pos)
        if n == 0:
            break
        if n < 0:
            _, pos = varint(data, pos)
            n = -n
        for _ in range(n):
            size, pos = length(data, pos)
            k = data[pos:pos + size].decode()
            pos += size
            size, pos = length(data, pos)
            meta[k] = data[pos:pos + size].decode()
            pos += size
    sync = data[pos:pos + 16]
    if len(sync) != 16:
        raise Damage("the header ends before its sync marker")
    try:
        header = parse_header(meta)
    except IntegrityError as exc:
        raise Damage(exc.message) from None
    return header, meta.get("avro.codec", "null"), sync, pos + 16


def _scan_blocks(data: bytes, pos: int, codec: str, sync: bytes, out: list[Event]) -> None:
    whole = memoryview(data)
    size_of = len(data)
    tails: dict[bytes, int] = {}
    while pos < size_of:
        count, pos = varint(data, pos)
        size, pos = length(data, pos)
        if count < 0:
            raise Damage(f"a block of {count} records")
        stop = pos + size
        if stop + 16 > size_of:
            raise Damage("the last block ends early")
        if data[stop:stop + 16] != sync:
            raise Damage("bad sync marker after a block")
        if codec == "null":
            buf, at, end, view = data, pos, stop, whole
        else:
            try:
                buf = bytes(decompress(whole[pos:stop], codec))
            except IntegrityError:
                raise
            except Exception as exc:  # zlib and zstd raise their own kinds
                raise Damage(f"a block does not decompress: {type(exc).__name__}: "
                              f"{exc}") from None
            at, end, view = 0, len(buf), memoryview(buf)
        at = scan_records(buf, at, end, count, view, out.append, tails, ScannedEvent)
        if at != end:
            raise Damage(f"a block holds {end - at} bytes after its {count} records")
        pos = stop + 16
