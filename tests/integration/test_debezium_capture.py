"""A real CDC pipeline into vecwal: PostgreSQL + pgvector -> Debezium (Kafka Connect) ->
Kafka -> `vecwal run` (format debezium) -> `vecwal restore --to T` equals the table as a
SELECT saw it at T, field by field: the initial snapshot (op r), inserts, updates, deletes
and their tombstones, a row deleted and inserted again, over three partitions."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from tests.component.test_cli_restore import vecwal
from tests.integration.test_restore import read_dir_sink

pytestmark = pytest.mark.integration

TABLE = """CREATE TABLE items(id bigint PRIMARY KEY, tenant text NOT NULL, embedding vector(4),
    doc text, tags text[], meta jsonb, category text, price numeric(10,2));
    ALTER TABLE items REPLICA IDENTITY FULL"""
DIM = 4


def vec(i: int, salt: int = 0) -> str:
    # components exact in float32 (multiples of 1/8), so comparisons are exact
    return "[" + ",".join(str((i * 7 + salt * 3 + k) % 64 / 8 - 4) for k in range(DIM)) + "]"


def insert(pg: Any, i: int, tenant: str = "acme", salt: int = 0) -> None:
    pg.execute("INSERT INTO items VALUES (%s, %s, %s::vector, %s, %s, %s::jsonb, %s, %s)",
               (i, tenant, vec(i, salt), f"doc {i}/{salt}" if i % 5 else None,
                ["reader", f"group:{i % 3}"] + ([None] if i % 4 == 0 else []),
                json.dumps({"n": i, "salt": salt, "nested": {"even": i % 2 == 0}}),
                "faq" if i % 2 else "manual", Decimal(i) + Decimal("0.25")))


def table_state(pg: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """The table as vecwal records it: (tenant, id) -> the fields a restore must give back."""
    out = {}
    for (i, tenant, emb, doc, tags, meta, category, price) in pg.execute(
            "SELECT id, tenant, embedding::text, doc, tags, meta, category, price FROM items"):
        out[(tenant, str(i))] = {
            "vector": np.asarray(json.loads(emb), "<f4").tobytes(), "dimension": DIM,
            "document": doc, "acl": None if tags is None else [t for t in tags if t is not None],
            "metadata": {"meta": meta, "category": category,
                         "price": None if price is None else float(price)}}
    return out


def restored(tmp_path: Path, cfg: Path, to: str, name: str) -> dict[tuple[str, str], Any]:
    out = tmp_path / name
    done = vecwal("restore", "--config", str(cfg), "--to", to, "--into", f"dir:{out}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout + done.stderr
    got, _catalog = read_dir_sink(out)
    assert {c for c, _, _ in got} <= {"items"}
    return {(t, i): r for (_, t, i), r in got.items()}


def assert_same(got: dict[tuple[str, str], Any], want: dict[tuple[str, str], Any], at: str
                ) -> None:
    assert sorted(got) == sorted(want), f"at {at}: ids differ"
    for key, row in want.items():
        rec = got[key]
        for name in ("vector", "dimension", "document", "acl"):
            assert rec[name] == row[name], (at, key, name, rec[name], row[name])
        assert orjson.loads(rec["metadata"]) == row["metadata"], (at, key)
        source = orjson.loads(rec["source"])
        assert source["table"] == "items" and isinstance(source["lsn"], int)


def wait_for_messages(bootstrap: str, topic: str, n: int, timeout: float = 60) -> None:
    """Until the topic holds ``n`` messages (so every one was appended before we return)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        deadline = time.monotonic() + timeout
        while True:
            meta = c.list_topics(topic, timeout=5).topics[topic]
            parts = [] if meta.error is not None else list(meta.partitions)
            try:
                total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                            for p in parts)
            except KafkaException:  # a topic just created: its leaders are being elected
                total = 0
            if total >= n:
                assert total == n, f"{total} messages, expected {n}"
                return
            assert time.monotonic() < deadline, f"{total} of {n} messages after {timeout} s"
            time.sleep(0.2)
    finally:
        c.close()


def test_restore_equals_the_table_at_each_instant(
        tmp_path: Path, postgres_service: Any, postgres_database: str, debezium_connector: Any,
        kafka_service: Any) -> None:
    pg = postgres_service.connect(postgres_database)
    pg.execute(TABLE)
    for i in range(1, 21):  # before the connector: its initial snapshot (op r)
        insert(pg, i)
    prefix = f"vecwal-e2e-{time.monotonic_ns() % 10**9}"
    topic = f"{prefix}.public.items"
    # Connect creates the topic as docs/sources/debezium.md says: LogAppendTime, 3 partitions
    debezium_connector(postgres_database, "public.items", schemas_enable=True,
                       topic_prefix=prefix, extra={
                           "topic.creation.default.partitions": "3",
                           "topic.creation.default.replication.factor": "1",
                           "topic.creation.default.message.timestamp.type": "LogAppendTime"})
    wait_for_messages(kafka_service.bootstrap, topic, 20)
    probe = Consumer({"bootstrap.servers": kafka_service.bootstrap, "group.id": "probe"})
    assert len(probe.list_topics(topic, timeout=5).topics[topic].partitions) == 3
    probe.close()
    snapshot_state = table_state(pg)
    t0 = int(time.time() * 1000)
    time.sleep(0.05)

    for i in range(21, 31):
        insert(pg, i, tenant="beta")
    for i in range(1, 6):
        pg.execute("UPDATE items SET embedding = %s::vector, doc = %s, tags = %s WHERE id = %s",
                   (vec(i, 1), f"edited {i}", ["editor"], i))
    for i in range(6, 9):
        pg.execute("DELETE FROM items WHERE id = %s", (i,))
    wait_for_messages(kafka_service.bootstrap, topic, 20 + 10 + 5 + 3 * 2)
    state1 = table_state(pg)
    t1 = int(time.time() * 1000)
    time.sleep(0.05)

    pg.execute("DELETE FROM items WHERE id = 9")
    insert(pg, 9, salt=2)  # deleted and inserted again: the new row
    with pg.transaction():  # one transaction of several changes
        for i in range(11, 16):
            pg.execute("UPDATE items SET meta = %s::jsonb, price = NULL WHERE id = %s",
                       (json.dumps({"n": -i}), i))
        for i in range(31, 36):
            insert(pg, i, tenant="gamma")
    pg.execute("DELETE FROM items WHERE id = 16")
    wait_for_messages(kafka_service.bootstrap, topic, 41 + 2 + 1 + 5 + 5 + 2)
    state2 = table_state(pg)
    t2 = int(time.time() * 1000)

    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f"""
[kafka]
bootstrap_servers = "{kafka_service.bootstrap}"
topics = ["{topic}"]
group_id = "vecwal-{prefix}"
format = "debezium"
[kafka.debezium.items]
tenant = "tenant"
document = "doc"
acl = "tags"
metadata = ["meta", "category", "price"]
[storage]
url = "file://{tmp_path / 'repo'}"
[capture]
segment_max_age_s = 0.5
[metrics]
listen = ""
""")
    # A catch-up proves every event stamped up to its start less clock_margin_ms (500 ms):
    # start it later than that after t2, so t2 is inside what it vouches for.
    time.sleep(max(0.0, t2 / 1000 + 1.0 - time.time()))
    run = vecwal("run", "--config", str(cfg), "--until-caught-up")
    assert run.returncode == 0, run.stdout + run.stderr
    repo = Repository(open_store(f"file://{tmp_path / 'repo'}"))
    assert list(repo.list_quarantine(topic)) == [], "no change of a real table is rejected"

    assert len({repr(sorted(s.items())) for s in (snapshot_state, state1, state2)}) == 3
    iso = {t: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000)) + f".{t % 1000:03d}Z"
           for t in (t0, t1, t2)}
    assert_same(restored(tmp_path, cfg, iso[t0], "at-t0"), snapshot_state, "t0")
    assert_same(restored(tmp_path, cfg, iso[t1], "at-t1"), state1, "t1")
    assert_same(restored(tmp_path, cfg, iso[t2], "at-t2"), state2, "t2")
    assert_same(restored(tmp_path, cfg, "now", "now"), state2, "now")
    # the re-inserted row is the new one, the deleted rows are gone
    assert ("acme", "9") in state2 and ("acme", "6") not in state2
