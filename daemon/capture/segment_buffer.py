"""The per-partition buffer between Kafka and the store.

OpenSegment collects the events of one partition in offset order, each already encoded as a
change-log record datum, until it is due (records, bytes or age); seal() frames them into a
SealedSegment, which waits in its partition's queue
until it is durable. The range of a segment covers every offset it saw, including quarantined
events and offsets Kafka never delivers (transaction markers, compacted records), so the log's
coverage has no holes.
"""

from __future__ import annotations

import builtins
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from daemon.changelog.keys import SegmentKey
from daemon.changelog.quarantine import QuarantineEntry
from daemon.changelog.segment import record_datum, segment_pieces
from daemon.changelog.sidecar import Sidecar
from daemon.config import CaptureConfig
from daemon.spans import Gathered


@dataclass
class SealedSegment:
    """A segment closed for new events. ``frame`` makes its bytes and sidecar, once: the
    upload thread calls it (``make_durable``), so framing and hashing stay off the loop."""

    key: SegmentKey
    datums: list[builtins.bytes]
    """The records until framed; then empty (the bytes hold them)."""
    count: int
    codec: str
    min_timestamp: int | None
    max_timestamp: int | None
    ops: dict[str, int]
    ids: dict[str, set[str]]
    quarantine: list[QuarantineEntry]
    value_bytes: int
    """Kafka value bytes of the valid events (for the bytes-captured metric)."""
    buffered_bytes: int
    opened_at: float
    sealed_at: float
    _framed: tuple[Gathered, Sidecar] | None = None

    def frame(self) -> tuple[Gathered, Sidecar]:
        """The segment's bytes, as pieces (its framing and, with the null codec, the datums
        themselves: no copy of the segment is made to store it in a file), and its sidecar
        (made on the first call)."""
        if self._framed is None:
            data = segment_pieces(self.key, self.datums, self.min_timestamp,
                                  self.max_timestamp, self.codec)
            self._framed = data, Sidecar.of(self.key, self.count, len(self.quarantine),
                                            self.min_timestamp, self.max_timestamp, data,
                                            self.ops, self.ids)
            self.datums = []  # the pieces hold them now
        return self._framed

    @property
    def data(self) -> builtins.bytes:
        """The segment's bytes, joined (for inspection: capture stores the pieces)."""
        return self.frame()[0].join()

    @property
    def sidecar(self) -> Sidecar:
        return self.frame()[1]


@dataclass
class OpenSegment:
    topic: str
    partition: int
    start: int
    end: int = -1
    datums: list[bytes] = field(default_factory=list)
    """The valid events' change-log records, Avro-encoded, in offset order."""
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    bytes: int = 0
    value_bytes: int = 0
    opened_at: float | None = None
    min_timestamp: int | None = None
    max_timestamp: int | None = None
    ops: dict[str, int] = field(default_factory=dict)
    ids: dict[str, set[str]] = field(default_factory=dict)
    """collection -> record ids: the sidecar's id filter."""

    def __post_init__(self) -> None:
        if self.end < 0:
            self.end = self.start

    @property
    def is_empty(self) -> bool:
        """True when the segment covers no offset at all (nothing to write)."""
        return self.end == self.start

    def add(self, datum: builtins.bytes, offset: int, timestamp: int, op: str, collection: str,
            record_id: str | None, size: int, now: float) -> None:
        """One valid event: its record ``datum`` and what the sidecar says of it."""
        self.add_run([datum], offset, [timestamp], [size], [op], collection,
                     [] if record_id is None else [record_id], now)

    def add_run(self, datums: list[builtins.bytes], last_offset: int, timestamps: list[int],
                sizes: list[int], ops: list[str], collection: str, record_ids: list[str],
                now: float) -> None:
        """Valid events of one collection at once (parallel lists, offset order, ending at
        ``last_offset``): the same segment and sidecar as adding each in turn."""
        self.datums += datums
        size = sum(sizes)
        self.bytes += size
        self.value_bytes += size
        low, high = min(timestamps), max(timestamps)
        if self.min_timestamp is None or low < self.min_timestamp:
            self.min_timestamp = low
        if self.max_timestamp is None or high > self.max_timestamp:
            self.max_timestamp = high
        for op in dict.fromkeys(ops):  # in the order they first appear, as add counts them
            self.ops[op] = self.ops.get(op, 0) + ops.count(op)
        if record_ids:  # an event without an id names no collection in the id filter
            ids = self.ids.get(collection)
            if ids is None:
                ids = self.ids[collection] = set()
            ids.update(record_ids)
        self.end = last_offset + 1
        if self.opened_at is None:
            self.opened_at = now

    def fitting(self, sizes: list[int], lo: int, hi: int, cfg: CaptureConfig) -> int:
        """How far the events ``lo..hi-1`` (Kafka value ``sizes``) go in before the segment
        is full: ``hi``, or one past the event that fills it (records or bytes, as ``full``
        counts them after each ``add``)."""
        room = cfg.segment_max_records - len(self.datums) - len(self.quarantine)
        end = min(hi, lo + max(room, 1))
        filled = bisect_left(list(accumulate(sizes[lo:end])), cfg.segment_max_bytes - self.bytes)
        return min(end, lo + filled + 1)

    def add_record(self, record: dict[str, Any], size: int, now: float) -> None:
        """One valid event as the Python parser gives it (a change-log record)."""
        self.add(record_datum(record), record["offset"], record["timestamp"], record["op"],
                 record["collection"], record["id"], size, now)

    def add_quarantined(self, entry: QuarantineEntry, size: int, now: float) -> None:
        self.quarantine.append(entry)
        self.bytes += size
        self._cover(entry.offset + 1, now)

    def skip(self, offset: int, now: float) -> None:
        """A message that carries no change (a tombstone after a Debezium delete): covered,
        with no record."""
        self._cover(offset + 1, now)

    def extend_to(self, offset: int, now: float) -> None:
        """Cover offsets up to ``offset`` that Kafka will never deliver (seen at partition EOF)."""
        if offset > self.end:
            self._cover(offset, now)

    def _cover(self, end: int, now: float) -> None:
        self.end = end
        if self.opened_at is None:
            self.opened_at = now

    def full(self, cfg: CaptureConfig) -> bool:
        return (len(self.datums) + len(self.quarantine) >= cfg.segment_max_records
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
        return SealedSegment(
            key=SegmentKey(self.topic, self.partition, self.start, self.end), datums=self.datums,
            count=len(self.datums), codec=codec, min_timestamp=self.min_timestamp,
            max_timestamp=self.max_timestamp, ops=self.ops, ids=self.ids, quarantine=self.quarantine,
            value_bytes=self.value_bytes, buffered_bytes=self.bytes,
            opened_at=self.opened_at or now, sealed_at=now,
        )

    def successor(self) -> OpenSegment:
        return OpenSegment(self.topic, self.partition, self.end)
