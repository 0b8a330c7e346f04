"""``kafka:TOPIC`` restores against a real broker: the re-emitted change events validate, give
the same state digests as a ``dir:`` restore of the same plan, and capturing the topic again
with the capture parser gives the same records, field by field, and the same catalog."""

from __future__ import annotations

import base64
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from daemon.changelog.repository import Repository
from daemon.errors import VecwalError
from daemon.events import CONTROL_OPS, EventParser
from daemon.objectstore import open_store
from daemon.restore.executor import RestoreResult, execute
from daemon.restore.planner import RestorePlan, Scope, gather, make_plan
from daemon.restore.sinks import WrittenState
from daemon.restore.sinks.directory import DirSink
from daemon.restore.sinks.kafka import HEADER, KafkaSink
from daemon.restore.target import parse_target
from daemon.restore.validate import validate
from daemon.rows import record_from_event
from daemon.snapshot.compactor import Compactor
from daemon.snapshot.datafile import decode_records
from daemon.snapshot.state import Catalog
from daemon.workload import Workload
from tests.oracle.history import TOPIC, History, generate, write_log

pytestmark = pytest.mark.integration

FIELDS = ("collection", "tenant", "id", "dimension", "vector", "sparse_indices", "sparse_values",
          "document", "document_is_json", "metadata", "acl", "embedding_model", "source",
          "event_id", "event_time", "extra")

Records = dict[tuple[str, str, str], dict[str, Any]]


# -- building repositories ---------------------------------------------------------------------
def rich_upsert(i: int, rng: random.Random) -> dict[str, Any]:
    """An upsert using every part of the contract, fields outside it included."""
    coll = ("docs", "img")[i % 2]
    dim = {"docs": 3, "img": 2}[coll]
    vec = [rng.uniform(-1, 1) for _ in range(dim)]
    nnz = i % 4
    return {
        "op": "upsert", "collection": coll, "tenant": ("", "acme", "globex")[i % 3],
        "id": f"rich-{i}",
        "vector": vec if i % 2 else base64.b64encode(np.asarray(vec, "<f4").tobytes()).decode(),
        "sparse": {"indices": sorted(rng.sample(range(10_000), nnz)),
                   "values": [rng.uniform(-2, 2) for _ in range(nnz)]},
        "document": (f"text {i} \u00e9\u4e2d", {"title": f"t{i}", "tags": ["a", 1.5, None]},
                     [i, "x"])[i % 3],
        "metadata": {"lang": "en", "rank": i, "nested": {"score": i / 7}},
        "acl": [f"g:{i % 3}", "u:ann"][: i % 3],
        "embedding_model": {"name": "m", "version": None if i % 4 == 0 else str(i % 4)},
        "source": {"chunk": i, "uri": f"s3://corpus/{i}.pdf", "page": i % 5},
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "event_time": "2026-11-25T14:03:07.120Z",
        "x_trace": {"span": f"s{i}", "sampled": bool(i % 2)},
        "priority": i % 3,
    }


def json_history(seed: int) -> History:
    """tests/oracle/history.py (drops, aliases, tenants, ties, JSON documents) plus upserts
    that use sparse vectors, sources, audit fields and fields outside the contract."""
    history = generate(seed, 160)
    rng = random.Random(seed)
    parser = EventParser(1 << 20)
    clock = max(history.times) + 1
    for i in range(36):
        ev = rich_upsert(i, rng)
        p = sum(ev["id"].encode()) % history.partitions
        events = history.events[p]
        clock += i % 2
        events.append(parser.parse(orjson.dumps(ev), "json", key=ev["id"].encode(),
                                   offset=len(events), timestamp=clock))
    return history


def avro_history(seed: int, partitions: int = 3) -> History:
    """What capture makes of an Avro topic: daemon/workload.py's stream, Avro encoded."""
    w = Workload(seed=seed, collections={"docs": 8, "images": 4}, id_space=30, fmt="avro")
    generated = [*w.preamble(), *w.events(250), w.schema_change("docs"), *w.events(150)]
    parser = EventParser(1 << 20)
    per_p: list[list[dict[str, Any]]] = [[] for _ in range(partitions)]
    clock = [1_000] * partitions
    for i, g in enumerate(generated):
        p = sum(g.key) % partitions
        clock[p] += i % 3
        per_p[p].append(parser.parse(g.value, "avro", key=g.key, offset=len(per_p[p]),
                                     timestamp=clock[p]))
    return History(partitions, per_p)


def repository(tmp_path: Path, history: History, seed: int) -> Repository:
    """The history as capture leaves it, compacted half way: restores read a snapshot and the
    log after it."""
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, seed)
    times = history.times
    Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=8).compact(times[len(times) // 2])
    return repo


def plan_for(repo: Repository, until_ms: int, scope: Scope | None = None) -> RestorePlan:
    target = parse_target(str(until_ms), now_ms=10**15)
    return make_plan(gather(repo, [TOPIC], target), target, scope or Scope(),
                     allow_incomplete=True)


# -- restoring and reading -----------------------------------------------------------------------
def restore_into_dir(repo: Repository, plan: RestorePlan, out: Path
                     ) -> tuple[RestoreResult, dict[str, WrittenState], Records, dict[str, Any]]:
    sink = DirSink(out)
    result = execute(repo, plan, sink)
    report = validate(result, sink)
    assert report.ok, report.to_dict()
    records: Records = {}
    for f in sorted(out.glob("*/part-*.avro")):
        for r in decode_records(f.read_bytes(), str(f)):
            records[(r["collection"], r["tenant"], r["id"])] = r
    catalog = orjson.loads((out / "catalog.json").read_bytes())
    return result, sink.read_back(), records, catalog


def capture(bootstrap: str, topic: str, fmt: str, start: dict[int, int] | None = None
            ) -> tuple[Records, dict[str, Any], list[Any]]:
    """Read the topic as capture would: EventParser on every value; upserts as snapshot
    records, control events into a catalog. Returns (records, live catalog, messages)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                 for p in parts}
        begin = start or {}
        pending = {p: hi for p, hi in highs.items() if hi > begin.get(p, 0)}
        consumer.assign([TopicPartition(topic, p, begin.get(p, 0)) for p in pending])
        messages: list[Any] = []  # confluent_kafka.Message
        deadline = time.monotonic() + 60
        while pending:
            assert time.monotonic() < deadline, f"topic {topic}: offsets up to {pending} missing"
            batch: list[Any] = consumer.consume(500, timeout=0.2)
            for msg in batch:
                assert msg.error() is None, msg.error()
                if msg.partition() in pending and msg.offset() < pending[msg.partition()]:
                    messages.append(msg)
                    if msg.offset() + 1 == pending[msg.partition()]:
                        del pending[msg.partition()]
    finally:
        consumer.close()
    parser = EventParser(1 << 20)
    records: Records = {}
    catalog = Catalog()
    for msg in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        ev = parser.parse(msg.value(), fmt, key=msg.key(), offset=msg.offset(),
                          timestamp=msg.timestamp()[1])
        if ev["op"] in CONTROL_OPS:
            assert msg.key() == ev["collection"].encode(), "control events: key = collection"
            catalog.apply(ev, topic, msg.partition())
            continue
        assert ev["op"] == "upsert", ev["op"]
        assert msg.key() == ev["id"].encode(), "upserts: key = record id"
        key = (ev["collection"], ev["tenant"], ev["id"])
        assert key not in records, f"{key} emitted twice"
        records[key] = record_from_event(ev, topic, msg.partition())
    return records, catalog.live(), messages


def states(written: dict[str, WrittenState]) -> dict[str, tuple[int, str, dict[str, int]]]:
    return {c: (w.records, w.digest, w.tenants) for c, w in written.items() if w.records}


def assert_same_records(got: Records, want: Records) -> None:
    assert set(got) == set(want), sorted(set(got) ^ set(want))[:5]
    for key, rec in want.items():
        for name in FIELDS:
            assert got[key][name] == rec[name], (key, name, got[key][name], rec[name])


def catalog_of(catalog: dict[str, Any]) -> dict[str, Any]:
    return {"collections": catalog["collections"], "aliases": catalog["aliases"],
            "tenants": {c: ts for c, ts in catalog["tenants"].items() if ts}}


def restore_and_compare(repo: Repository, plan: RestorePlan, tmp_path: Path, bootstrap: str,
                        topic: str, fmt: str) -> tuple[KafkaSink, Records]:
    """Restore the plan into dir: and into kafka:TOPIC; everything must agree."""
    dir_result, dir_held, dir_records, dir_catalog = restore_into_dir(repo, plan,
                                                                     tmp_path / "dir")
    sink = KafkaSink(bootstrap, topic, fmt=fmt)
    result = execute(repo, plan, sink)
    report = validate(result, sink)
    assert report.ok, report.to_dict()
    assert states(result.collections) == states(dir_result.collections)
    assert states(sink.read_back()) == states(dir_held)
    assert sink.catalog_read_back == catalog_of(dir_catalog)

    records, catalog, messages = capture(bootstrap, topic, fmt)
    assert_same_records(records, dir_records)
    assert catalog == catalog_of(dir_catalog)
    n_catalog = (len(dir_catalog["collections"]) + len(dir_catalog["aliases"])
                 + sum(len(ts) for ts in dir_catalog["tenants"].values()))
    assert len(messages) == len(dir_records) + n_catalog, "no duplicates, nothing else"
    assert all(dict(m.headers())[HEADER] == sink.restore_id.encode() for m in messages)
    return sink, dir_records


# -- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", [Scope(), Scope(tenants=frozenset({"acme"}))],
                         ids=["all", "tenant-acme"])
def test_json_restore_equals_dir_restore(tmp_path: Path, kafka_bootstrap: str, kafka_topic: Any,
                                         scope: Scope) -> None:
    history = json_history(5)
    repo = repository(tmp_path, history, 5)
    plan = plan_for(repo, history.times[-1], scope)
    topic = kafka_topic(partitions=3)
    _, records = restore_and_compare(repo, plan, tmp_path, kafka_bootstrap, topic, "json")
    assert len(records) > 20
    rich = [r for k, r in records.items() if k[2].startswith("rich-")]
    assert rich and any(r["extra"] for r in rich) and any(r["sparse_indices"] for r in rich)
    assert any(r["document_is_json"] for r in records.values())


def test_json_values_follow_the_contract(tmp_path: Path, kafka_bootstrap: str,
                                         kafka_topic: Any) -> None:
    """What a pipeline reads: JSON objects, base64 float32 vectors, extras at the top level."""
    history = json_history(8)
    repo = repository(tmp_path, history, 8)
    topic = kafka_topic(partitions=2)
    restore_and_compare(repo, plan_for(repo, history.times[-1]), tmp_path, kafka_bootstrap,
                        topic, "json")
    _, _, messages = capture(kafka_bootstrap, topic, "json")
    values = [orjson.loads(m.value()) for m in messages]
    rich = [v for v in values if str(v.get("id", "")).startswith("rich-")]
    assert rich
    for v in rich:
        assert isinstance(v["metadata"], dict) and isinstance(v["source"], dict)
        assert isinstance(v["vector"], str) and len(base64.b64decode(v["vector"])) % 4 == 0
        assert "x_trace" in v and "priority" in v and "extra" not in v
        assert isinstance(v["document"], str | dict | list)
    assert {v["op"] for v in values} <= {"upsert", "collection.put", "alias.put", "tenant.put"}
    schemas = [v for v in values if v["op"] == "collection.put"]
    assert schemas and all(isinstance(v["schema"]["dimension"], int) for v in schemas)


class CatalogFirst:
    """What the executor would do if it called write_catalog right after begin: the catalog is
    known (from the dir restore of the same plan) and emitted before any record."""

    def __init__(self, sink: KafkaSink, catalog: dict[str, Any]) -> None:
        self.sink, self.catalog, self.name = sink, catalog, sink.name

    def begin(self) -> None:
        self.sink.begin()
        self.sink.write_catalog(self.catalog)

    def write_bucket(self, collection: str, bucket: int, records: Any) -> WrittenState:
        return self.sink.write_bucket(collection, bucket, records)

    def write_catalog(self, catalog: dict[str, Any]) -> None:
        assert catalog_of(catalog) == catalog_of(self.catalog)

    def finish(self) -> None:
        self.sink.finish()

    def read_back(self) -> dict[str, WrittenState]:
        return self.sink.read_back()


def test_catalog_first_order_gives_the_same_state(tmp_path: Path, kafka_bootstrap: str,
                                                  kafka_topic: Any) -> None:
    history = json_history(6)
    repo = repository(tmp_path, history, 6)
    plan = plan_for(repo, history.times[-1])
    dir_result, _, dir_records, dir_catalog = restore_into_dir(repo, plan, tmp_path / "dir")
    topic = kafka_topic(partitions=3)
    sink = CatalogFirst(KafkaSink(kafka_bootstrap, topic), dir_catalog)
    result = execute(repo, plan, sink)
    report = validate(result, sink)
    assert report.ok, report.to_dict()
    assert states(result.collections) == states(dir_result.collections)
    records, catalog, messages = capture(kafka_bootstrap, topic, "json")
    assert_same_records(records, dir_records)
    assert catalog == catalog_of(dir_catalog)
    schema_time = max(m.timestamp()[1] for m in messages
                      if orjson.loads(m.value())["op"] == "collection.put")
    assert schema_time <= min(m.timestamp()[1] for m in messages
                              if orjson.loads(m.value())["op"] == "upsert")


def test_avro_restore_equals_dir_restore(tmp_path: Path, kafka_bootstrap: str,
                                         kafka_topic: Any) -> None:
    history = avro_history(3)
    repo = repository(tmp_path, history, 3)
    topic = kafka_topic(partitions=3)
    _, records = restore_and_compare(repo, plan_for(repo, history.times[-1]), tmp_path,
                                     kafka_bootstrap, topic, "avro")
    assert len(records) > 50
    assert all(r["source"] and r["event_id"] for r in records.values())


def test_avro_refuses_what_it_cannot_carry(tmp_path: Path, kafka_bootstrap: str,
                                           kafka_topic: Any) -> None:
    history = json_history(5)  # JSON documents and extra fields: the Avro contract has neither
    repo = repository(tmp_path, history, 5)
    sink = KafkaSink(kafka_bootstrap, kafka_topic(partitions=1), fmt="avro")
    with pytest.raises(VecwalError) as err:
        execute(repo, plan_for(repo, history.times[-1]), sink)
    assert "without loss" in err.value.message
    assert "fmt='json'" in err.value.hint


def test_appends_to_a_non_empty_topic(tmp_path: Path, kafka_bootstrap: str,
                                      kafka_topic: Any) -> None:
    """Messages already in the topic are not part of this restore's read-back."""
    topic = kafka_topic(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(5):
        producer.produce(topic, orjson.dumps({"op": "upsert", "collection": "docs",
                                              "id": f"old-{i}", "vector": [1.0, 2.0, 3.0]}),
                         f"old-{i}".encode())
    assert producer.flush(30) == 0
    history = json_history(9)
    repo = repository(tmp_path, history, 9)
    plan = plan_for(repo, history.times[-1])
    dir_result, _, dir_records, _ = restore_into_dir(repo, plan, tmp_path / "dir")
    sink = KafkaSink(kafka_bootstrap, topic)
    result = execute(repo, plan, sink)
    report = validate(result, sink)
    assert report.ok, report.to_dict()
    assert states(result.collections) == states(dir_result.collections)
    records, _, _ = capture(kafka_bootstrap, topic, "json", start=sink._start)
    assert_same_records(records, dir_records)


def test_missing_topic_is_a_clear_error(kafka_bootstrap: str, kafka_admin: Any) -> None:
    name = f"vecwal-test-missing-{uuid.uuid4().hex[:8]}"
    sink = KafkaSink(kafka_bootstrap, name)
    with pytest.raises(VecwalError) as err:
        sink.begin()
    assert name in err.value.message and "does not exist" in err.value.message
    assert "kafka-topics.sh --create" in err.value.hint and "never creates" in err.value.hint
    assert name not in kafka_admin.list_topics(timeout=10).topics, "the topic was auto-created"


def test_delivery_failure_names_topic_and_error(tmp_path: Path, kafka_bootstrap: str,
                                                kafka_topic: Any) -> None:
    """The broker refuses messages over the topic's max.message.bytes."""
    topic = kafka_topic(partitions=1, config={"max.message.bytes": "1024"})
    big = {"op": "upsert", "collection": "docs", "tenant": "acme", "id": "big",
           "vector": [0.5, 0.25], "document": os.urandom(4096).hex()}
    history = History(1, [[EventParser(1 << 20).parse(orjson.dumps(big), "json", key=b"big",
                                                       offset=0, timestamp=1_000)]])
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, 1)
    sink = KafkaSink(kafka_bootstrap, topic)
    with pytest.raises(VecwalError) as err:
        execute(repo, plan_for(repo, 1_000), sink)
    assert topic in err.value.message
    assert "MSG_SIZE_TOO_LARGE" in err.value.message or "too large" in err.value.message.lower()
