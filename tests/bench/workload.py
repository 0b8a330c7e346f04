"""Fast producers of large benchmark streams: a pool of pre-encoded 768-dim events, cycled
with fresh ids, so producing is not the bottleneck being measured."""

from __future__ import annotations

import time

import orjson
from confluent_kafka import Producer

from daemon.workload import Workload, to_avro


def event_pool(fmt: str, size: int = 500, dim: int = 768, seed: int = 11) -> list[bytes]:
    w = Workload(seed=seed, collections={"docs": dim}, tenants=["acme", "globex"])
    pool = []
    for i in range(size):
        ev = w.upsert("docs", w.tenants[i % 2], f"doc-{i}#0")
        pool.append(to_avro(ev) if fmt == "avro" else orjson.dumps(ev))
    return pool


def produce_n(bootstrap: str, topic: str, pool: list[bytes], n: int,
              rate_per_s: float | None = None, on_delivery=None,  # type: ignore[no-untyped-def]
              keys: list[bytes] | None = None,
              headers: list[tuple[str, bytes | None]] | None = None) -> float:
    """Produce n events; returns seconds taken. Keys are ``doc-<i>``, or ``keys`` cycled
    beside ``pool`` (the i-th value with the i-th key); ``headers``: Kafka headers of each."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                  "compression.type": "none", "queue.buffering.max.kbytes": 262144,
                  "message.max.bytes": 10_000_000})
    began = time.monotonic()
    for i in range(n):
        while True:
            try:
                key = keys[i % len(keys)] if keys else f"doc-{i}".encode()
                p.produce(topic, pool[i % len(pool)], key, on_delivery=on_delivery,
                          headers=headers)
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
        if rate_per_s:
            ahead = (i + 1) / rate_per_s - (time.monotonic() - began)
            if ahead > 0.002:
                time.sleep(ahead)
    assert p.flush(120) == 0
    return time.monotonic() - began
