"""Quarantine: bad input kept whole, never lost. Every rejected event keeps its raw key and
value, its Kafka coordinates, the reason and the detail.

Capture writes one object per segment that had rejected events, named by the segment's range
(``QuarantineKey``), before the segment itself: one PUT per segment, however many events it
rejected. Repositories written before hold one object per rejected event (the per-event
layout); both are read (``SegmentQuarantine.decode``). docs/format.md describes both.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.changelog.keys import QuarantineKey
from daemon.errors import IntegrityError

QUARANTINE_FORMAT = 1


@dataclass(frozen=True)
class QuarantineEntry:
    """One rejected event. ``key`` and ``value`` are the raw Kafka bytes (base64 on storage)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    reason: str
    detail: str
    key: bytes | None
    value: bytes | None

    def fields(self) -> dict[str, Any]:
        """The event's fields inside a segment's quarantine object (topic and partition are
        the object's)."""
        return {"offset": self.offset, "timestamp": self.timestamp, "reason": self.reason,
                "detail": self.detail, "key_b64": _b64(self.key), "value_b64": _b64(self.value)}

    def to_json(self) -> bytes:
        """The object of the per-event layout (read by ``decode``; capture no longer writes it)."""
        return orjson.dumps({"topic": self.topic, "partition": self.partition, **self.fields()})

    @classmethod
    def of_fields(cls, topic: str, partition: int, raw: dict[str, Any]) -> QuarantineEntry:
        return cls(topic, partition, int(raw["offset"]), int(raw["timestamp"]),
                   str(raw["reason"]), str(raw["detail"]), _unb64(raw["key_b64"]),
                   _unb64(raw["value_b64"]))


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
        k = self.key
        if k.per_event:
            (entry,) = self.entries
            return entry.to_json()
        return orjson.dumps({
            "format": QUARANTINE_FORMAT, "topic": k.topic, "partition": k.partition,
            "start": k.start, "end": k.end, "count": len(self.entries), "reasons": self.reasons(),
            "entries": [e.fields() for e in self.entries],
        })

    @classmethod
    def decode(cls, key: QuarantineKey, data: bytes) -> SegmentQuarantine:
        """Either layout; an object that contradicts its key is an IntegrityError."""
        try:
            raw = orjson.loads(data)
            if key.per_event:
                entries = [QuarantineEntry.of_fields(raw["topic"], int(raw["partition"]), raw)]
            else:
                if raw["format"] != QUARANTINE_FORMAT:
                    raise ValueError(f"format {raw['format']!r} is not supported")
                if (raw["topic"], raw["partition"], raw["start"], raw["end"]) != \
                        (key.topic, key.partition, key.start, key.end):
                    raise ValueError("its header names another range")
                entries = [QuarantineEntry.of_fields(key.topic, key.partition, e)
                           for e in raw["entries"]]
                if raw["count"] != len(entries):
                    raise ValueError(f"count {raw['count']} but {len(entries)} entries")
            offsets = [e.offset for e in entries]
            if any(e.topic != key.topic or e.partition != key.partition for e in entries) or \
                    offsets != sorted(set(offsets)) or \
                    not all(key.start <= o < key.end for o in offsets):
                raise ValueError("an entry lies outside the object's partition or range, "
                                 "or out of order")
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError,
                binascii.Error) as exc:
            raise IntegrityError(
                f"{key.object_key} is not a valid quarantine object: {exc}",
                "the raw bytes of the events it held are lost; the log and restores are not "
                "affected; run `vecwal verify --deep` to see every damaged object") from None
        return cls(key, entries)


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text, validate=True)
