"""FlowControl: which partitions capture consumes, and why not; and ``retry_store``, how
assignment waits for the store.

Two reasons pause consumption. The buffer: above ``capture.max_buffer_bytes`` of events held
in memory every partition is paused, and resumed below half of it. A source that does not
answer (the schema registry), or, with per-tenant keys, a new tenant's key that cannot be
made (the key service or the store does not answer): the partition is *held*, that is
sought back to the event it could not take and paused, then resumed after a capped
exponential backoff. The held event and every later one of that partition are read again;
none is quarantined or skipped, and nothing past them is committed, so a restart loses
nothing either. Other partitions go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import Consumer, TopicPartition

from daemon.errors import IntegrityError, StoreError
from daemon.metrics import Metrics

log = structlog.get_logger("vecwal.capture")

TP = tuple[str, int]


@dataclass
class Hold:
    offset: int
    """The event the source could not decode: the next one of its partition to take."""
    attempts: int
    retry_at: float
    resumed: bool = False


class FlowControl:
    def __init__(self, max_buffer_bytes: int, max_backoff_s: float, metrics: Metrics) -> None:
        self.max_buffer_bytes = max_buffer_bytes
        self.max_backoff_s = max_backoff_s
        self.metrics = metrics
        self.paused = False
        """Every partition is paused for the buffer."""
        self.held: dict[TP, Hold] = {}

    def backpressure(self, consumer: Consumer, buffered: int, partitions: list[TP]) -> None:
        """Pause every partition above the buffer bound; resume (but the held) below half."""
        self.metrics.buffered_bytes.set(buffered)
        if not self.paused and buffered >= self.max_buffer_bytes:
            consumer.pause([TopicPartition(t, p) for (t, p) in partitions])
            self.paused = True
            self.metrics.paused.set(1)
            log.warning("buffer full, consumption paused", buffered_bytes=buffered,
                        max_buffer_bytes=self.max_buffer_bytes)
        elif self.paused and buffered < self.max_buffer_bytes // 2:
            consumer.resume([TopicPartition(t, p) for (t, p) in partitions
                             if (t, p) not in self.held or self.held[(t, p)].resumed])
            self.paused = False
            self.metrics.paused.set(0)
            log.info("consumption resumed", buffered_bytes=buffered)

    def hold(self, consumer: Consumer, key: TP, offset: int, error: Exception) -> None:
        """Read ``key`` again from ``offset`` once its source answers."""
        previous = self.held.get(key)
        attempts = previous.attempts + 1 if previous else 1
        backoff = min(self.max_backoff_s, 0.25 * 2 ** min(attempts - 1, 10))
        self.held[key] = Hold(offset, attempts, time.monotonic() + backoff)
        tp = TopicPartition(key[0], key[1], offset)
        consumer.pause([tp])
        consumer.seek(tp)
        self.metrics.errors.labels("source").inc()
        self.metrics.held_partitions.set(len(self.held))
        log.warning("source not answering, partition held", topic=key[0], partition=key[1],
                    offset=offset, attempt=attempts, retry_in_s=round(backoff, 2),
                    error=str(error))

    def is_held(self, key: TP) -> bool:
        return key in self.held

    def admits(self, key: TP, offset: int) -> bool:
        """Whether a message may be taken: any, unless its partition is held; then only the
        held offset, once resumed (a message fetched before the seek is left: it comes again)."""
        hold = self.held.get(key)
        return hold is None or (hold.resumed and offset == hold.offset)

    def release_due(self, consumer: Consumer, now: float) -> None:
        """Resume held partitions whose backoff is over (unless the buffer pauses all)."""
        if self.paused:
            return
        for key, hold in self.held.items():
            if not hold.resumed and hold.retry_at <= now:
                consumer.resume([TopicPartition(key[0], key[1])])
                hold.resumed = True
                log.info("retrying a held partition", topic=key[0], partition=key[1],
                         offset=hold.offset)

    def decoded(self, key: TP) -> None:
        """A message of ``key`` decoded: its source answers again."""
        if self.held.pop(key, None) is not None:
            self.metrics.held_partitions.set(len(self.held))
            log.info("source answering again", topic=key[0], partition=key[1])

    def forget(self, keys: list[TP]) -> None:
        """Partitions revoked or lost."""
        for key in keys:
            self.held.pop(key, None)
        self.metrics.held_partitions.set(len(self.held))


def retry_store(fn: Callable[[], Any], what: str, metrics: Metrics, patience_s: float,
                max_backoff_s: float) -> Any:
    """``fn()``, retried with capped backoff while the store does not answer (for
    ``patience_s``): assignment waits for the store, the source of truth, rather than guess."""
    delay = 0.25
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return fn()
        except IntegrityError:
            raise
        except (StoreError, OSError) as exc:
            metrics.errors.labels("store").inc()
            if time.monotonic() + delay > deadline:
                raise
            log.warning("store not answering, retrying", what=what, error=str(exc),
                        retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
