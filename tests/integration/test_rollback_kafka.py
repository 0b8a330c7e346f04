"""vecwal rollback --into kafka:TOPIC against a real broker: the topic receives exactly the
corrective events (catalog changes, then one upsert or delete per record whose state differs),
each with the header vecwal-rollback: <job id>, keyed as the ingestion stream keyed the
record; parsed as capture parses them and applied to the current state, they give the replay
of the history without the excluded events."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from daemon.rows import record_from_event
from tests.component.test_cli_restore import logged_repository, vecwal
from tests.component.test_cli_rollback import bounds, kept
from tests.oracle.history import TOPIC, generate, replay
from tests.oracle.test_rollback import apply_corrections, content

pytestmark = pytest.mark.integration


def consume_all(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: list[Any] = []
        while len(got) < sum(ends.values()):
            msg = consumer.poll(5)
            assert msg is not None, f"{len(got)} of {sum(ends.values())} messages read"
            assert msg.error() is None, msg.error()
            got.append(msg)
        return got
    finally:
        consumer.close()


def test_corrective_events_into_kafka(kafka_bootstrap: str, kafka_topic: Any,
                                      tmp_path: Path) -> None:
    history = generate(11, 240, control_rate=0.05)
    cfg, _ = logged_repository(tmp_path, history)
    cfg.write_text(cfg.read_text().replace("unused:9092", kafka_bootstrap))
    topic = kafka_topic(partitions=3)
    t1, t2, valid = bounds(history)
    done = vecwal("rollback", "--config", str(cfg), "--between", str(t1), str(t2),
                  "--into", f"kafka:{topic}", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    msgs = consume_all(kafka_bootstrap, topic, 3)
    report = out["report"]
    assert out["emitted"]["records"] == report["changed"] > 0
    assert len(msgs) == report["changed"] + out["emitted"]["catalog"]
    job = json.loads(vecwal("jobs", "--config", str(cfg), "--kind", "rollback",
                            "--json").stdout)["jobs"][0]
    assert out["emitted"]["id"] == job["id"] and job["records_written"] == report["changed"]
    assert all(dict(m.headers()) == {"vecwal-rollback": job["id"].encode()} for m in msgs)

    now_recs, now_cat, _ = replay(history, valid)
    want_recs, want_cat, _ = replay(kept(history, t1, t2), valid)
    keys = {(e["collection"], e["tenant"], e["id"]): e["key"] for e in now_recs.values()}
    for m in msgs:  # keyed as the stream keyed the record's last event
        ev = json.loads(m.value())
        if ev["op"] in ("upsert", "delete"):
            want_key = keys.get((ev["collection"], ev["tenant"], ev["id"]))
            assert want_key is None or m.key() == want_key
    now = {k: content(record_from_event(e, TOPIC, 0)) for k, e in now_recs.items()}
    order = sorted(msgs, key=lambda m: m.timestamp()[1])
    apply_corrections(now, now_cat, [(m.key(), json.loads(m.value())) for m in order])
    assert now == {k: content(record_from_event(e, TOPIC, 0)) for k, e in want_recs.items()}
    assert now_cat == want_cat
