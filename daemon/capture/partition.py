"""PartitionState: everything capture tracks for one owned partition."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from daemon.capture.segment_buffer import OpenSegment, SealedSegment
from daemon.changelog.watermark import Watermark


@dataclass
class HighWatermarkProof:
    """What one look at a partition's end proves: Kafka's high watermark was ``offset`` at wall
    time ``seen_ms`` (or later). With LogAppendTime every event appended after that look is
    stamped at or after it (less the brokers' clock skew, ``clock_margin_ms``), so once the log
    is durable to ``offset``, every event stamped up to ``seen_ms - margin`` is durable."""

    offset: int
    seen_ms: int


MAX_PROOFS = 16


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
    in_flight_valid_ms: int | None = None
    """The valid-through of the watermark the write in flight carries."""
    failures: int = 0
    retry_at: float = 0.0
    proofs: deque[HighWatermarkProof] = field(default_factory=deque)
    """Looks at the partition's end not yet used, oldest first, offsets and times increasing."""
    high_watermark: int | None = None
    last_error: dict[str, Any] | None = None
    capture_clock_ms: int = 0
    """capture.timeline = capture: the last capture time given to an event."""
    future_stamped: int = 0
    """Events stamped ahead of capture's observation by more than the clock margin (kept
    across restarts in the watermark)."""
    last_future_stamped: dict[str, int] | None = None
    last_watermark_write: float = 0.0

    @property
    def buffered_bytes(self) -> int:
        return self.open.bytes + sum(s.buffered_bytes for s in self.pending)

    @property
    def idle(self) -> bool:
        """Nothing buffered, sealed or uploading: the store holds all this owner consumed."""
        return self.open.is_empty and not self.pending and self.in_flight is None

    def note_error(self, kind: str, message: str) -> None:
        self.last_error = {"kind": kind, "message": message, "at_ms": int(time.time() * 1000)}

    def watermark(self, through: int, valid_ms: int | None, last_segment: str | None,
                  writer: str) -> Watermark:
        """The partition's watermark object: durable to ``through``, valid to ``valid_ms``."""
        return Watermark(topic=self.topic, partition=self.partition, captured_through=through,
                         valid_through_ms=valid_ms, updated_at_ms=int(time.time() * 1000),
                         writer=writer, last_segment=last_segment, last_error=self.last_error,
                         future_stamped=self.future_stamped,
                         last_future_stamped=self.last_future_stamped)

    def observe_end(self, offset: int, seen_ms: int) -> None:
        """Kafka said the partition ends at ``offset`` at (or after) wall time ``seen_ms``."""
        self.high_watermark = offset if self.high_watermark is None else max(
            self.high_watermark, offset)
        proofs = self.proofs
        while proofs and proofs[-1].offset >= offset:
            if proofs[-1].seen_ms > seen_ms:
                return  # an older-looking proof that is as strong: keep it
            proofs.pop()  # a later look at the same end proves more
        proofs.append(HighWatermarkProof(offset, seen_ms))
        if len(proofs) > MAX_PROOFS:  # keep the newest; one proof ends the burst
            proofs.popleft()

    def proven_through(self, durable_end: int, margin_ms: int) -> int | None:
        """The latest time the proofs vouch for once the log is durable to ``durable_end``
        (the proofs this uses are kept: the watermark write may still fail)."""
        best = None
        for proof in self.proofs:
            if proof.offset > durable_end:
                break
            best = proof.seen_ms - margin_ms
        return best

    def drop_proofs_through(self, durable_end: int) -> None:
        """Forget the proofs a durable watermark has used."""
        while len(self.proofs) > 1 and self.proofs[1].offset <= durable_end:
            self.proofs.popleft()

    def valid_through_after(self, seg: SealedSegment, margin_ms: int, wall_ms: int,
                            last_ms_closed: bool = False) -> int | None:
        """Valid-through once ``seg`` is durable: the latest of the previous value, one ms
        before the segment's last timestamp (more events may share that millisecond, right
        after it; with ``last_ms_closed`` none can: capture's own timeline), and what the
        looks at the partition's end prove for the segment's end. Never ahead of the wall
        clock, whatever producers stamped."""
        return self.valid_through_at(seg.key.end, seg.max_timestamp, margin_ms, wall_ms,
                                     last_ms_closed)

    def valid_through_at(self, durable_end: int, max_timestamp: int | None, margin_ms: int,
                         wall_ms: int, last_ms_closed: bool = False) -> int | None:
        candidates = [self.valid_through_ms, self.proven_through(durable_end, margin_ms)]
        if max_timestamp is not None:
            last = max_timestamp if last_ms_closed else max_timestamp - 1
            candidates.append(min(last, wall_ms))
        known = [c for c in candidates if c is not None]
        return max(known) if known else None
