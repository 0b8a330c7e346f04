"""The per-partition buffer between Kafka and the store.

OpenSegment collects the events of one partition in offset order until it is due (records,
bytes or age); seal() encodes it into a SealedSegment, which waits in its partition's queue
until it is durable. The range of a segment covers every offset it saw, including quarantined
events and offsets Kafka never delivers (transaction markers, compacted records), so the log's
coverage has no holes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemon.changelog.keys import SegmentKey
from daemon.changelog.quarantine import QuarantineEntry
from daemon.changelog.segment import encode_segment
from daemon.changelog.sidecar import Sidecar
from daemon.config import CaptureConfig


@dataclass
class SealedSegment:
    key: SegmentKey
    data: bytes
    sidecar: Sidecar
    quarantine: list[QuarantineEntry]
    value_bytes: int
    """Kafka value bytes of the valid events (for the bytes-captured metric)."""
    buffered_bytes: int
    max_timestamp: int | None
    opened_at: float
    sealed_at: float


@dataclass
class OpenSegment:
    topic: str
    partition: int
    start: int
    end: int = -1
    records: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    bytes: int = 0
    value_bytes: int = 0
    opened_at: float | None = None

    def __post_init__(self) -> None:
        if self.end < 0:
            self.end = self.start

    @property
    def is_empty(self) -> bool:
        """True when the segment covers no offset at all (nothing to write)."""
        return self.end == self.start

    def add(self, record: dict[str, Any], size: int, now: float) -> None:
        self.records.append(record)
        self.bytes += size
        self.value_bytes += size
        self._cover(record["offset"] + 1, now)

    def add_quarantined(self, entry: QuarantineEntry, size: int, now: float) -> None:
        self.quarantine.append(entry)
        self.bytes += size
        self._cover(entry.offset + 1, now)

    def extend_to(self, offset: int, now: float) -> None:
        """Cover offsets up to ``offset`` that Kafka will never deliver (seen at partition EOF)."""
        if offset > self.end:
            self._cover(offset, now)

    def _cover(self, end: int, now: float) -> None:
        self.end = end
        if self.opened_at is None:
            self.opened_at = now

    def full(self, cfg: CaptureConfig) -> bool:
        return (len(self.records) + len(self.quarantine) >= cfg.segment_max_records
                or self.bytes >= cfg.segment_max_bytes)

    def due(self, now: float, cfg: CaptureConfig) -> str | None:
        """Why the segment must be sealed now, or None."""
        if self.is_empty:
            return None
        if self.full(cfg):
            return "size"
        if self.opened_at is not None and now - self.opened_at >= cfg.segment_max_age_s:
            return "age"
        return None

    def seal(self, codec: str, now: float) -> SealedSegment:
        key = SegmentKey(self.topic, self.partition, self.start, self.end)
        data = encode_segment(key, self.records, codec)
        sidecar = Sidecar.build(key, self.records, data, quarantined=len(self.quarantine))
        return SealedSegment(
            key=key, data=data, sidecar=sidecar, quarantine=self.quarantine,
            value_bytes=self.value_bytes, buffered_bytes=self.bytes,
            max_timestamp=sidecar.max_timestamp, opened_at=self.opened_at or now, sealed_at=now,
        )

    def successor(self) -> OpenSegment:
        return OpenSegment(self.topic, self.partition, self.end)
