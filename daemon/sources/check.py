"""What a topic's messages map to, without capturing them (``vecwal check-mapping``).

:func:`read_sample` reads a few messages of one configured topic with a consumer of its own:
a throwaway group id, no commit, partitions assigned explicitly (the capture group's offsets
are never touched). :func:`check_sample` runs each message through the topic's
:class:`~daemon.sources.Source` and the ingestion contract exactly as capture would, and
says whether it is mapped (the change-log record), rejected (the reason and detail capture
would quarantine it with) or skipped (a tombstone). Nothing is written anywhere.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from daemon.config import Config
from daemon.errors import BadEvent, ConfigError, VecwalError
from daemon.events import EventParser
from daemon.sources import DebeziumSource, MappedSource, Source, sources_for
from daemon.sources.registry import RegistryUnavailable

DOCUMENT_CHARS = 80
"""A document is shown up to this many characters."""
VECTOR_HEAD = 4
"""A vector is shown by its dimension and its first few values."""

ConsumerFactory = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Sample:
    topic: str
    from_end: bool
    ranges: dict[int, tuple[int, int]]
    """partition -> (low, high) watermarks when the sample was read."""
    messages: list[Message]
    timed_out: bool = False
    """The read stopped at its deadline before reaching every planned offset."""


@dataclass(frozen=True)
class Checked:
    """One message's outcome: ``mapped`` (with ``record``), ``rejected`` (with ``reason``
    and ``detail``) or ``skipped`` (a tombstone: no change)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    outcome: str
    record: dict[str, Any] | None = None
    reason: str | None = None
    detail: str | None = None
    value_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "message", "topic": self.topic,
                               "partition": self.partition, "offset": self.offset,
                               "timestamp": self.timestamp, "value_bytes": self.value_bytes,
                               "outcome": self.outcome}
        if self.record is not None:
            out["record"] = self.record
        if self.reason is not None:
            out["reason"], out["detail"] = self.reason, self.detail
        return out


@dataclass
class Summary:
    read: int = 0
    mapped: int = 0
    skipped: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def add(self, c: Checked) -> None:
        self.read += 1
        if c.outcome == "mapped":
            self.mapped += 1
        elif c.outcome == "skipped":
            self.skipped += 1
        else:
            assert c.reason is not None
            self.rejected[c.reason] = self.rejected.get(c.reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "mapped": self.mapped, "rejected": self.rejected_total,
                "rejected_by_reason": dict(sorted(self.rejected.items())),
                "skipped": self.skipped}


def topic_source(config: Config, topic: str) -> Source:
    """The Source capture would use for ``topic``; ConfigError when it is not configured."""
    if topic not in config.kafka.topics:
        listed = ", ".join(repr(t) for t in config.kafka.topics) or "none"
        raise ConfigError(f"{config.source}: topic {topic!r} is not in [kafka] topics "
                          f"(configured: {listed})",
                          f"add {topic!r} to [kafka] topics (with its format and mapping), "
                          "or name a configured topic")
    return sources_for(config.kafka)[topic]


def describe_source(source: Source) -> dict[str, Any]:
    """How a topic's messages are read: its format and, for a mapping, each expression."""
    out: dict[str, Any] = {"format": source.name}
    if isinstance(source, MappedSource):
        out["mapping"] = source.mapping.describe()
        if source.mapping.op_map:
            out["op_map"] = dict(source.mapping.op_map)
    elif isinstance(source, DebeziumSource):
        out["debezium_tables"] = {
            name: {k: v for k, v in vars(t).items() if v not in (None, ())}
            for name, t in source.decoder.tables.items()}
    return out


def read_sample(config: Config, topic: str, n: int, *, from_end: bool = False,
                consumer_factory: ConsumerFactory | None = None,
                timeout: float = 30.0) -> Sample:
    """The first ``n`` messages of ``topic`` (taken in turn from each partition), or with
    ``from_end`` the last ``n`` of each partition. VecwalError when the topic does not
    exist or holds no message."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from daemon.capture.kafka import consumer_settings, high_watermarks, partitions_of
    from daemon.kafka_logging import with_logger

    if consumer_factory is None:  # a wrong password, CA or security.protocol: named at once
        from daemon.kafka_client import check_brokers

        check_brokers(config.kafka.bootstrap_servers, config.kafka.client)
        if config.kafka.schema_registry_url:
            from daemon.sources.registry_check import check_registry

            check_registry(config.kafka.schema_registry_url, config.kafka.schema_registry)
    settings = consumer_settings(config)
    settings.update({  # never the capture group, never a commit
        "group.id": f"vecwal-check-mapping-{uuid.uuid4().hex[:12]}",
        "client.id": f"vecwal-check-mapping-{socket.gethostname()}-{os.getpid()}",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    consumer = (consumer_factory or Consumer)(with_logger(settings, "check-mapping"))
    try:
        parts = partitions_of(consumer, [topic], timeout)
        marks = high_watermarks(consumer, parts, timeout)
        ranges = {p: marks[(t, p)] for t, p in ((tp.topic, tp.partition) for tp in parts)}
        plan = {p: ((max(lo, hi - n) if from_end else lo), hi) for p, (lo, hi) in ranges.items()
                if hi > lo}
        if not plan:
            raise VecwalError(f"topic {topic!r} has no messages ({len(ranges)} partitions, all "
                              "empty, or emptied by retention)",
                              "produce some events to it first, or name a topic that has some")
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in plan.items()])
        got: dict[int, list[Message]] = {p: [] for p in plan}
        open_parts = set(plan)
        deadline = time.monotonic() + timeout
        while open_parts and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                p = msg.partition()
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(p)
                    elif err.fatal():
                        raise VecwalError(f"fatal Kafka error reading {topic!r}: {err}",
                                          "check the broker and the [kafka] settings")
                    continue
                if p not in open_parts:
                    continue
                offset = msg.offset()
                assert offset is not None  # a message (not an error) has its offset
                if offset < plan[p][1]:
                    got[p].append(Message(p, offset, msg.timestamp()[1], msg.key(), msg.value()))
                if offset + 1 >= plan[p][1] or (not from_end and len(got[p]) >= n):
                    open_parts.discard(p)
                    consumer.pause([TopicPartition(topic, p)])
        if not any(got.values()):
            raise VecwalError(f"read no message of topic {topic!r} in {timeout:g}s although "
                              f"its partitions hold offsets {_ranges_text(plan)}",
                              "check that the broker answers fetches (and the [kafka] client "
                              "settings, e.g. an ACL allowing Read on the topic)")
    finally:
        consumer.close()
    if from_end:
        messages = [m for p in sorted(got) for m in got[p]]
    else:  # round robin: each partition shows, in offset order within it
        columns = [got[p] for p in sorted(got)]
        messages = [col[i] for i in range(n) for col in columns if i < len(col)][:n]
    return Sample(topic, from_end, ranges, messages, timed_out=bool(open_parts))


def _ranges_text(plan: dict[int, tuple[int, int]]) -> str:
    return ", ".join(f"{p}: {lo}-{hi - 1}" for p, (lo, hi) in sorted(plan.items()))


def check_sample(config: Config, topic: str, messages: list[Message],
                 source: Source | None = None) -> Iterator[Checked]:
    """Each message through ``topic``'s Source and the contract, as capture parses it.
    RegistryUnavailable (with the message's coordinates) when the registry does not
    answer: capture would hold the partition there, and so no outcome can be told."""
    src = source if source is not None else topic_source(config, topic)
    parser = EventParser(config.capture.max_event_bytes, config.capture.dimensions)
    for m in messages:
        size = len(m.value) if m.value else 0
        try:
            record = parser.parse_from(src, m.value, key=m.key, offset=m.offset,
                                       timestamp=m.timestamp)
        except RegistryUnavailable as exc:
            raise RegistryUnavailable(
                f"at {topic}/{m.partition} offset {m.offset}: {exc.message}",
                "check [kafka] schema_registry_url and that the registry runs (capture would "
                "hold this partition here and retry: nothing is quarantined for it)") from None
        except BadEvent as bad:
            yield Checked(topic, m.partition, m.offset, m.timestamp, "rejected",
                          reason=bad.reason, detail=bad.detail, value_bytes=size)
            continue
        if record is None:
            yield Checked(topic, m.partition, m.offset, m.timestamp, "skipped",
                          reason=None, detail="tombstone", value_bytes=size)
        else:
            yield Checked(topic, m.partition, m.offset, m.timestamp, "mapped",
                          record=record_view(record), value_bytes=size)


def record_view(rec: dict[str, Any]) -> dict[str, Any]:
    """A change-log record as people and tools read it: JSON texts as objects, the vector
    as its dimension and first values, the document shortened."""
    vector = rec.get("vector")
    doc = rec.get("document")
    out: dict[str, Any] = {
        "op": rec["op"], "collection": rec["collection"], "tenant": rec["tenant"],
        "id": rec["id"], "dimension": rec["dimension"],
        "vector_head": (None if vector is None else
                        [float(f"{x:.6g}") for x in np.frombuffer(vector, "<f4")[:VECTOR_HEAD]]),
        "document": None if doc is None else shorten(doc, DOCUMENT_CHARS),
        "document_chars": None if doc is None else len(doc),
        "metadata": _loads(rec["metadata"]), "acl": rec["acl"],
        "embedding_model": rec["embedding_model"], "event_time": rec["event_time"],
        "event_id": rec["event_id"], "source": _loads(rec["source"]),
        "extra": _loads(rec["extra"]),
    }
    if rec.get("sparse_indices") is not None:
        out["sparse_values"] = len(rec["sparse_indices"]) // 4
    for name in ("alias", "schema", "settings"):
        if rec.get(name) is not None:
            out[name] = _loads(rec[name]) if name != "alias" else rec[name]
    key = rec.get("key")
    if key is not None:
        try:
            out["key"] = shorten(key.decode(), DOCUMENT_CHARS)
        except UnicodeDecodeError:
            out["key_base64"] = base64.b64encode(key[:60]).decode()
    return out


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


__all__ = ["Checked", "Message", "Sample", "Summary", "check_sample", "describe_source",
           "read_sample", "record_view", "topic_source"]
