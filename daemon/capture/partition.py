"""PartitionState: everything capture tracks for one owned partition."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from daemon.capture.segment_buffer import OpenSegment, SealedSegment


@dataclass
class PartitionState:
    topic: str
    partition: int
    open: OpenSegment
    durable_through: int
    """The next offset to capture according to the store (segments written)."""
    valid_through_ms: int | None = None
    pending: deque[SealedSegment] = field(default_factory=deque)
    """Sealed segments not yet durable, in offset order; the head is uploaded first."""
    in_flight: Future[Any] | None = None
    in_flight_kind: str = ""
    failures: int = 0
    retry_at: float = 0.0
    eof_offset: int | None = None
    eof_seen_wall_ms: int | None = None
    high_watermark: int | None = None
    last_error: dict[str, Any] | None = None
    last_watermark_write: float = 0.0

    @property
    def buffered_bytes(self) -> int:
        return self.open.bytes + sum(s.buffered_bytes for s in self.pending)

    @property
    def caught_up(self) -> bool:
        """Nothing buffered and the last EOF Kafka reported is where the store is."""
        return (self.open.is_empty and not self.pending and self.in_flight is None
                and self.eof_offset is not None and self.eof_offset == self.durable_through)

    def note_error(self, kind: str, message: str) -> None:
        self.last_error = {"kind": kind, "message": message, "at_ms": int(time.time() * 1000)}

    def valid_through_after(self, seg: SealedSegment, margin_ms: int) -> int | None:
        """Valid-through once ``seg`` is durable. Events with the segment's last timestamp may
        have more at the same millisecond right after it, so the safe bound is one ms less;
        if Kafka reported end-of-partition exactly at the segment's end, every event appended
        before that observation is in the segment."""
        candidates = [self.valid_through_ms]
        if seg.max_timestamp is not None:
            candidates.append(seg.max_timestamp - 1)
        if self.eof_offset == seg.key.end and self.eof_seen_wall_ms is not None and \
                self.open.is_empty:
            candidates.append(self.eof_seen_wall_ms - margin_ms)
        known = [c for c in candidates if c is not None]
        return max(known) if known else None
