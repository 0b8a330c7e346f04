"""What assignment reads before a partition can start, and where it starts.

Kafka's side, its first offset and end: read for every assigned partition in one request on
the admin client (``end_looks.bounds``). Asked through the consumer, each waits behind the fetch
long-poll of its leader (500 ms when the consumer already reads idle partitions there), so a
rebalance that moved 20 partitions to a busy member held it 10 s; the consumer is still asked,
one partition at a time, when the admin client cannot answer.

The store's side, each partition's resume position and watermark (``Repository.resume_state``,
a GET and a LIST): read ``ASSIGN_READERS`` partitions at a time, since one after another the
round trips of a remote bucket held the rebalance callback for seconds.

Where a partition starts (``resume_position``): max(committed offset, the store's position),
the store being the truth, and never before Kafka's first offset (a gap retention made).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import structlog
from confluent_kafka import Consumer, TopicPartition

from daemon.capture.end_looks import Ask, bounds
from daemon.changelog.repository import Repository
from daemon.changelog.watermark import Watermark
from daemon.metrics import Metrics

log = structlog.get_logger("vecwal.capture")

TP = tuple[str, int]
Retry = Callable[[Callable[[], Any], str], Any]

ASSIGN_READERS = 16
"""Partitions whose state in the store assignment reads at once."""


def partition_ends(ask: Ask, consumer: Consumer, partitions: list[TopicPartition]
                   ) -> dict[TP, tuple[int, int]]:
    """Each partition's first offset and read-committed end, asked for all at once."""
    keys = [(tp.topic, tp.partition) for tp in partitions]
    try:
        return bounds(ask, keys, timeout=30)
    except Exception as exc:
        log.warning("partition ends not read in one request; asking the consumer for each",
                    partitions=len(keys), error=str(exc) or type(exc).__name__)
    return {key: consumer.get_watermark_offsets(TopicPartition(*key), timeout=30, cached=False)
            for key in keys}


def stored_states(repo: Repository, keys: list[TP], retry: Retry
                  ) -> dict[TP, tuple[int | None, Watermark | None]]:
    """Each partition's resume position and watermark in the store (read through ``retry``,
    which waits for a store that does not answer)."""
    def read(key: TP) -> tuple[int | None, Watermark | None]:
        state: tuple[int | None, Watermark | None] = retry(
            partial(repo.resume_state, *key), f"resume position of {key}")
        return state

    if len(keys) <= 1:
        return {key: read(key) for key in keys}
    with ThreadPoolExecutor(min(ASSIGN_READERS, len(keys)),
                            thread_name_prefix="vecwal-assign") as readers:
        return dict(zip(keys, readers.map(read, keys), strict=True))


def resume_position(key: TP, committed: int, stored: int | None, first: int,
                    metrics: Metrics) -> int:
    """Where capture of ``key`` goes on: ``committed`` is Kafka's committed offset (negative
    for none), ``stored`` the store's position, ``first`` Kafka's first offset."""
    topic, partition = key
    start = max(committed, stored or 0, 0)
    if stored is not None and committed > stored:
        log.warning("committed offset is ahead of the store; resuming from Kafka's",
                    topic=topic, partition=partition, committed=committed, store=stored,
                    hint="was storage.url changed for this group_id?")
    if start < first:
        if stored is not None:
            metrics.errors.labels("retention").inc()
            log.error("kafka retention deleted offsets before capture saw them", topic=topic,
                      partition=partition, from_offset=start, to_offset=first,
                      hint="raise the topic's retention; these offsets are a gap")
        start = first
    return start
