"""One log stream: a broker outage under a running ``vecwal run`` with ``[log] format = "json"``
leaves only JSON lines on the daemon's stderr (before, ~20 raw ``%3|...|FAIL|...`` lines a
second), librdkafka's lines as ``kafka client log`` events of the capture client, each
distinct line written about once per window with the count of the repeats not written; the
same for capture's error callback (``kafka client error``)."""

from __future__ import annotations

import itertools
import json
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.kafka_logging import REPEAT_S, same_line
from daemon.workload import Workload, produce
from tests.integration.harness import Target, start_vecwal, wait_for

pytestmark = pytest.mark.integration


def _events(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    raw = [line for line in lines if not line.startswith("{")]
    assert not raw, f"{len(raw)} lines of the daemon's stderr are not JSON: {raw[:3]}"
    return [json.loads(line) for line in lines]


def _assert_once_per_window(lines: list[dict[str, Any]],
                            text: Callable[[dict[str, Any]], str]) -> None:
    """Some repeats were counted, and each distinct line was written first at most once per
    window (a line with ``suppressed`` is a window's count, written when it closes)."""
    assert lines and sum(e.get("suppressed", 0) for e in lines) >= 1, lines
    firsts: dict[tuple[str, str], list[datetime]] = {}
    for e in lines:
        if not e.get("suppressed"):
            key = (e["level"], same_line(text(e)))
            firsts.setdefault(key, []).append(datetime.fromisoformat(e["timestamp"]))
    for key, times in firsts.items():
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert all(gap >= REPEAT_S - 0.5 for gap in gaps), (key, times)


def test_a_broker_outage_is_json_events_with_the_repeats_counted(
        file_target: Target, kafka_service: Any, tmp_path: Path, group_id: str) -> None:
    if not kafka_service.controllable:
        pytest.skip("the Kafka broker was given by the environment; it cannot be stopped here")
    target = file_target
    produce(target.bootstrap, target.topic, Workload(seed=7, collections={"docs": 8}).preamble())
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5,
                              dimensions={"docs": 8})
    log_path = tmp_path / "daemon.log"
    proc = start_vecwal("run", "--config", str(cfg), env=target.env, log_path=log_path)
    try:
        repo = target.repository()
        wait_for(lambda: any(True for p in range(3) for _ in repo.list_segments(target.topic, p)),
                  60, "the first segment")
        kafka_service.stop()
        outage_began = time.monotonic()

        def librdkafka_lines() -> list[dict[str, Any]]:
            return [e for e in _events(log_path) if e["event"] == "kafka client log"]

        wait_for(lambda: any(e["level"] == "error" for e in librdkafka_lines()), 15,
                  "librdkafka's first error line")
        time.sleep(max(0.0, 4 - (time.monotonic() - outage_began)))
        kafka_service.start()
        # the counts are written when a window ends (REPEAT_S after its first line)
        wait_for(lambda: any("suppressed" in e for e in librdkafka_lines()), REPEAT_S + 20,
                  "the count of the repeated lines")
        assert proc.poll() is None, "the daemon must survive a broker outage"
    finally:
        kafka_service.ensure_running()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    events = _events(log_path)
    assert code == 0, events[-10:]
    rdkafka = [e for e in events if e["event"] == "kafka client log"]
    assert {e["client"] for e in rdkafka} == {"capture"}, rdkafka
    assert all(e["facility"] and "#" in e["rdkafka"] for e in rdkafka), rdkafka  # host#consumer-3
    refused = [e for e in rdkafka if "Connection refused" in e["message"]]
    assert refused and all(e["level"] == "error" and e["facility"] == "FAIL" for e in refused)
    # repeats are counted, not written (how many there are is librdkafka's: its reconnect
    # backoff grows from 100 ms to 10 s and it folds identical errors itself, so under load
    # only a few come in 4 s)
    _assert_once_per_window(rdkafka, lambda e: f"{e['facility']} {e['message']}")
    errors = [e for e in events if e["event"] == "kafka client error"]  # capture's error_cb
    _assert_once_per_window(errors, lambda e: str(e["error"]))
    # the daemon's last word is that it stopped; a client closing behind it may still report
    # (seen under load: an error_cb line after the stop)
    names = [e["event"] for e in events]
    assert "capture stopped" in names, names[-10:]
    after = names[len(names) - 1 - names[::-1].index("capture stopped") + 1:]
    assert set(after) <= {"kafka client log", "kafka client error"}, after
