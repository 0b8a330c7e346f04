"""Capture of schema-registry Avro through a real registry (``registry_service``: Apicurio
Registry's Confluent-compatible API, or ``SCHEMA_REGISTRY_URL``) and the real broker.

- A user's own Avro schema (not vecwal's), values framed by confluent-kafka's AvroSerializer,
  mapped by ``[kafka.mapping.<topic>]``: every record lands in the change log with the mapped
  fields; a value without the magic byte and one with an unknown schema id are quarantined
  (``unparseable``, ``unknown_schema``).
- A registry that does not answer (a port nothing listens on): the partition is held, nothing
  quarantined, nothing made durable or committed past what was; with the registry back every
  event arrives exactly once.
- Debezium envelopes as registry Avro (key and value framed), tombstones skipped.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from daemon.capture.loop import CaptureLoop
from daemon.changelog.reader import read_partition
from daemon.changelog.repository import Repository
from daemon.config import Config, config_from_mapping
from daemon.objectstore import open_store

pytestmark = pytest.mark.integration

PARTITIONS = 3
DOC_SCHEMA: dict[str, Any] = {
    "type": "record", "name": "Document", "namespace": "com.example.search",
    "fields": [
        {"name": "action", "type": {"type": "enum", "name": "Action",
                                    "symbols": ["index", "remove"]}},
        {"name": "doc_id", "type": "string"},
        {"name": "customer", "type": "string"},
        {"name": "embedding", "type": {"type": "array", "items": "float"}},
        {"name": "text", "type": ["null", "string"], "default": None},
        {"name": "attrs", "type": {"type": "map", "values": "string"}},
        {"name": "readers", "type": {"type": "array", "items": "string"}},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "shard", "type": "int"},
    ]}
MAPPING = {"op": "action", "op_map": {"index": "upsert", "remove": "delete"},
           "collection_name": "docs", "tenant": "customer", "id": "doc_id",
           "vector": "embedding", "document": "text", "metadata": "attrs", "acl": "readers",
           "event_time": "ts"}
TS = 1_780_000_000_000


@pytest.fixture
def registry_url(registry_service: Any) -> str:
    registry_service.ensure_running()
    return str(registry_service.url)


def closed_port_url(real_url: str) -> str:
    """The registry's API path on a port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{urlsplit(real_url).path}"


def config(bootstrap: str, topic: str, group: str, repo_url: str, registry: str,
           **kafka: Any) -> Config:
    return config_from_mapping({
        "kafka": {"bootstrap_servers": bootstrap, "topics": [topic], "group_id": group,
                  "format": "avro-registry", "schema_registry_url": registry,
                  "mapping": {topic: MAPPING}, **kafka},
        "storage": {"url": repo_url},
        "capture": {"segment_max_age_s": 0.5, "segment_max_records": 150,
                    "retry_max_backoff_s": 0.5, "shutdown_timeout_s": 20.0},
        "metrics": {"listen": ""},
    }, environ={})


def document(i: int) -> dict[str, Any]:
    return {"action": "remove" if i % 10 == 9 else "index", "doc_id": f"doc-{i}",
            "customer": ["acme", "beta"][i % 2], "embedding": [i / 7, -1.5, 0.25, float(i % 5)],
            "text": None if i % 4 == 0 else f"document {i}", "attrs": {"lang": "en", "n": str(i)},
            "readers": [f"user:{i % 3}"], "ts": TS + i, "shard": i % 8}


def produce_documents(bootstrap: str, topic: str, registry: Any, ids: range) -> None:
    ser = AvroSerializer(registry, json.dumps(DOC_SCHEMA))
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in ids:
        producer.produce(topic, key=f"doc-{i}".encode(), value=ser(document(i), ctx),
                         partition=i % PARTITIONS)
    assert producer.flush(30) == 0


def produce_raw(bootstrap: str, topic: str, messages: list[tuple[int, bytes | None, bytes | None]]
                ) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, key, value in messages:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def by_id(repo: Repository, topic: str, partitions: int = PARTITIONS
          ) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in range(partitions):
        for rec in read_partition(repo, topic, p):
            out.setdefault(rec["id"], []).append({**rec, "partition": p})
    return out


def quarantined(repo: Repository, topic: str) -> list[Any]:
    return sorted((e for k, _ in repo.list_quarantine(topic)
                   for e in repo.read_quarantine(k).entries), key=lambda e: (e.partition, e.offset))


def committed(bootstrap: str, group: str, topic: str) -> list[int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return [tp.offset for tp in c.committed(parts, timeout=10)]
    finally:
        c.close()


def assert_mapped(rec: dict[str, Any], i: int) -> None:
    doc = document(i)
    assert rec["op"] == ("delete" if doc["action"] == "remove" else "upsert")
    assert (rec["collection"], rec["tenant"], rec["id"]) == ("docs", doc["customer"], f"doc-{i}")
    assert rec["event_time"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((TS + i) // 1000)) \
        + f".{(TS + i) % 1000:03d}+00:00"
    assert json.loads(rec["extra"]) == {"shard": doc["shard"]}
    if rec["op"] == "delete":
        return
    assert rec["dimension"] == 4
    assert rec["vector"] == np.asarray(doc["embedding"], dtype="<f4").tobytes()
    assert rec["document"] == doc["text"]
    assert json.loads(rec["metadata"]) == doc["attrs"]
    assert rec["acl"] == doc["readers"]


def test_registry_avro_is_mapped_and_bad_frames_quarantined(
        kafka_bootstrap: str, kafka_topic: Callable[..., str], registry_service: Any,
        registry_url: str, tmp_path: Path) -> None:
    topic = kafka_topic(partitions=PARTITIONS)
    registry = registry_service.client()
    n = 300
    produce_documents(kafka_bootstrap, topic, registry, range(n))
    bad_offsets = {p: n // PARTITIONS + 1 for p in range(PARTITIONS)}  # after the good ones
    produce_raw(kafka_bootstrap, topic, [
        (0, b"json", json.dumps({"doc_id": "x", "customer": "acme"}).encode()),  # no magic byte
        (1, b"unknown", b"\x00" + (999_999).to_bytes(4, "big") + b"\x02ab"),   # unknown id
    ])
    produce_documents(kafka_bootstrap, topic, registry, range(n, n + PARTITIONS))  # after them
    repo_url = f"file://{tmp_path / 'repo'}"
    group = f"vecwal-{uuid.uuid4().hex[:8]}"
    repo = Repository(open_store(repo_url))
    loop = CaptureLoop(config(kafka_bootstrap, topic, group, repo_url, registry_url), repo)
    assert loop.run(until_caught_up=True) == 0

    got = by_id(repo, topic)
    assert sorted(got) == sorted(f"doc-{i}" for i in range(n + PARTITIONS))
    for i in range(n + PARTITIONS):
        (rec,) = got[f"doc-{i}"]  # exactly once
        assert rec["partition"] == i % PARTITIONS
        assert_mapped(rec, i)
    bad = quarantined(repo, topic)
    assert [(e.partition, e.offset, e.reason) for e in bad] == [
        (0, bad_offsets[0] - 1, "unparseable"), (1, bad_offsets[1] - 1, "unknown_schema")]
    assert bad[0].value.startswith(b'{"doc_id"')  # kept whole
    assert "magic byte" in bad[0].detail
    assert "999999" in bad[1].detail and bad[1].value[:5] == b"\x00\x00\x0f\x42\x3f"
    assert committed(kafka_bootstrap, group, topic) == [n // PARTITIONS + 2,
                                                       n // PARTITIONS + 2, n // PARTITIONS + 1]


def test_a_registry_outage_holds_the_partitions_then_every_event_arrives_once(
        kafka_bootstrap: str, kafka_topic: Callable[..., str], registry_service: Any,
        registry_url: str, tmp_path: Path) -> None:
    topic = kafka_topic(partitions=PARTITIONS)
    registry = registry_service.client()
    repo_url = f"file://{tmp_path / 'repo'}"
    group = f"vecwal-{uuid.uuid4().hex[:8]}"
    repo = Repository(open_store(repo_url))
    produce_documents(kafka_bootstrap, topic, registry, range(90))
    assert CaptureLoop(config(kafka_bootstrap, topic, group, repo_url, registry_url),
                       repo).run(until_caught_up=True) == 0
    segments_before = {p: list(repo.list_segments(topic, p)) for p in range(PARTITIONS)}
    marks_before = {p: repo.read_watermark(topic, p) for p in range(PARTITIONS)}
    assert [m.captured_through for m in marks_before.values() if m] == [30, 30, 30]
    assert committed(kafka_bootstrap, group, topic) == [30, 30, 30]

    # the registry does not answer: a fresh loop (an empty schema cache) meets new events
    produce_documents(kafka_bootstrap, topic, registry, range(90, 240))
    down = CaptureLoop(config(kafka_bootstrap, topic, group, repo_url,
                              closed_port_url(registry_url)), repo)
    result: list[int | BaseException] = []

    def capture() -> None:
        try:
            result.append(down.run(until_caught_up=True))
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    m = down.metrics.registry
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # every partition reached and held at least once
        if (m.get_sample_value("vecwal_errors_total", {"kind": "source"}) or 0) >= PARTITIONS \
                and (m.get_sample_value("vecwal_held_partitions") or 0) > 0:
            break
        time.sleep(0.2)
    time.sleep(3)  # a few seconds held: retries, segment ages, valid-through ticks
    assert thread.is_alive(), result  # not caught up: the partitions are held
    assert list(repo.list_quarantine(topic)) == []  # not the events' fault
    assert {p: list(repo.list_segments(topic, p)) for p in range(PARTITIONS)} == segments_before
    for p in range(PARTITIONS):
        mark = repo.read_watermark(topic, p)
        assert mark is not None and mark.captured_through == 30
    assert committed(kafka_bootstrap, group, topic) == [30, 30, 30]
    errors = m.get_sample_value("vecwal_errors_total", {"kind": "source"})
    down.request_stop()
    thread.join(60)
    assert not thread.is_alive() and result and not isinstance(result[0], BaseException), result
    assert {p: list(repo.list_segments(topic, p)) for p in range(PARTITIONS)} == segments_before
    assert committed(kafka_bootstrap, group, topic) == [30, 30, 30]
    assert errors is not None and errors >= PARTITIONS

    # the registry answers again: every event once, no gap, nothing quarantined
    produce_documents(kafka_bootstrap, topic, registry, range(240, 300))
    assert CaptureLoop(config(kafka_bootstrap, topic, group, repo_url, registry_url),
                       repo).run(until_caught_up=True) == 0
    got = by_id(repo, topic)
    assert sorted(got) == sorted(f"doc-{i}" for i in range(300))
    for i in range(300):
        (rec,) = got[f"doc-{i}"]
        assert_mapped(rec, i)
    for p in range(PARTITIONS):
        offsets = [r["offset"] for r in read_partition(repo, topic, p)]
        assert offsets == list(range(100))  # no gap
    assert list(repo.list_quarantine(topic)) == []
    assert committed(kafka_bootstrap, group, topic) == [100, 100, 100]


ROW = {"type": "record", "name": "Value", "namespace": "pg.public.items", "fields": [
    {"name": "id", "type": "int"},
    {"name": "tenant", "type": "string"},
    {"name": "doc", "type": ["null", "string"], "default": None},
    {"name": "vec", "type": ["null", {"type": "array", "items": "double",
                                      "connect.name": "io.debezium.data.DoubleVector"}],
     "default": None},
    {"name": "price", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 8,
                                        "scale": 2, "connect.name":
                                            "org.apache.kafka.connect.data.Decimal",
                                        "connect.parameters": {"scale": "2"}}],
     "default": None},
]}
ENVELOPE = {"type": "record", "name": "Envelope", "namespace": "pg.public.items", "fields": [
    {"name": "before", "type": ["null", ROW], "default": None},
    {"name": "after", "type": ["null", "Value"], "default": None},
    {"name": "source", "type": {"type": "record", "name": "Source",
                                "namespace": "io.debezium.connector.postgresql", "fields": [
        {"name": "connector", "type": "string"}, {"name": "db", "type": "string"},
        {"name": "schema", "type": "string"}, {"name": "table", "type": "string"},
        {"name": "lsn", "type": ["null", "long"], "default": None},
        {"name": "txId", "type": ["null", "long"], "default": None},
        {"name": "ts_ms", "type": "long"},
        {"name": "snapshot", "type": ["null", "string"], "default": None}]}},
    {"name": "op", "type": "string"},
    {"name": "ts_ms", "type": ["null", "long"], "default": None},
]}
KEY = {"type": "record", "name": "Key", "namespace": "pg.public.items",
       "fields": [{"name": "id", "type": "int"}]}


def test_debezium_envelopes_as_registry_avro(
        kafka_bootstrap: str, kafka_topic: Callable[..., str], registry_service: Any,
        registry_url: str, tmp_path: Path) -> None:
    from decimal import Decimal

    topic = kafka_topic(partitions=1)
    registry = registry_service.client()
    value_ser = AvroSerializer(registry, json.dumps(ENVELOPE))
    key_ser = AvroSerializer(registry, json.dumps(KEY))
    vctx = SerializationContext(topic, MessageField.VALUE)
    kctx = SerializationContext(topic, MessageField.KEY)

    def envelope(op: str, before: Any, after: Any, lsn: int) -> bytes:
        src = {"connector": "postgresql", "db": "app", "schema": "public", "table": "items",
               "lsn": lsn, "txId": 7, "ts_ms": TS + lsn, "snapshot": "false"}
        out = value_ser({"before": before, "after": after, "source": src, "op": op,
                         "ts_ms": TS + lsn + 5}, vctx)
        assert isinstance(out, bytes) and out[:1] == b"\x00"
        return out

    def row(i: int, **over: Any) -> dict[str, Any]:
        return {"id": i, "tenant": "acme", "doc": f"row {i}", "vec": [i, 0.5, -2.0],
                "price": Decimal("12.34"), **over}

    def key(i: int) -> bytes:
        out = key_ser({"id": i}, kctx)
        assert isinstance(out, bytes)
        return out

    produce_raw(kafka_bootstrap, topic, [
        (0, key(1), envelope("r", None, row(1), 10)),
        (0, key(2), envelope("c", None, row(2), 11)),
        (0, key(1), envelope("u", row(1), row(1, doc="changed", vec=[9.0, 9.0, 9.0]), 12)),
        (0, key(2), envelope("d", row(2), None, 13)),
        (0, key(2), None),  # the tombstone after the delete
    ])
    repo_url = f"file://{tmp_path / 'repo'}"
    repo = Repository(open_store(repo_url))
    cfg = config_from_mapping({
        "kafka": {"bootstrap_servers": kafka_bootstrap, "topics": [topic],
                  "group_id": f"vecwal-{uuid.uuid4().hex[:8]}", "format": "debezium",
                  "schema_registry_url": registry_url,
                  "debezium": {"items": {"tenant": "tenant", "document": "doc"}}},
        "storage": {"url": repo_url},
        "capture": {"segment_max_age_s": 0.5},
        "metrics": {"listen": ""},
    }, environ={})
    loop = CaptureLoop(cfg, repo)
    assert loop.run(until_caught_up=True) == 0
    recs = list(read_partition(repo, topic, 0))
    assert [(r["offset"], r["op"], r["id"], r["tenant"]) for r in recs] == [
        (0, "upsert", "1", "acme"), (1, "upsert", "2", "acme"), (2, "upsert", "1", "acme"),
        (3, "delete", "2", "acme")]
    first, _, changed, _ = recs
    assert first["vector"] == np.asarray([1, 0.5, -2.0], dtype="<f4").tobytes()
    assert first["document"] == "row 1" and json.loads(first["metadata"]) == {"price": 12.34}
    assert changed["document"] == "changed"
    assert changed["vector"] == np.asarray([9.0] * 3, dtype="<f4").tobytes()
    assert json.loads(first["source"])["lsn"] == 10
    assert first["event_time"].startswith("2026-05-28T20:26:40.010")
    assert list(repo.list_quarantine(topic)) == []
    assert [(k.start, k.end) for k in repo.list_segments(topic, 0)][-1][1] == 5  # tombstone covered
    assert loop.metrics.registry.get_sample_value(
        "vecwal_skipped_events_total", {"topic": topic, "reason": "tombstone"}) == 1
