"""Where capture of a partition resumes (``capture.assignment.resume_position``)."""

from __future__ import annotations

from structlog.testing import capture_logs

from daemon.capture.assignment import resume_position
from daemon.metrics import Metrics

KEY = ("ingest", 3)


def gaps(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("vecwal_errors_total", {"kind": "retention"}) or 0


def test_the_store_is_the_truth_when_it_is_ahead_of_the_committed_offset() -> None:
    m = Metrics()
    with capture_logs() as logs:
        assert resume_position(KEY, committed=40, stored=55, first=0, metrics=m) == 55
    assert not logs and gaps(m) == 0


def test_a_committed_offset_ahead_of_the_store_is_followed_and_named() -> None:
    m = Metrics()
    with capture_logs() as logs:
        assert resume_position(KEY, committed=70, stored=55, first=0, metrics=m) == 70
    assert [e["event"] for e in logs] == [
        "committed offset is ahead of the store; resuming from Kafka's"]
    assert logs[0]["committed"] == 70 and logs[0]["store"] == 55


def test_a_new_partition_starts_at_kafkas_first_offset_without_an_alarm() -> None:
    m = Metrics()
    with capture_logs() as logs:
        assert resume_position(KEY, committed=-1001, stored=None, first=120, metrics=m) == 120
    assert not logs and gaps(m) == 0


def test_offsets_retention_deleted_before_capture_saw_them_are_a_counted_gap() -> None:
    m = Metrics()
    with capture_logs() as logs:
        assert resume_position(KEY, committed=-1001, stored=10, first=50, metrics=m) == 50
    assert [(e["log_level"], e["from_offset"], e["to_offset"]) for e in logs] == [
        ("error", 10, 50)]
    assert gaps(m) == 1
