"""Capture of other pipelines' streams (daemon.sources) through the real capture loop: a
replaying consumer, the real file:// store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from daemon.capture.loop import CaptureLoop
from daemon.changelog.reader import read_partition
from daemon.changelog.repository import Repository
from daemon.config import Config, config_from_mapping
from daemon.objectstore import open_store
from daemon.sources import MappedSource
from daemon.sources.mapping import RecordMapping
from daemon.sources.registry import SchemaCache
from tests.component.fakes import FakeConsumer
from tests.unit.test_sources_debezium import messages
from tests.unit.test_sources_registry import DOC, USER_SCHEMA, FakeRegistry, framed

TOPIC = "raw"


def config(kafka: dict[str, Any], **capture: object) -> Config:
    return config_from_mapping({
        "kafka": {"bootstrap_servers": "fake:9092", "topics": [TOPIC], **kafka},
        "storage": {"url": "file:///unused"},
        "capture": {"segment_max_age_s": 0.05, "shutdown_timeout_s": 5.0,
                    "retry_max_backoff_s": 0.1, **capture},
        "metrics": {"listen": ""},
    }, environ={})


def repo_at(tmp_path: Path) -> Repository:
    return Repository(open_store(f"file://{tmp_path / 'repo'}"))


class FlakyRegistry(FakeRegistry):
    """Does not answer its first ``failures`` requests."""

    def __init__(self, schemas: dict[int, dict[str, Any]], failures: int) -> None:
        super().__init__(schemas)
        self.failures = failures

    def get_schema(self, schema_id: int) -> Any:
        self.down = self.calls < self.failures
        return super().get_schema(schema_id)


def test_a_registry_outage_holds_the_partition_and_loses_nothing(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    values: list[bytes | None] = [framed(42, USER_SCHEMA, {**DOC, "doc_id": f"d{i}"})
                                  for i in range(60)]
    fake = FakeConsumer({(TOPIC, 0): values, (TOPIC, 1): values[:10]})
    cfg = config({"format": "avro-registry", "schema_registry_url": "http://registry:1",
                  "mapping": {TOPIC: {"id": "doc_id", "tenant": "customer",
                                      "vector": "embedding", "collection_name": "docs"}}},
                 segment_max_records=7)
    loop = CaptureLoop(cfg, repo, consumer_factory=lambda s: fake)
    registry = FlakyRegistry({42: USER_SCHEMA}, failures=4)
    mapping = RecordMapping.compile(TOPIC, cfg.kafka.mapping[TOPIC], "[m]")
    loop.sources[TOPIC] = MappedSource(mapping, SchemaCache("http://registry:1", client=registry))
    assert loop.run(until_caught_up=True) == 0
    assert registry.calls == 5  # four failures, then the schema once
    assert fake.seeks and all(offset == 0 for (_, _, offset) in fake.seeks)  # held at the event
    for p, n in ((0, 60), (1, 10)):
        assert [r["id"] for r in read_partition(repo, TOPIC, p)] == [f"d{i}" for i in range(n)]
        assert fake.committed_offsets[(TOPIC, p)] == n
    assert list(repo.list_quarantine(TOPIC)) == []  # not the events' fault
    m = loop.metrics.registry
    assert m.get_sample_value("vecwal_errors_total", {"kind": "source"}) == 4
    assert m.get_sample_value("vecwal_held_partitions") == 0


def test_debezium_tombstones_are_covered_but_not_records(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    msgs = messages("schemas_false.jsonl")  # r, r, c, u, d, tombstone (REPLICA IDENTITY FULL)
    fake = FakeConsumer({(TOPIC, 0): [v for _, v in msgs]})  # keys: the id is set by name
    cfg = config({"format": "debezium",
                  "debezium": {"items": {"id": "id", "tenant": "tenant", "document": "doc"}}})
    loop = CaptureLoop(cfg, repo, consumer_factory=lambda s: fake)
    assert loop.run(until_caught_up=True) == 0
    recs = read_partition(repo, TOPIC, 0)
    assert [(r["offset"], r["op"], r["id"], r["tenant"]) for r in recs] == [
        (0, "upsert", "1", "acme"), (1, "upsert", "3", "acme"), (2, "upsert", "2", "beta"),
        (3, "upsert", "1", "acme"), (4, "delete", "2", "beta")]
    assert [(k.start, k.end) for k in repo.list_segments(TOPIC, 0)] == [(0, 6)]
    assert fake.committed_offsets[(TOPIC, 0)] == 6  # the tombstone's offset is covered
    assert loop.metrics.registry.get_sample_value(
        "vecwal_skipped_events_total", {"topic": TOPIC, "reason": "tombstone"}) == 1


def test_a_flood_of_unmappable_events_is_quarantined_whole(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    good = [orjson.dumps({"doc": f"d{i}", "emb": [float(i), 1.0]}) for i in range(1000)]
    bad = orjson.dumps({"doc": ["not", "an", "id"], "emb": [1.0, 2.0], "big": "x" * 500})
    values: list[bytes | None] = [bad if i % 3 == 0 else good[i] for i in range(1000)]
    fake = FakeConsumer({(TOPIC, 0): values})
    cfg = config({"mapping": {TOPIC: {"id": "doc", "vector": "emb", "collection_name": "c"}}},
                 segment_max_records=100)
    loop = CaptureLoop(cfg, repo, consumer_factory=lambda s: fake)
    assert loop.run(until_caught_up=True) == 0
    kept = [e for k, _ in repo.list_quarantine(TOPIC) for e in repo.read_quarantine(k).entries]
    assert [e.offset for e in kept] == list(range(0, 1000, 3))
    assert all(e.value == bad and e.reason == "bad_field" and "id = 'doc'" in e.detail
               for e in kept)
    recs = read_partition(repo, TOPIC, 0)
    assert [r["id"] for r in recs] == [f"d{i}" for i in range(1000) if i % 3]
    assert fake.committed_offsets[(TOPIC, 0)] == 1000


def test_history_attributes_a_rejected_debezium_event_to_its_record(tmp_path: Path) -> None:
    from daemon.audit.history import HistoryQuery, history

    repo = repo_at(tmp_path)
    msgs = messages("schemas_true.jsonl")  # default identity: the delete lacks the tenant
    fake = FakeConsumer({(TOPIC, 0): [v for _, v in msgs]})
    cfg = config({"format": "debezium",
                  "debezium": {"items": {"id": "id", "tenant": "tenant", "document": "doc"}}})
    loop = CaptureLoop(cfg, repo, consumer_factory=lambda s: fake)
    assert loop.run(until_caught_up=True) == 0
    result = history(repo, [TOPIC], HistoryQuery("items", "2"), method="sidecar",
                     sources=loop.sources)
    rows = [(e["offset"], e["status"], e["op"]) for e in result.events]
    assert rows[0][:2] == (2, "captured") and rows[0][2] == "upsert"
    assert rows[1][:2] == (4, "rejected") and rows[1][2] == "delete"
    assert "REPLICA IDENTITY FULL" in result.events[1]["reason"]
