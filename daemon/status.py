"""``vecwal status``: per partition, what is durable and how far behind it is.

The facts come from the store (watermarks) and, when it answers, from Kafka (high watermarks,
committed offsets); a broker that does not answer leaves lag unknown instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from daemon.changelog.repository import Repository
from daemon.config import Config
from daemon.errors import VecwalError

KafkaOffsets = dict[tuple[str, int], tuple[int | None, int | None]]
"""(topic, partition) -> (high watermark, committed offset)."""


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    captured_offset: int | None
    high_watermark: int | None
    committed_offset: int | None
    lag: int | None
    valid_through: str | None
    valid_through_ms: int | None
    rpo_seconds: float | None
    writer: str | None
    updated_at: str | None
    last_error: dict[str, Any] | None
    future_stamped: int = 0
    """Events stamped ahead of the time capture saw them (by more than the clock margin)."""
    last_future_stamped: dict[str, int] | None = None


@dataclass(frozen=True)
class StatusReport:
    repository: str
    group_id: str
    kafka_error: str | None
    valid_through: str | None
    rpo_seconds: float | None
    partitions: list[PartitionStatus] = field(default_factory=list)
    last_drill: dict[str, Any] | None = None
    """The newest record under drills/ (``daemon/drill.py``), or None."""
    last_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """kind -> the newest job record of that kind (``daemon/jobs/``); kinds with none absent."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def collect_status(config: Config, repo: Repository,
                   kafka_offsets: Callable[[], KafkaOffsets] | None,
                   now_ms: int | None = None) -> StatusReport:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    offsets: KafkaOffsets = {}
    kafka_error = None
    if kafka_offsets is not None:
        try:
            offsets = kafka_offsets()
        except VecwalError as exc:  # status must work while Kafka is down: the store's part
            kafka_error = f"{exc.message} (fix: {exc.hint})" if exc.hint else exc.message
        except Exception as exc:
            kafka_error = str(exc)
    marks = {(w.topic, w.partition): w for t in config.kafka.topics for w in repo.list_watermarks(t)}
    rows = []
    for key in sorted(set(marks) | set(offsets)):
        wm = marks.get(key)
        high, committed = offsets.get(key, (None, None))
        captured = wm.captured_through if wm else None
        lag = None if high is None else max(0, high - (captured or 0))
        valid = wm.valid_through_ms if wm else None
        rows.append(PartitionStatus(
            topic=key[0], partition=key[1], captured_offset=captured, high_watermark=high,
            committed_offset=committed, lag=lag, valid_through=iso_ms(valid),
            valid_through_ms=valid,
            rpo_seconds=None if valid is None else round(max(0, now_ms - valid) / 1000, 3),
            writer=wm.writer if wm else None, updated_at=iso_ms(wm.updated_at_ms) if wm else None,
            last_error=wm.last_error if wm else None,
            future_stamped=wm.future_stamped if wm else 0,
            last_future_stamped=wm.last_future_stamped if wm else None))
    valids = [r.valid_through_ms for r in rows]
    overall = None if not rows or any(v is None for v in valids) else min(
        v for v in valids if v is not None)
    from daemon.drill import latest_drill
    from daemon.jobs.record import latest_jobs

    drill = latest_drill(repo)
    jobs = {kind: rec.to_dict() for kind, rec in latest_jobs(repo.store).items()}
    return StatusReport(
        repository=repo.store.url, group_id=config.kafka.group_id, kafka_error=kafka_error,
        valid_through=iso_ms(overall),
        rpo_seconds=None if overall is None else round(max(0, now_ms - overall) / 1000, 3),
        partitions=rows, last_drill=None if drill is None else drill.to_dict(), last_jobs=jobs)


def kafka_offsets_reader(config: Config, timeout: float = 10.0) -> Callable[[], KafkaOffsets]:
    """A callable asking Kafka for high watermarks and the group's committed offsets."""

    def read() -> KafkaOffsets:
        from confluent_kafka import Consumer

        from daemon.capture.kafka import consumer_settings, high_watermarks, partitions_of
        from daemon.kafka_client import check_brokers

        # a wrong password, CA or security.protocol: named now, not a 10 s metadata timeout
        check_brokers(config.kafka.bootstrap_servers, config.kafka.client, timeout=timeout)
        from daemon.kafka_logging import with_logger

        consumer = Consumer(with_logger(consumer_settings(config), "status"))  # close() serves
        try:
            parts = partitions_of(consumer, config.kafka.topics, timeout)
            marks = high_watermarks(consumer, parts, timeout)
            committed = {(tp.topic, tp.partition): tp.offset
                         for tp in consumer.committed(parts, timeout=timeout)}
            return {k: (hi, _valid_offset(committed.get(k))) for k, (_, hi) in marks.items()}
        finally:
            consumer.close()

    return read


def _valid_offset(offset: int | None) -> int | None:
    """Kafka's committed offset, or None when the group has none (negative sentinels)."""
    return offset if offset is not None and offset >= 0 else None
