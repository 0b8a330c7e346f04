"""Undo a bad batch end to end through the real broker: produce good writes, a bad batch
(its messages tagged with a Kafka header, as pipelines tag a batch), more good writes;
capture; roll back into the same topic; capture the corrective events; a restore of
everything captured equals a plain replay of the stream without the bad batch, and so does a
Qdrant collection fed by the topic (a small consumer: the live engine the corrective events
repair in place)."""

from __future__ import annotations

import base64
import json
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from qdrant_client import QdrantClient, models

from daemon.snapshot.datafile import decode_records
from tests.integration.harness import Target, vecwal

pytestmark = pytest.mark.integration

Key = tuple[str, str]


def events(rng: random.Random, n: int, tag: str) -> list[dict[str, Any]]:
    """Upserts and deletes of 30 ids in two tenants; ``tag`` marks each version's document."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        rid, tenant = f"r{rng.randrange(30)}", rng.choice(["acme", "globex"])
        if rng.random() < 0.15:
            out.append({"op": "delete", "collection": "docs", "tenant": tenant, "id": rid})
        else:
            out.append({"op": "upsert", "collection": "docs", "tenant": tenant, "id": rid,
                        "vector": [rng.uniform(-1, 1) for _ in range(4)],
                        "document": f"{tag} {i}", "metadata": {"tag": tag}})
    return out


def feed_qdrant(bootstrap: str, topic: str) -> dict[Key, str]:
    """Consume the topic's one partition from the start into an in-process Qdrant collection,
    as an indexer would (upsert a point, delete a point), then read the collection back."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "enable.auto.commit": False})
    qdrant = QdrantClient(":memory:")
    qdrant.create_collection("docs", models.VectorParams(size=4,
                                                         distance=models.Distance.COSINE))
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
        consumer.assign([TopicPartition(topic, 0, 0)])
        seen = 0
        while seen < end:
            msg = consumer.poll(5)
            assert msg is not None and msg.error() is None, msg and msg.error()
            seen += 1
            value = msg.value()
            assert value is not None
            ev = orjson.loads(value)
            if ev["op"] not in ("upsert", "delete"):
                continue
            point = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ev['tenant']}/{ev['id']}"))
            if ev["op"] == "delete":
                qdrant.delete("docs", models.PointIdsList(points=[point]))
            else:
                vector = ev["vector"]
                if isinstance(vector, str):  # re-emitted: base64 of little-endian float32
                    vector = np.frombuffer(base64.b64decode(vector), "<f4").tolist()
                qdrant.upsert("docs", [models.PointStruct(
                    id=point, vector=vector, payload={"tenant": ev["tenant"], "id": ev["id"],
                                                      "document": ev["document"]})])
        points, _ = qdrant.scroll("docs", limit=10_000, with_payload=True)
        return {(p.payload["tenant"], p.payload["id"]): p.payload["document"]
                for p in points if p.payload is not None}
    finally:
        consumer.close()
        qdrant.close()


def replay(stream: list[dict[str, Any]]) -> dict[Key, str]:
    """The oracle: the last event of each key wins; a delete removes."""
    state: dict[Key, str] = {}
    for ev in stream:
        key = (ev["tenant"], ev["id"])
        if ev["op"] == "delete":
            state.pop(key, None)
        else:
            state[key] = ev["document"]
    return state


def test_bad_batch_undone_through_capture(file_target: Target, kafka_topic: Any,
                                          tmp_path: Path, group_id: str) -> None:
    target = Target(file_target.bootstrap, kafka_topic(partitions=1), file_target.storage_url)
    rng = random.Random(16)
    schema = {"op": "collection.put", "collection": "docs",
              "schema": {"dimension": 4, "metric": "cosine"}}
    good1, bad, good2 = events(rng, 80, "good"), events(rng, 30, "bad"), events(rng, 40, "later")
    producer = Producer({"bootstrap.servers": target.bootstrap})
    batches = [("setup", [schema]), ("nightly-41", good1), ("nightly-42", bad),
               ("nightly-43", good2)]
    for batch, evs in batches:  # each batch's messages carry its id, as pipelines tag them
        for ev in evs:
            producer.produce(target.topic, orjson.dumps(ev), ev.get("id", "docs").encode(),
                             headers=[("batch", batch.encode()), ("pipeline", b"embedder")])
    assert producer.flush(30) == 0
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=1.0)
    vecwal("run", "--config", str(cfg), "--until-caught-up")

    done = vecwal("rollback", "--config", str(cfg), "--exclude", "--header", "batch=nightly-42",
                  "--into", f"kafka:{target.topic}", "--json")
    out = json.loads(done.stdout)
    want = replay([*good1, *good2])
    now = replay([*good1, *bad, *good2])
    assert out["report"]["excluded_events"] == len(bad)  # found by the header the log kept
    assert out["emitted"]["records"] == out["report"]["changed"] == sum(
        1 for k in want.keys() | now.keys() if want.get(k) != now.get(k)) > 0

    vecwal("run", "--config", str(cfg), "--until-caught-up")  # the corrections, captured
    restored = tmp_path / "restored"
    vecwal("restore", "--config", str(cfg), "--to", "latest", "--into", f"dir:{restored}")
    got = {(r["tenant"], r["id"]): r["document"] for part in restored.glob("docs/part-*.avro")
           for r in decode_records(part.read_bytes(), str(part))}
    assert got == want
    assert feed_qdrant(target.bootstrap, target.topic) == want
