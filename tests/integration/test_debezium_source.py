"""The real CDC pipeline the Debezium source is tested against: PostgreSQL + pgvector ->
Debezium (Kafka Connect) -> Kafka, read back with confluent_kafka. Snapshot rows (op r), then
an insert (c), an update (u), a delete (d) and its tombstone, with the values written."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError

pytestmark = pytest.mark.integration

CREATE = """CREATE TABLE items(id bigint PRIMARY KEY, tenant text, embedding vector(3),
    doc text, tags text[], meta jsonb)"""
# vector components exactly representable in float4, so exact comparisons hold
SNAPSHOT = [
    (1, "acme", [0.5, 0.25, -1.0], "first doc", ["a", "b"], {"k": 1}),
    (3, "acme", [3.0, 3.0, 3.0], None, [], {"nested": {"x": [1, 2]}}),
]
INSERTED = (2, "beta", [1.5, -2.0, 3.25], "second doc", ["x", "y z", None], {"b": True})
UPDATED_EMBEDDING = [0.125, 0.5, 8.0]


def _vec(v: list[float]) -> str:
    return "[" + ",".join(repr(x) for x in v) + "]"


def _insert(pg: Any, row: tuple[Any, ...]) -> None:
    id_, tenant, emb, doc, tags, meta = row
    pg.execute("INSERT INTO items VALUES (%s, %s, %s::vector, %s, %s, %s::jsonb)",
               (id_, tenant, _vec(emb), doc, tags, json.dumps(meta)))


def _row(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row as Debezium's ``after`` shows it (jsonb: a string, compared parsed)."""
    id_, tenant, emb, doc, tags, meta = row
    return {"id": id_, "tenant": tenant, "embedding": emb, "doc": doc, "tags": tags, "meta": meta}


def _parse(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {**value, "meta": None if value["meta"] is None else json.loads(value["meta"])}


class TopicReader:
    def __init__(self, bootstrap: str, topic: str, schemas: bool) -> None:
        self.schemas = schemas
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{topic}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([topic])

    def read(self, n: int, timeout: float = 60) -> list[tuple[Any, Any]]:
        """n messages as (key, value) parsed from JSON (value None: a tombstone); the payload
        when schemas are on, after checking the envelope carries a schema."""
        out: list[tuple[Any, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            assert time.monotonic() < deadline, f"{len(out)} of {n} messages in {timeout} s: {out}"
            m = self.consumer.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:  # the topic may appear after we subscribe: retry
                assert m.error().code() == KafkaError.UNKNOWN_TOPIC_OR_PART, m.error()
                continue
            key = json.loads(m.key())
            value = None if m.value() is None else json.loads(m.value())
            if self.schemas:
                assert set(key) == {"schema", "payload"}, key
                key = key["payload"]
                if value is not None:
                    assert set(value) == {"schema", "payload"}, value
                    value = value["payload"]
            out.append((key, value))
        return out

    def close(self) -> None:
        self.consumer.close()


@pytest.mark.parametrize(("schemas", "replica_full"), [(False, True), (True, False)],
                         ids=["schemas-off-identity-full", "schemas-on-identity-default"])
def test_debezium_streams_snapshot_and_changes(
    schemas: bool, replica_full: bool, postgres_service: Any, postgres_database: str,
    debezium_connector: Any, kafka_bootstrap: str,
) -> None:
    with postgres_service.connect(postgres_database) as pg:
        pg.execute(CREATE)
        if replica_full:
            pg.execute("ALTER TABLE items REPLICA IDENTITY FULL")
        for row in SNAPSHOT:
            _insert(pg, row)

    t0 = time.monotonic()
    dbz = debezium_connector(postgres_database, "public.items", schemas_enable=schemas)
    reader = TopicReader(kafka_bootstrap, dbz.topic, schemas)
    try:
        snapshot = reader.read(2)
        first_event = time.monotonic() - t0
        print(f"[debezium] connector RUNNING after {dbz.running_seconds:.2f} s, first event "
              f"after {first_event:.2f} s", file=sys.stderr)
        for (key, value), row in zip(snapshot, SNAPSHOT, strict=True):
            assert key == {"id": row[0]}
            assert value["op"] == "r"
            assert value["before"] is None
            assert _parse(value["after"]) == _row(row)
            src = value["source"]
            assert (src["connector"], src["db"], src["schema"], src["table"]) == (
                "postgresql", postgres_database, "public", "items")
            assert src["version"].startswith("3.6.")
            assert isinstance(src["lsn"], int) and src["lsn"] > 0
        assert [v["source"]["snapshot"] for _, v in snapshot] == ["first", "last"]

        with postgres_service.connect(postgres_database) as pg:
            _insert(pg, INSERTED)
            pg.execute("UPDATE items SET doc = %s, embedding = %s::vector WHERE id = 1",
                       ("first doc, edited", _vec(UPDATED_EMBEDDING)))
            pg.execute("DELETE FROM items WHERE id = 2")
        changes = reader.read(4)
    finally:
        reader.close()

    (kc, c), (ku, u), (kd, d), (kt, tombstone) = changes
    assert [c["op"], u["op"], d["op"]] == ["c", "u", "d"]
    assert all(v["source"]["snapshot"] == "false" for v in (c, u, d))
    lsns = [v["source"]["lsn"] for v in (c, u, d)]
    assert lsns == sorted(lsns) and lsns[0] > snapshot[-1][1]["source"]["lsn"]
    assert kc == {"id": 2} and ku == {"id": 1} and kd == {"id": 2}

    assert c["before"] is None
    assert _parse(c["after"]) == _row(INSERTED)  # text[] keeps its NULL element

    updated = _row(SNAPSHOT[0]) | {"doc": "first doc, edited", "embedding": UPDATED_EMBEDDING}
    assert _parse(u["after"]) == updated
    assert d["after"] is None
    if replica_full:  # the old row, whole
        assert _parse(u["before"]) == _row(SNAPSHOT[0])
        assert _parse(d["before"]) == _row(INSERTED)
    else:  # the default identity: no old row on update, only the key on delete
        assert u["before"] is None
        assert d["before"] == {"id": 2, "tenant": None, "embedding": None, "doc": None,
                               "tags": None, "meta": None}

    assert kt == kd and tombstone is None  # the tombstone follows the delete
