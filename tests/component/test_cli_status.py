"""`vecwal status` when Kafka cannot be read: the repository's part is printed whole (text and
JSON), the Kafka error is named with its fix, and the exit code is 1 so a script sees it;
`--no-kafka` reads the store only and exits 0."""

from __future__ import annotations

import json
from pathlib import Path

from tests.component.test_cli_restore import logged_repository, vecwal
from tests.oracle.history import generate


def test_status_reports_the_store_and_exits_1_when_kafka_cannot_be_read(tmp_path: Path) -> None:
    cfg, _repo = logged_repository(tmp_path, generate(5, 60))
    cfg.write_text(cfg.read_text().replace("unused:9092", "127.0.0.1:1"))  # nothing listens
    done = vecwal("status", "--config", str(cfg), "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["kafka_error"], report
    assert report["partitions"] and report["valid_through"]  # the store's part is whole
    assert all(p["captured_offset"] is not None for p in report["partitions"])

    text = vecwal("status", "--config", str(cfg))
    assert text.returncode == 1
    assert "kafka          unreachable:" in text.stdout and "valid through" in text.stdout
    assert "--no-kafka" in text.stderr

    store_only = vecwal("status", "--config", str(cfg), "--no-kafka", "--json")
    assert store_only.returncode == 0, store_only.stderr
    assert json.loads(store_only.stdout)["kafka_error"] is None
