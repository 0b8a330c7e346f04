"""Small fakes for testing the capture commit protocol without a broker: a consumer that
replays fixed partitions, and object stores that fail on purpose."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from daemon.errors import StoreError, StoreUnavailable
from daemon.objectstore import ObjectInfo, ObjectStore


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _ts: int = 0
    _eof: bool = False
    _headers: list[tuple[str, bytes | None]] | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def timestamp(self) -> tuple[int, int]:
        return (2, self._ts)

    def headers(self) -> Any:
        return self._headers

    def set_headers(self, headers: Any) -> None:
        self._headers = headers

    def error(self) -> Any:
        if not self._eof:
            return None
        return SimpleNamespace(code=lambda: KafkaError._PARTITION_EOF, fatal=lambda: False)


@dataclass
class FakeConsumer:
    """Replays ``log[(topic, partition)]`` (values at offsets 0..n-1) to one group member."""

    log: dict[tuple[str, int], list[bytes | None]]
    committed_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    on_commit_check: Callable[[list[TopicPartition]], None] | None = None
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    paused: set[tuple[str, int]] = field(default_factory=set)
    commits: list[tuple[str, int, int]] = field(default_factory=list)
    pause_calls: int = 0
    seeks: list[tuple[str, int, int]] = field(default_factory=list)
    _callbacks: dict[str, Any] = field(default_factory=dict)
    _assigned: bool = False
    _eof_sent: set[tuple[str, int]] = field(default_factory=set)
    closed: bool = False
    stamp: int | None = None
    """Every message's timestamp (one producer batch, one LogAppendTime); else 1000 + offset."""
    headers_at: Callable[[int], list[tuple[str, bytes | None]] | None] | None = None
    """The Kafka headers of the message at an offset (none without it)."""
    blocks: bool = False
    """Idle, block for the whole timeout as a real consumer does (else 5 ms at most)."""
    idle_waits: list[tuple[float, bool]] = field(default_factory=list)
    """Each empty consume(): its timeout, and whether something consumed was uncommitted."""

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def list_topics(self, topic: str, timeout: float = 0) -> Any:
        parts = {p: None for (t, p) in self.log if t == topic}
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions=parts)})

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0,
                              cached: bool = False) -> tuple[int, int]:
        return 0, len(self.log[(tp.topic, tp.partition)])

    def committed(self, partitions: list[TopicPartition], timeout: float = 0
                  ) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition,
                               self.committed_offsets.get((tp.topic, tp.partition), -1001))
                for tp in partitions]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions[(tp.topic, tp.partition)] = tp.offset

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.pause_calls += 1
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))
        self.positions[(tp.topic, tp.partition)] = tp.offset
        self._eof_sent.discard((tp.topic, tp.partition))  # the end is reached again

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if not self._assigned:
            self._assigned = True
            self._callbacks["assign"](self, [TopicPartition(t, p) for (t, p) in self.log])
        out: list[FakeMessage] = []
        for key, pos in list(self.positions.items()):
            if key in self.paused:
                continue
            values = self.log[key]
            while pos < len(values) and len(out) < num_messages:
                out.append(FakeMessage(key[0], key[1], pos, values[pos], f"k{pos}".encode(),
                                       1_000 + pos if self.stamp is None else self.stamp,
                                       _headers=self.headers_at(pos) if self.headers_at else None))
                pos += 1
            self.positions[key] = pos
            if pos == len(values) and key not in self._eof_sent:
                self._eof_sent.add(key)
                out.append(FakeMessage(key[0], key[1], pos, None, _eof=True))
        if not out and timeout > 0:
            # A real consumer blocks up to ``timeout`` when idle; without this the loop spins
            # and starves its own upload threads of the GIL (a 5 ms wait keeps tests quick).
            self.idle_waits.append((timeout, self._uncommitted()))
            time.sleep(timeout if self.blocks else min(timeout, 0.005))
        return out

    def _uncommitted(self) -> bool:
        """Something consumed is not committed yet."""
        return any(self.committed_offsets.get(key, -1) < pos
                   for key, pos in self.positions.items())

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        if self.on_commit_check is not None:
            self.on_commit_check(offsets)
        for tp in offsets:
            self.commits.append((tp.topic, tp.partition, tp.offset))
            self.committed_offsets[(tp.topic, tp.partition)] = tp.offset

    def close(self) -> None:
        self.closed = True


class FlakyStore:
    """Wraps a real store; while ``down`` every call raises StoreUnavailable."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.down = False
        self.failed_calls = 0

    @property
    def url(self) -> str:
        return self.inner.url

    def _check(self) -> None:
        if self.down:
            self.failed_calls += 1
            raise StoreUnavailable("injected outage", "wait")

    def put(self, key: str, data: bytes, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        self._check()
        self.inner.put(key, data, create_only=create_only, sha256=sha256)

    def get(self, key: str) -> bytes:
        self._check()
        return self.inner.get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self._check()
        return self.inner.get_range(key, start, length)

    def head(self, key: str) -> ObjectInfo:
        self._check()
        return self.inner.head(key)

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        self._check()
        return self.inner.list(prefix, start_after)

    def delete(self, key: str) -> None:
        self._check()
        self.inner.delete(key)

    def delete_many(self, keys: Sequence[str]) -> dict[str, StoreError]:
        self._check()
        return self.inner.delete_many(keys)

    def close(self) -> None:
        self.inner.close()


def run_through_outage(loop: Any, fake: FakeConsumer, outage_seen: Callable[[], bool],
                       end_outage: Callable[[], None]) -> tuple[bool, list[tuple[str, int, int]]]:
    """``loop.run(until_caught_up=True)`` (which must return 0) while a thread waits until
    ``outage_seen()`` (30 s at most), keeps the outage on 0.3 s more, notes the commits made
    so far, then ``end_outage()``; always, so a failed expectation reports instead of
    hanging. Returns whether the outage was seen in time, and those commits."""
    seen: dict[str, Any] = {"in_time": False, "commits": []}

    def watch() -> None:
        try:
            deadline = time.monotonic() + 30.0
            while not outage_seen() and time.monotonic() < deadline:
                time.sleep(0.005)
            seen["in_time"] = outage_seen()
            time.sleep(0.3)  # the outage lasts a while after it is noticed: retries fail too
            seen["commits"] = list(fake.commits)
        finally:
            end_outage()

    t = threading.Thread(target=watch)
    t.start()
    try:
        assert loop.run(until_caught_up=True) == 0
    finally:
        t.join()
    return seen["in_time"], seen["commits"]
