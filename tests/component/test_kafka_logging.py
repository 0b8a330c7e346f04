"""librdkafka's log lines through vecwal's log, with real confluent-kafka clients pointed at a
port where no broker listens (no Kafka needed): stderr, read at the file descriptor (where
librdkafka writes when no logger is set), holds only vecwal's JSON lines; the clients' lines
are ``kafka client log`` events; repeats are counted. The broker outage under a running
daemon is tests/integration/test_kafka_logs.py."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from confluent_kafka import Consumer

from daemon import kafka_logging
from daemon.capture.kafka import timestamp_types
from daemon.config import load_config
from daemon.errors import VecwalError
from daemon.kafka_logging import with_logger
from daemon.logs import configure_logging


@pytest.fixture
def dead_port() -> int:
    with socket.socket() as s:  # bound, never listening: every connect is refused at once
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def json_log(window_s: float = 1.0) -> Iterator[None]:
    """vecwal's JSON log on the stderr of now (capfd's), repeats counted for ``window_s``;
    undone after."""
    before = structlog.get_config()
    configure_logging("info", "json")
    kafka_logging.set_repeat_window(window_s)
    try:
        yield
    finally:
        kafka_logging.set_repeat_window(kafka_logging.REPEAT_S)
        structlog.configure(**before)


def json_lines(err: str) -> list[dict[str, Any]]:
    lines = [line for line in err.splitlines() if line.strip()]
    raw = [line for line in lines if not line.startswith("{")]
    assert not raw, f"lines on stderr that are not JSON: {raw[:3]}"
    return [json.loads(line) for line in lines]


def test_a_consumer_without_a_broker_writes_json_events_and_counts_repeats(
        capfd: pytest.CaptureFixture[str], dead_port: int) -> None:
    with json_log():
        settings = with_logger({"bootstrap.servers": f"127.0.0.1:{dead_port}", "group.id": "g",
                                "reconnect.backoff.max.ms": 100}, "capture")
        consumer = Consumer(settings)
        consumer.subscribe(["ingest"])
        end = time.monotonic() + 2.6  # two windows and a half of refused connects
        while time.monotonic() < end:
            consumer.poll(0.1)
        consumer.close()
        for handler in settings["logger"].handlers:
            handler.flush()  # the last window's count, now rather than from its timer
    events = [e for e in json_lines(capfd.readouterr().err) if e["event"] == "kafka client log"]
    refused = [e for e in events if "Connection refused" in e["message"]]
    assert refused, events
    first = refused[0]
    assert (first["client"], first["facility"], first["level"]) == ("capture", "FAIL", "error")
    assert first["rdkafka"].startswith("rdkafka#consumer-")
    assert first["message"].startswith(f"127.0.0.1:{dead_port}/bootstrap: Connect to ipv4#")
    counts = [e["suppressed"] for e in refused if "suppressed" in e]
    assert counts and all(n > 0 for n in counts), refused  # written by the timer, 1 s apart
    assert len(refused) <= 7 < len(refused) + sum(counts), (len(refused), counts)


def test_a_short_lived_admin_client_hands_over_its_lines_before_it_is_dropped(
        capfd: pytest.CaptureFixture[str], dead_port: int, tmp_path: Path) -> None:
    (tmp_path / "vecwal.toml").write_text(
        f'[kafka]\nbootstrap_servers = "127.0.0.1:{dead_port}"\ntopics = ["ingest"]\n'
        f'[storage]\nurl = "file://{tmp_path}/repo"\n')
    # no window, so no timer writes a count after the test
    # the 1 s runs out in vecwal's wait or in librdkafka's own (_TIMED_OUT): the same refusal
    with json_log(0.0), pytest.raises(
            VecwalError, match=r"timestamp.type: (no answer within 1s|KafkaError\{code=_TIMED_OUT)"):
        timestamp_types(load_config(tmp_path / "vecwal.toml", {}), timeout=1.0)
    events = json_lines(capfd.readouterr().err)
    assert any(e["event"] == "kafka client log" and e["client"] == "capture"
               and "Connection refused" in e["message"] for e in events), events
