"""Looks at partition ends that do not stop the capture loop.

An idle partition proves time passing by a look at its end ("Kafka's end was offset E at wall
time t": ``PartitionState.observe_end``). Asked through the consumer
(``get_watermark_offsets(cached=False)``), a look waits behind the consumer's own fetch of that
partition's leader, which an idle broker holds for ``fetch.wait.max.ms`` (500 ms): the loop
stopped consuming for half a second per idle partition, once every ``segment_max_age_s``.

``EndLooks`` asks for many partitions at once (one ListOffsets per leader, read-committed ends,
the same the consumer sees) on an admin client's own connections and does not wait: the answers
are taken at the loop's next step. ``seen_ms`` is taken before the question is sent, so an
answer never vouches for more than the broker said.

Assignment needs each new partition's first offset and end before it can start (``bounds``):
asked through the consumer one by one, a member already reading other partitions waited
500 ms per partition it was given, inside the rebalance callback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import structlog
from confluent_kafka import IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from daemon.kafka_client import admin_settings
from daemon.kafka_logging import serve

log = structlog.get_logger("vecwal.capture")

TP = tuple[str, int]
Ask = Callable[[list[TP], bool], Mapping[TP, "Future[int]"]]
"""Send one question for the ends of these partitions (their first offsets when the flag is
set, else their read-committed ends); a future per partition."""

TIMEOUT_S = 5.0
"""An unanswered look is dropped after this; the partition is asked again at a later tick."""


def wall_ms() -> int:
    return int(time.time() * 1000)


class EndLooks:
    def __init__(self, ask: Ask) -> None:
        self._ask = ask
        self._out: dict[TP, tuple[Future[int], int]] = {}  # key -> (answer, seen_ms)

    @property
    def waiting(self) -> bool:
        return bool(self._out)

    def ask(self, keys: list[TP]) -> None:
        """Look at the ends of ``keys`` (a partition already being looked at is not asked
        again)."""
        keys = [k for k in keys if k not in self._out]
        if not keys:
            return
        seen_ms = wall_ms()  # before the question: the answer is the end at or after it
        try:
            futures = self._ask(keys, False)
        except Exception as exc:  # a client that cannot send now: look again at the next tick
            log.debug("partition ends not asked", partitions=len(keys), error=str(exc))
            return
        for key, fut in futures.items():
            self._out[key] = (fut, seen_ms)

    def answers(self) -> list[tuple[TP, int, int]]:
        """(partition, end offset, seen_ms) of every look answered since the last call. A
        failed or overdue look is dropped (logged at debug): the next tick asks again."""
        if not self._out:
            return []
        now = wall_ms()
        got = []
        for key, (fut, seen_ms) in list(self._out.items()):
            if not fut.done():
                if now - seen_ms > TIMEOUT_S * 1000:
                    del self._out[key]
                    log.debug("partition end not known", topic=key[0], partition=key[1],
                              error="no answer")
                continue
            del self._out[key]
            try:
                got.append((key, fut.result(), seen_ms))
            except Exception as exc:  # a slow or absent broker: look again at the next tick
                log.debug("partition end not known", topic=key[0], partition=key[1],
                          error=str(exc))
        return got


def bounds(ask: Ask, keys: list[TP], timeout: float) -> dict[TP, tuple[int, int]]:
    """The first offset and the read-committed end of every partition of ``keys``, asked at
    once (two questions in flight together) and waited for: what assignment needs. Raises
    what the client raised, or TimeoutError."""
    first, end = ask(keys, True), ask(keys, False)
    deadline = time.monotonic() + timeout
    out = {}
    for key in keys:
        lo = first[key].result(timeout=max(0.0, deadline - time.monotonic()))
        out[key] = (lo, end[key].result(timeout=max(0.0, deadline - time.monotonic())))
    return out


def admin_asker(bootstrap: str, client: Mapping[str, str],
                logger: logging.Logger) -> tuple[Ask, Callable[[], None]]:
    """An ``Ask`` through an admin client of its own (made at the first question), and what
    hands its queued log lines to ``logger``: the consumer's, so that a broker outage both
    clients see is one line per repeat window, not two."""
    admin: list[AdminClient] = []

    def ask(keys: list[TP], earliest: bool) -> Mapping[TP, Future[int]]:
        if not admin:
            settings = admin_settings(bootstrap, dict(client))
            settings["logger"] = logger
            admin.append(AdminClient(settings))
        spec = (OffsetSpec.earliest() if earliest  # type: ignore[no-untyped-call]
                else OffsetSpec.latest())  # type: ignore[no-untyped-call]
        asked = admin[0].list_offsets(
            {TopicPartition(t, p): spec for t, p in keys},
            isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=TIMEOUT_S)
        return {(tp.topic, tp.partition): _offset_of(fut) for tp, fut in asked.items()}

    def served() -> None:
        if admin:
            serve(admin[0])

    return ask, served


def consumer_asker(consumer: Callable[[], Any]) -> tuple[Ask, Callable[[], None]]:
    """An ``Ask`` answered at once through ``consumer()``'s ``get_watermark_offsets`` (the
    component tests' fake consumers, which have no broker to wait for), and its nothing to
    serve."""
    def ask(keys: list[TP], earliest: bool) -> Mapping[TP, Future[int]]:
        out: dict[TP, Future[int]] = {}
        for topic, partition in keys:
            fut: Future[int] = Future()
            try:
                lo, hi = consumer().get_watermark_offsets(TopicPartition(topic, partition),
                                                          timeout=1.0, cached=False)
                fut.set_result(lo if earliest else hi)
            except Exception as exc:
                fut.set_exception(exc)
            out[(topic, partition)] = fut
        return out
    return ask, lambda: None


def _offset_of(fut: Future[Any]) -> Future[int]:
    """The end offset of a ListOffsetsResultInfo future, as a future of its own."""
    out: Future[int] = Future()

    def done(f: Future[Any]) -> None:
        try:
            out.set_result(int(f.result().offset))
        except Exception as exc:
            out.set_exception(exc)

    fut.add_done_callback(done)
    return out
