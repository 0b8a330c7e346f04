"""Quarantine: bad input kept whole, never lost. Every rejected event keeps its raw key and
value, its Kafka coordinates, the reason and the detail.

Capture writes one object per segment that had rejected events, named by the segment's range
(``QuarantineKey``), before the segment itself: one PUT per segment, however many events it
rejected. The object is a JSON header describing every event, then their raw bytes as they came
from Kafka, in one zstd frame (no base64, no escaping)::

    b"VWQUAR1\\n"   u32 little-endian: header length   header (JSON)   zstd(raw keys and values)

Repositories written before hold one JSON object per rejected event (the per-event layout,
raw bytes in base64); both are read (``SegmentQuarantine.decode``). docs/format.md has both.

With per-tenant keys, capture *seals* an entry whose raw value names a collection
(``seal_entry``): its detail, raw key and raw value become one blob sealed under that tenant's
key (``EntryCipher``: ``daemon.keys.sealing.TenantSealer``), and the collection, tenant and
record id it names stay in clear, so a reader finds it, skips it, and lists a forgotten
tenant's entry without its content. An object holding sealed entries says ``"format": 2``;
objects of format 1 (no sealed entry) are written and read as before.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from daemon.avro_container import zstd as _zstd
from daemon.changelog.keys import QuarantineKey
from daemon.errors import IntegrityError

QUARANTINE_FORMAT = 1
SEALED_FORMAT = 2
"""The format of an object that holds at least one sealed entry (rows of nine fields)."""
KEY_ID_BYTES = 8
"""A sealed blob starts with the id of the tenant key that sealed it (as sealed records do),
then a 12-byte nonce, then the AES-256-GCM ciphertext and tag."""
_SEALED_HEAD = struct.Struct("<iii")
MAGIC = b"VWQUAR1\n"
_LENGTH = struct.Struct("<I")
ZSTD_LEVEL: int | None = 1
"""The payload's zstd level (None: stored uncompressed, ``"compression": "none"``). Level 1 is
the knee for malformed JSON events (numbers as text): 2.95x at about 430 MB/s, where the
negative levels keep less than half the saving (-1: 1.54x, -3: 1.49x) for at most 1.6x the
speed, and leaving it uncompressed cost more through S3 than it saved on file://
(docs/performance.md, "Malformed events"). Readers take any level."""


@dataclass(frozen=True)
class QuarantineEntry:
    """One rejected event: ``key`` and ``value`` are the raw Kafka bytes (None: absent)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    reason: str
    detail: str
    key: bytes | None
    value: bytes | None
    collection: str | None = None
    """Set on a sealed (or opened) entry: the collection its raw value names, in clear."""
    tenant: str | None = None
    """Set with ``collection``: the tenant ("" the default tenant) whose key sealed it."""
    record_id: str | None = None
    """The record id the raw value names (None: it names none), in clear as in the log."""
    sealed: bytes | None = None
    """Not None while the entry is sealed: ``detail``, ``key`` and ``value`` are in it
    (empty, None, None here). Still set after reading: the tenant was forgotten."""

    def to_json(self) -> bytes:
        """The object of the per-event layout (read by ``decode``; capture no longer writes it)."""
        return orjson.dumps({
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "timestamp": self.timestamp, "reason": self.reason, "detail": self.detail,
            "key_b64": _b64(self.key), "value_b64": _b64(self.value)})

    @classmethod
    def from_json(cls, data: bytes) -> QuarantineEntry:
        raw = orjson.loads(data)
        return cls(str(raw["topic"]), int(raw["partition"]), int(raw["offset"]),
                   int(raw["timestamp"]), str(raw["reason"]), str(raw["detail"]),
                   _unb64(raw["key_b64"]), _unb64(raw["value_b64"]))


class EntryCipher(Protocol):
    """Seals bytes under a tenant's current key and opens them with the key they name
    (``daemon.keys.sealing.TenantSealer``): ``seal_random`` returns key id | nonce |
    AES-256-GCM ciphertext; ``open_random`` raises ``TenantForgotten`` when the key was
    destroyed."""

    def seal_random(self, collection: str, tenant: str, plain: bytes, ad: bytes) -> bytes: ...

    def open_random(self, collection: str, tenant: str, sealed: bytes, ad: bytes) -> bytes: ...


def entry_associated_data(e: QuarantineEntry, collection: str, tenant: str) -> bytes:
    """What a sealed entry is bound to: a blob moved to another entry or tenant fails to open."""
    return f"quarantine\0{collection}\0{tenant}\0{e.topic}\0{e.partition}\0{e.offset}".encode()


def seal_entry(e: QuarantineEntry, collection: str, tenant: str, record_id: str | None,
               cipher: EntryCipher, compressor: Any = None) -> QuarantineEntry:
    """``e`` sealed under the tenant's key: detail, raw key and raw value in one blob. Its
    plaintext: one byte (0: stored, 1: zstd at ``ZSTD_LEVEL``), then, compressed so, the
    lengths as three i32 (-1 for None) and the bytes (compressed before it is sealed: the
    object's own compression cannot shrink ciphertext). ``compressor``: a zstd compressor at
    that level to reuse (``sealer_compressor``; one thread at a time)."""
    detail = e.detail.encode()
    plain = b"".join((_SEALED_HEAD.pack(len(detail), _n(e.key), _n(e.value)), detail,
                      e.key or b"", e.value or b""))
    if compressor is None:
        compressor = sealer_compressor()
    plain = b"\0" + plain if compressor is False else \
        b"\1" + compressor.compress(plain, compressor.FLUSH_FRAME)
    blob = cipher.seal_random(collection, tenant, plain,
                              entry_associated_data(e, collection, tenant))
    return replace(e, detail="", key=None, value=None, collection=collection, tenant=tenant,
                   record_id=record_id, sealed=blob)


def sealer_compressor() -> Any:
    """A zstd compressor at ``ZSTD_LEVEL`` for ``seal_entry`` (False: store uncompressed)."""
    return False if ZSTD_LEVEL is None else _zstd().ZstdCompressor(level=ZSTD_LEVEL)


def open_entry(e: QuarantineEntry, cipher: EntryCipher) -> QuarantineEntry:
    """``e`` opened (attribution kept, ``sealed`` None); an unsealed entry as it is. Raises
    what ``cipher.open_random`` raises, and IntegrityError for a blob that is not one."""
    if e.sealed is None:
        return e
    assert e.collection is not None and e.tenant is not None
    plain = cipher.open_random(e.collection, e.tenant, e.sealed,
                               entry_associated_data(e, e.collection, e.tenant))
    try:
        if plain[:1] == b"\1":
            plain = _zstd().decompress(plain[1:])
        elif plain[:1] == b"\0":
            plain = plain[1:]
        else:
            raise ValueError(f"compression {plain[:1]!r} is unknown")
        detail_n, key_n, value_n = _SEALED_HEAD.unpack_from(plain)
        view = memoryview(plain)
        at = _SEALED_HEAD.size + detail_n
        detail = bytes(view[_SEALED_HEAD.size:at]).decode()
        key, at = _take(view, at, None if key_n < 0 else key_n)
        value, at = _take(view, at, None if value_n < 0 else value_n)
        if at != len(plain) or detail_n < 0:
            raise ValueError("its lengths do not add up")
    except (ValueError, struct.error, _zstd().ZstdError) as exc:
        raise IntegrityError(f"sealed quarantine entry {e.topic}/{e.partition}@{e.offset} is "
                             f"not one: {exc}", "the entry was changed; run `vecwal verify "
                             "--deep`") from None
    return replace(e, detail=detail, key=key, value=value, sealed=None)


def same_event(a: QuarantineEntry, b: QuarantineEntry) -> bool:
    """Whether two entries hold the same rejected event (a re-upload's check): equal, or
    both sealed with the same coordinates, reason and attribution: sealing is randomized
    (a retry in one process uploads the entries it sealed once; a range captured again
    after a crash is sealed anew), and sealed contents cannot be compared without keys."""
    if a == b:
        return True
    return a.sealed is not None and b.sealed is not None \
        and replace(a, sealed=None) == replace(b, sealed=None)


@dataclass(frozen=True)
class SegmentQuarantine:
    """The rejected events of one quarantine object, in offset order."""

    key: QuarantineKey
    entries: Sequence[QuarantineEntry]

    def reasons(self) -> dict[str, int]:
        """Rejected events per reason, by reason."""
        return dict(sorted(Counter(e.reason for e in self.entries).items()))

    def encode(self) -> bytes:
        """The object's bytes (deterministic: a re-upload of the same events compares equal)."""
        k, level = self.key, ZSTD_LEVEL
        if k.per_event:
            (entry,) = self.entries
            return entry.to_json()
        raw: list[bytes] = []
        for e in self.entries:
            raw += (e.key or b"", e.value or b"") if e.sealed is None else (e.sealed,)
        payload = b"".join(raw)
        sealed = sum(len(e.sealed) for e in self.entries if e.sealed is not None)
        if sealed * 2 > len(payload):
            level = None  # mostly ciphertext (each sealed entry compressed before it was sealed)
        header = orjson.dumps({
            "format": SEALED_FORMAT if sealed else QUARANTINE_FORMAT,
            "topic": k.topic, "partition": k.partition,
            "start": k.start, "end": k.end, "count": len(self.entries), "reasons": self.reasons(),
            "compression": "none" if level is None else "zstd",
            "entries": [_row(e) for e in self.entries],
        })
        if level is not None:
            payload = _zstd().compress(payload, level=level)
        return b"".join((MAGIC, _LENGTH.pack(len(header)), header, payload))

    @classmethod
    def decode(cls, key: QuarantineKey, data: bytes) -> SegmentQuarantine:
        """Either layout; an object that contradicts its key is an IntegrityError."""
        try:
            entries = [QuarantineEntry.from_json(data)] if key.per_event else _entries(key, data)
            offsets = [e.offset for e in entries]
            if any(e.topic != key.topic or e.partition != key.partition for e in entries) or \
                    offsets != sorted(set(offsets)) or \
                    not all(key.start <= o < key.end for o in offsets):
                raise ValueError("an entry lies outside the object's partition or range, "
                                 "or out of order")
        except (ValueError, KeyError, TypeError, IndexError, struct.error, binascii.Error) as exc:
            raise IntegrityError(
                f"{key.object_key} is not a valid quarantine object: {exc}",
                "the raw bytes of the events it held are lost; the log and restores are not "
                "affected; run `vecwal verify --deep` to see every damaged object") from None
        return cls(key, entries)


def _entries(key: QuarantineKey, data: bytes) -> list[QuarantineEntry]:
    if not data.startswith(MAGIC):
        raise ValueError("bad magic")
    (n,) = _LENGTH.unpack_from(data, len(MAGIC))
    at = len(MAGIC) + _LENGTH.size + n
    head = orjson.loads(data[at - n:at])
    if head["format"] not in (QUARANTINE_FORMAT, SEALED_FORMAT):
        raise ValueError(f"format {head['format']!r} is not supported")
    if (head["topic"], head["partition"], head["start"], head["end"]) != \
            (key.topic, key.partition, key.start, key.end):
        raise ValueError("its header names another range")
    if head["count"] != len(head["entries"]):
        raise ValueError(f"count {head['count']} but {len(head['entries'])} entries")
    if head["compression"] == "zstd":
        zstd = _zstd()
        try:
            data, at = zstd.decompress(data[at:]), 0
        except zstd.ZstdError as exc:
            raise ValueError(f"its events do not decompress: {exc}") from None
    elif head["compression"] != "none":
        raise ValueError(f"compression {head['compression']!r} is not supported")
    out = []
    view = memoryview(data)
    for row in head["entries"]:
        if len(row) == 6:
            offset, timestamp, reason, detail, key_n, value_n = row
            raw_key, at = _take(view, at, key_n)
            raw_value, at = _take(view, at, value_n)
            out.append(QuarantineEntry(key.topic, key.partition, int(offset), int(timestamp),
                                       str(reason), str(detail), raw_key, raw_value))
            continue
        if head["format"] != SEALED_FORMAT or len(row) != 9:
            raise ValueError(f"an entry has {len(row)} fields")
        offset, timestamp, reason, _, _, sealed_n, coll, tenant, record_id = row
        blob, at = _take(view, at, sealed_n)
        if blob is None or len(blob) <= KEY_ID_BYTES + 28 or not isinstance(coll, str) \
                or not isinstance(tenant, str):
            raise ValueError("a sealed entry lacks its blob or attribution")
        out.append(QuarantineEntry(key.topic, key.partition, int(offset), int(timestamp),
                                   str(reason), "", None, None, coll, tenant,
                                   None if record_id is None else str(record_id), blob))
    if at != len(data):
        raise ValueError(f"{len(data) - at} bytes after the last event")
    return out


def _take(view: memoryview, at: int, n: int | None) -> tuple[bytes | None, int]:
    if n is None:
        return None, at
    if not 0 <= n <= len(view) - at:
        raise ValueError("an event's bytes run past the end")
    return bytes(view[at:at + n]), at + n


def _row(e: QuarantineEntry) -> list[object]:
    """An entry's header row: six fields, or nine for a sealed one (its detail, key and value
    in the blob, which follows in the payload)."""
    if e.sealed is None:
        return [e.offset, e.timestamp, e.reason, e.detail, _len(e.key), _len(e.value)]
    return [e.offset, e.timestamp, e.reason, None, None, len(e.sealed), e.collection, e.tenant,
            e.record_id]


def _len(raw: bytes | None) -> int | None:
    return None if raw is None else len(raw)


def _n(raw: bytes | None) -> int:
    return -1 if raw is None else len(raw)


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


__all__ = ["MAGIC", "QUARANTINE_FORMAT", "SEALED_FORMAT", "EntryCipher", "QuarantineEntry",
           "SegmentQuarantine", "open_entry", "same_event", "seal_entry"]
