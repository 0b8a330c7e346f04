"""capture.timeline: the CreateTime refusal, the capture clock and restamping a record datum."""

from __future__ import annotations

import io

import fastavro
import pytest

from daemon.capture.partition import PartitionState
from daemon.capture.segment_buffer import OpenSegment
from daemon.capture.timeline import (
    CaptureClock,
    CreateTimeTopic,
    FutureStamps,
    check_topics,
    restamp,
)
from daemon.changelog.segment import RECORD_SCHEMA, record_datum
from daemon.events import EventParser
from daemon.kafka_headers import encode_tail


def test_create_time_topics_are_refused_with_the_fix() -> None:
    with pytest.raises(CreateTimeTopic) as refused:
        check_topics({"a": "LogAppendTime", "b": "CreateTime"}, "kafka", "k:9092")
    assert "b" in refused.value.message and "a," not in refused.value.message
    assert "--entity-name b --add-config message.timestamp.type=LogAppendTime" \
        in refused.value.hint
    assert 'capture.timeline = "capture"' in refused.value.hint
    check_topics({"a": "LogAppendTime"}, "kafka", "k:9092")
    check_topics({"b": "CreateTime"}, "capture", "k:9092")


@pytest.mark.parametrize(("offset", "headers"), [
    (0, None), (5, [("batch", b"b-7"), ("batch", None)]), (1 << 40, []), (-(2**63), None),
    (2**63 - 1, [("k", b"\x00" * 5000)])])
def test_restamp_sets_timestamp_and_producer_timestamp(
        offset: int, headers: list[tuple[str, bytes | None]] | None) -> None:
    rec = EventParser(1 << 20).parse(
        b'{"op":"upsert","collection":"c","id":"x","vector":[1,2],"extra_field":1}', "json",
        key=b"x", offset=offset, timestamp=1_700_000_000_000 + 3_600_000, headers=headers)
    datum = restamp(record_datum(rec), 1_700_000_000_123, rec["timestamp"], encode_tail(headers))
    got = fastavro.schemaless_reader(io.BytesIO(datum), RECORD_SCHEMA, None)
    want = {**rec, "timestamp": 1_700_000_000_123, "producer_timestamp": rec["timestamp"]}
    assert got == want
    assert datum == record_datum(want), "byte for byte what the parser's path writes"


def state(valid: int | None = None) -> PartitionState:
    return PartitionState("t", 0, OpenSegment("t", 0, 0), durable_through=0,
                          valid_through_ms=valid)


def test_capture_clock_is_monotonic_and_after_what_was_vouched_for() -> None:
    ps = state(valid=10_000)
    assert CaptureClock.stamp(ps, 5_000) == 10_001, "never at or before valid-through"
    assert CaptureClock.stamp(ps, 20_000) == 20_000
    assert CaptureClock.stamp(ps, 19_000) == 20_000, "a clock stepped back does not go back"


def test_future_stamps_are_counted_beyond_the_margin() -> None:
    counted: list[str] = []
    future = FutureStamps(500, counted.append)
    ps = state()
    future.check(ps, 1, 10_500, 10_000)
    assert ps.future_stamped == 0 and not counted, "within the margin"
    future.check(ps, 2, 10_501, 10_000)
    future.check(ps, 3, 3_610_000, 10_000)
    assert ps.future_stamped == 2 and counted == ["t", "t"]
    assert ps.last_future_stamped == {"offset": 3, "timestamp_ms": 3_610_000, "seen_ms": 10_000}
