"""Whose clock orders the events: the topic's, or capture's own.

``capture.timeline = "kafka"`` (the default): an event's time is its Kafka record timestamp.
That is a timeline only when the broker stamps it (``message.timestamp.type=LogAppendTime``):
with CreateTime each producer stamps its own clock, so one producer an hour fast hides every
later write of its partition from restores for an hour and fakes the RPO. Capture therefore
reads each topic's timestamp type at start (``check_topics``) and refuses CreateTime.

``capture.timeline = "capture"``: for topics that must stay CreateTime. Each event's time is
the wall time of the consume() call that returned it, made monotonic per partition and never
at or before an instant the partition's watermark already vouched for (so a clock stepped back
does not rewrite history already declared restorable). The producer's stamp stays in the
record (``producer_timestamp``) and in ``vecwal history``.

Either way, an event stamped ahead of the time capture saw it by more than the clock margin is
counted (``FutureStamps``): a metric, the partition's watermark (``vecwal status``) and a
rate-limited warning naming the partition and offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from daemon.avro_long import avro_long
from daemon.capture.partition import PartitionState
from daemon.errors import VecwalError

log = structlog.get_logger("vecwal.capture")

WARN_EVERY_S = 60.0


class CreateTimeTopic(VecwalError):
    """A topic stamps events with the producers' clocks and capture would order by them."""

    exit_code = 2


def check_topics(timestamp_types: dict[str, str], timeline: str, bootstrap: str) -> None:
    """Refuse a CreateTime topic unless capture keeps its own timeline."""
    if timeline == "capture":
        for topic, kind in sorted(timestamp_types.items()):
            log.info("capture timeline: events ordered by capture time", topic=topic,
                     timestamp_type=kind)
        return
    create = sorted(t for t, kind in timestamp_types.items() if kind != "LogAppendTime")
    if create:
        fix = "; ".join(
            f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {t} --add-config message.timestamp.type=LogAppendTime"
            for t in create)
        raise CreateTimeTopic(
            f"topic(s) {', '.join(create)} use message.timestamp.type="
            f"{timestamp_types[create[0]]}: each producer stamps its own clock, so one with a "
            "fast clock would hide later writes from restores and fake the RPO",
            f"switch them to LogAppendTime (safe on a live topic): {fix}; or, if they must "
            'stay CreateTime, set capture.timeline = "capture" to order events by capture time')


def _varint_end(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


def restamp(datum: bytes, capture_ms: int, producer_ms: int, headers: bytes) -> bytes:
    """A change-log record datum (offset, timestamp, ..., a null producer_timestamp, then
    ``headers``: the encoded headers and headers_truncated that end it,
    ``daemon.kafka_headers.encode_tail``) with ``timestamp`` set to ``capture_ms`` and
    ``producer_timestamp`` to ``producer_ms``."""
    end = len(datum) - len(headers)
    if end < 1 or datum[end - 1] != 0 or datum[end:] != headers:
        raise ValueError("the datum does not end with a null producer_timestamp and its headers")
    ts_start = _varint_end(datum, 0)
    ts_end = _varint_end(datum, ts_start)
    return b"".join((datum[:ts_start], avro_long(capture_ms), datum[ts_end:end - 1], b"\x02",
                     avro_long(producer_ms), headers))


class CaptureClock:
    """Per partition, the capture time of its next event: the consume() call's wall time,
    never before the last one given, never at or before the watermark's valid-through."""

    @staticmethod
    def close(ps: PartitionState, sealed_max_ms: int) -> None:
        """A segment ending at ``sealed_max_ms`` was sealed: every later event of the
        partition gets a later millisecond, so valid-through may include that one."""
        ps.capture_clock_ms = max(ps.capture_clock_ms, sealed_max_ms + 1)

    @staticmethod
    def stamp(ps: PartitionState, consumed_at_ms: int) -> int:
        floor = ps.capture_clock_ms
        if ps.valid_through_ms is not None:
            floor = max(floor, ps.valid_through_ms + 1)
        ps.capture_clock_ms = max(floor, consumed_at_ms)
        return ps.capture_clock_ms


class FutureStamps:
    """Events stamped ahead of capture's observation by more than the clock margin."""

    def __init__(self, margin_ms: int, count: Callable[[str], None]) -> None:
        self.margin_ms = margin_ms
        self._count = count
        self._warned: dict[tuple[str, int], float] = {}

    def check(self, ps: PartitionState, offset: int, timestamp: int, seen_ms: int) -> None:
        if timestamp <= seen_ms + self.margin_ms:
            return
        ps.future_stamped += 1
        ps.last_future_stamped = {"offset": offset, "timestamp_ms": timestamp,
                                  "seen_ms": seen_ms}
        self._count(ps.topic)
        key, now = (ps.topic, ps.partition), time.monotonic()
        if now - self._warned.get(key, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[key] = now
            log.warning("event stamped in the future", topic=ps.topic, partition=ps.partition,
                        offset=offset, timestamp_ms=timestamp, seen_ms=seen_ms,
                        ahead_s=round((timestamp - seen_ms) / 1000, 3),
                        future_stamped=ps.future_stamped,
                        hint="a producer's or broker's clock is ahead; with CreateTime topics "
                             'use LogAppendTime or capture.timeline = "capture"')
