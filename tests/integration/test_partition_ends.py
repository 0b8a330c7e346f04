"""Capture asks the real broker for partition ends without stopping its loop.

Idle partitions: a partition with nothing new proves valid-through by a look at its end, once every
``segment_max_age_s``. Asked through the consumer, each look waited behind the consumer's own
fetch long-poll of the leader (``fetch.wait.max.ms``, 500 ms on an idle broker) and the loop
stopped for that long per idle partition: with several idle partitions, seconds without
consuming or acting on finished uploads. ``EndLooks`` asks on an admin client's connections and
takes the answers at a later step.

Assignment: a member that is given partitions while it already reads others asked the end of
each through the consumer, 500 ms apiece behind its fetches; it now asks for all of them in one
request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from daemon.capture.assignment import partition_ends
from daemon.capture.loop import CaptureLoop
from daemon.config import load_config
from daemon.workload import Workload, produce
from tests.integration.harness import Target

pytestmark = pytest.mark.integration


def test_looks_at_idle_partitions_do_not_hold_the_loop(file_target: Target, tmp_path: Path,
                                                       group_id: str) -> None:
    w = Workload(seed=5, collections={"docs": 8})
    produced = produce(file_target.bootstrap, file_target.topic, [*w.preamble(), *w.events(30)])
    cfg = load_config(file_target.write_config(tmp_path / "vecwal.toml", group_id,
                                               segment_max_age_s=0.3, clock_margin_ms=100,
                                               dimensions={"docs": 8}))
    loop = CaptureLoop(cfg, file_target.repository())
    steps: list[float] = []
    step = loop._step

    def timed(now: float) -> None:
        began = time.monotonic()
        step(now)
        steps.append(time.monotonic() - began)

    loop._step = timed  # type: ignore[method-assign]
    threading.Timer(5.0, loop.request_stop).start()
    started_ms = int(time.time() * 1000)
    assert loop.run() == 0

    repo = file_target.repository()
    for p in {pr.partition for pr in produced}:
        wm = repo.read_watermark(file_target.topic, p)
        assert wm is not None and wm.valid_through_ms is not None
        assert wm.valid_through_ms >= started_ms + 2_000, \
            f"partition {p}: idle for 5 s, valid through only {wm.valid_through_ms - started_ms} " \
            "ms after the start: its end was not looked at"
    slowest = max(steps)
    assert slowest < 0.25, f"a step of the loop took {slowest:.2f} s (idle looks waited on)"


def test_a_busy_member_reads_the_ends_of_partitions_it_is_given_at_once(
        kafka_bootstrap: str, kafka_topic: Callable[..., str], tmp_path: Path,
        group_id: str) -> None:
    topic = kafka_topic(partitions=8)
    w = Workload(seed=6, collections={"docs": 8})
    produced = produce(kafka_bootstrap, topic, [*w.preamble(), *w.events(80)])
    cfg = load_config(Target(kafka_bootstrap, topic, f"file://{tmp_path / 'repo'}").write_config(
        tmp_path / "vecwal.toml", group_id, dimensions={"docs": 8}))
    loop = CaptureLoop(cfg, Target(kafka_bootstrap, topic, f"file://{tmp_path / 'repo'}")
                       .repository())
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
        began = time.monotonic()
        while time.monotonic() - began < 2.0:  # read them to their ends: fetches now wait
            consumer.consume(1000, timeout=0.1)
        given = [TopicPartition(topic, p) for p in range(4, 8)]
        began = time.monotonic()
        ends = partition_ends(loop._ask_ends, consumer, given)
        took = time.monotonic() - began
    finally:
        consumer.close()
    want = {(topic, p): (0, 1 + max(pr.offset for pr in produced if pr.partition == p))
            for p in range(4, 8)}
    assert ends == want
    assert took < 0.4, f"the ends of 4 partitions took {took:.2f} s (one fetch wait each)"
