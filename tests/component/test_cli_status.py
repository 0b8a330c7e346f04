"""`vecwal status` when Kafka cannot be read: the repository's part is printed whole (text and
JSON), the Kafka error is named with its fix, and the exit code is 1 so a script sees it;
`--no-kafka` reads the store only and exits 0."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.component.test_cli_restore import logged_repository, vecwal
from tests.oracle.history import generate


def test_status_reports_the_store_and_exits_1_when_kafka_cannot_be_read(tmp_path: Path) -> None:
    cfg, _repo = logged_repository(tmp_path, generate(5, 60))
    cfg.write_text(cfg.read_text().replace("unused:9092", "127.0.0.1:1"))  # nothing listens
    began = time.monotonic()
    done = vecwal("status", "--config", str(cfg), "--json", "--kafka-timeout", "1.5")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["kafka_error"], report
    assert "within 1.5s" in report["kafka_error"], report["kafka_error"]
    assert time.monotonic() - began < 9, "the timeout given is the one waited"  # default 10 s
    assert report["partitions"] and report["valid_through"]  # the store's part is whole
    assert all(p["captured_offset"] is not None for p in report["partitions"])

    text = vecwal("status", "--config", str(cfg), "--kafka-timeout", "1")
    assert text.returncode == 1
    assert "kafka          unreachable:" in text.stdout and "valid through" in text.stdout
    assert "--no-kafka" in text.stderr

    store_only = vecwal("status", "--config", str(cfg), "--no-kafka", "--json")
    assert store_only.returncode == 0, store_only.stderr
    assert json.loads(store_only.stdout)["kafka_error"] is None


def test_a_kafka_timeout_that_is_not_seconds_is_refused_with_the_form(tmp_path: Path) -> None:
    cfg, _repo = logged_repository(tmp_path, generate(5, 60))
    for bad in ("soon", "0", "-1", "7200"):
        done = vecwal("status", "--config", str(cfg), "--kafka-timeout", bad)
        assert done.returncode == 2, (bad, done.stderr)
        assert "--kafka-timeout" in done.stderr and "seconds" in done.stderr, done.stderr
