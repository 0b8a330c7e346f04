"""Quarantine: bad input kept whole, never lost. Every rejected event keeps its raw key and
value, its Kafka coordinates, the reason and the detail.

Capture writes one object per segment that had rejected events, named by the segment's range
(``QuarantineKey``), before the segment itself: one PUT per segment, however many events it
rejected. The object is a JSON header describing every event, then their raw bytes as they came
from Kafka, in one zstd frame (no base64, no escaping)::

    b"VWQUAR1\\n"   u32 little-endian: header length   header (JSON)   zstd(raw keys and values)

Repositories written before hold one JSON object per rejected event (the per-event layout,
raw bytes in base64); both are read (``SegmentQuarantine.decode``). docs/format.md has both.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from daemon.changelog.keys import QuarantineKey
from daemon.errors import IntegrityError
from daemon.snapshot.datafile import _zstd

QUARANTINE_FORMAT = 1
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
        header = orjson.dumps({
            "format": QUARANTINE_FORMAT, "topic": k.topic, "partition": k.partition,
            "start": k.start, "end": k.end, "count": len(self.entries), "reasons": self.reasons(),
            "compression": "none" if level is None else "zstd",
            "entries": [[e.offset, e.timestamp, e.reason, e.detail, _len(e.key), _len(e.value)]
                        for e in self.entries],
        })
        raw: list[bytes] = []
        for e in self.entries:
            raw += (e.key or b"", e.value or b"")
        payload = b"".join(raw)
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
    if head["format"] != QUARANTINE_FORMAT:
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
    for offset, timestamp, reason, detail, key_n, value_n in head["entries"]:
        raw_key, at = _take(view, at, key_n)
        raw_value, at = _take(view, at, value_n)
        out.append(QuarantineEntry(key.topic, key.partition, int(offset), int(timestamp),
                                   str(reason), str(detail), raw_key, raw_value))
    if at != len(data):
        raise ValueError(f"{len(data) - at} bytes after the last event")
    return out


def _take(view: memoryview, at: int, n: int | None) -> tuple[bytes | None, int]:
    if n is None:
        return None, at
    if not 0 <= n <= len(view) - at:
        raise ValueError("an event's bytes run past the end")
    return bytes(view[at:at + n]), at + n


def _len(raw: bytes | None) -> int | None:
    return None if raw is None else len(raw)


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)


__all__ = ["MAGIC", "QUARANTINE_FORMAT", "QuarantineEntry", "SegmentQuarantine"]
