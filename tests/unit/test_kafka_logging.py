"""librdkafka's log lines as structured events, repeats counted per window: the handler alone,
fed records as confluent-kafka makes them, on a fake clock (the timer is tested with a real
client in tests/component/test_kafka_logging.py)."""

from __future__ import annotations

import logging
from typing import Any

from structlog.testing import capture_logs

from daemon.kafka_logging import ErrorLog, Repeats, StructlogHandler

REFUSED = ("127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection "
           "refused (after {ms}ms in state CONNECT{more})")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(text: str, level: int = logging.ERROR, facility: str = "FAIL") -> logging.LogRecord:
    """A record as confluent-kafka's log callback makes it: ``logger.log(level, "%s [%s] %s",
    facility, handle name, text)``."""
    return logging.LogRecord("x", level, __file__, 0, "%s [%s] %s",
                             (facility, "rdkafka#consumer-1", text), None)


def refused(i: int, port: int = 9092) -> logging.LogRecord:
    more = f", {i} identical error(s) suppressed" if i % 3 else ""
    return record("[thrd:127.0.0.1:9092/bootstrap]: "
                  + REFUSED.format(ms=i % 7, more=more).replace("9092", str(port)))


def feed(handler: StructlogHandler, records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    with capture_logs() as logs:
        for r in records:
            handler.handle(r)
    return logs


def test_a_line_becomes_an_event_with_the_clients_name_facility_and_level() -> None:
    handler = StructlogHandler("capture", 10.0, Clock(), timers=False)
    [event] = feed(handler, [refused(0)])
    assert event == {
        "event": "kafka client log", "log_level": "error", "client": "capture",
        "rdkafka": "rdkafka#consumer-1", "facility": "FAIL", "thread": "127.0.0.1:9092/bootstrap",
        "message": REFUSED.format(ms=0, more="")}
    [info] = feed(handler, [record("[thrd:main]: partition assigned", logging.INFO, "ASSIGN")])
    assert (info["log_level"], info["facility"], info["thread"]) == ("info", "ASSIGN", "main")


def test_repeats_within_the_window_are_counted_and_the_count_is_written_after_it() -> None:
    clock = Clock()
    handler = StructlogHandler("capture", 10.0, clock, timers=False)
    logs = []
    for i in range(240):  # a 15 s outage: 16 lines a second
        logs += feed(handler, [refused(i)])
        clock.now += 1 / 16
    # t=0 written; t=1/16..10-1/16 counted (159); at 10 the count, then the line opens a window
    assert [e.get("suppressed") for e in logs] == [None, 159, None]
    assert logs[1]["message"] == logs[0]["message"] == REFUSED.format(ms=0, more="")
    assert logs[1]["window_s"] == 10.0
    clock.now += 10
    with capture_logs() as end:
        handler.flush()
    assert [e["suppressed"] for e in end] == [79]
    with capture_logs() as nothing:
        handler.flush()
    assert nothing == []


def test_another_broker_or_level_is_another_line() -> None:
    handler = StructlogHandler("capture", 10.0, Clock(), timers=False)
    logs = feed(handler, [refused(0), refused(1, port=9093), refused(2),
                          record("[thrd:main]: 1/1 brokers are down", facility="ERROR"),
                          record("[thrd:main]: 1/1 brokers are down", logging.WARNING, "ERROR"),
                          record("[thrd:main]: 1/1 brokers are down", facility="ERROR")])
    assert len(logs) == 4
    assert {e["message"].split("/")[0] for e in logs[:2]} == {"127.0.0.1:9092", "127.0.0.1:9093"}


def test_a_zero_window_writes_every_line() -> None:
    handler = StructlogHandler("status", 0.0, Clock(), timers=False)
    assert len(feed(handler, [refused(0)] * 5)) == 5


def test_a_record_not_from_confluent_kafka_is_still_an_event() -> None:
    handler = StructlogHandler("check", 10.0, Clock(), timers=False)
    [event] = feed(handler, [logging.LogRecord("x", 5, __file__, 0, "plain %s", ("text",), None)])
    assert (event["message"], event["log_level"]) == ("plain text", "debug")


def test_error_callback_events_are_counted_like_log_lines() -> None:
    errors = ErrorLog("capture", repeat_s=10.0)
    errors.repeats = Repeats(errors._write, 10.0, Clock(), timers=False)
    with capture_logs() as logs:
        for i in range(50):
            errors.warning(f"_TRANSPORT: {REFUSED.format(ms=i % 3, more='')}", hint=None)
        errors.error("_AUTHENTICATION: SASL authentication error", hint="fix sasl.password")
        errors.repeats.flush()
    assert [(e["event"], e["log_level"], e.get("suppressed")) for e in logs] == [
        ("kafka client error", "warning", None), ("kafka client error", "error", None),
        ("kafka client error", "warning", 49)]
    assert logs[1]["hint"] == "fix sasl.password" and logs[0]["client"] == "capture"
