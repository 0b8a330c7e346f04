"""A CreateTime topic (Kafka's default) with producers whose clocks disagree, through the real
broker: capture refuses it by default with the fix, and with ``capture.timeline = "capture"``
orders events by capture time, so a producer an hour fast neither hides later writes from
`restore --to now` nor fakes the RPO."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from daemon.snapshot.datafile import decode_records
from tests.integration.harness import Target, vecwal

pytestmark = pytest.mark.integration

HOUR = 3_600_000


@pytest.fixture
def create_time_target(kafka_bootstrap: str, kafka_topic: Any, tmp_path: Path) -> Target:
    return Target(bootstrap=kafka_bootstrap,
                  topic=kafka_topic(partitions=1, config={"message.timestamp.type": "CreateTime"}),
                  storage_url=f"file://{tmp_path / 'repo'}")


def upsert(rid: str, version: str) -> bytes:
    return orjson.dumps({"op": "upsert", "collection": "docs", "id": rid,
                         "vector": [1.0, 2.0, 3.0], "document": version})


def produce_stamped(target: Target, events: list[tuple[bytes, bytes, int]]) -> None:
    """Each (key, value, timestamp) as its own producer would stamp it, in this order."""
    producer = Producer({"bootstrap.servers": target.bootstrap, "linger.ms": 0})
    errors: list[str] = []
    for key, value, stamp in events:
        producer.produce(target.topic, value, key, timestamp=stamp,
                         on_delivery=lambda err, msg: errors.append(str(err)) if err else None)
        assert producer.flush(30) == 0
    assert not errors, errors


def test_a_create_time_topic_is_refused_with_the_fix(create_time_target: Target,
                                                     tmp_path: Path, group_id: str) -> None:
    cfg = create_time_target.write_config(tmp_path / "vecwal.toml", group_id)
    produce_stamped(create_time_target, [(b"x1", upsert("x1", "v1"), int(time.time() * 1000))])
    proc = vecwal("run", "--config", str(cfg), "--until-caught-up", check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert create_time_target.topic in proc.stderr and "CreateTime" in proc.stderr
    assert "message.timestamp.type=LogAppendTime" in proc.stderr
    assert 'capture.timeline = "capture"' in proc.stderr
    assert not list((tmp_path / "repo").glob("log/**/*.avro")), "nothing was captured"


def test_capture_timeline_survives_skewed_producer_clocks(create_time_target: Target,
                                                          tmp_path: Path, group_id: str) -> None:
    target = create_time_target
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, timeline="capture",
                              segment_max_age_s=0.5)
    now = int(time.time() * 1000)
    stamps = {"x1 v1": now - HOUR, "x2": now, "x3": now + HOUR, "x1 v2": now - 2 * HOUR}
    produce_stamped(target, [
        (b"x1", upsert("x1", "v1"), stamps["x1 v1"]),
        (b"x2", upsert("x2", "v1"), stamps["x2"]),
        (b"x3", upsert("x3", "v1"), stamps["x3"]),  # a clock an hour fast
        (b"x1", upsert("x1", "v2"), stamps["x1 v2"]),  # a later write, stamped earlier
    ])
    vecwal("run", "--config", str(cfg), "--until-caught-up", timeout=120)
    after = int(time.time() * 1000)

    status = json.loads(vecwal("status", "--config", str(cfg), "--json").stdout)
    (part,) = status["partitions"]
    assert part["valid_through_ms"] <= after, "valid-through ahead of the wall clock"
    assert part["rpo_seconds"] > 0, "a producer's future stamp faked the RPO"
    assert part["future_stamped"] == 1 and part["last_future_stamped"]["offset"] == 2
    text = vecwal("status", "--config", str(cfg)).stdout
    assert "1 events stamped ahead" in text, text

    out = tmp_path / "now"
    report = json.loads(vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                               f"dir:{out}", "--json").stdout)
    assert report["validation"]["ok"], report["validation"]
    got = {r["id"]: r for f in out.glob("docs/part-*.avro")
           for r in decode_records(f.read_bytes(), str(f))}
    assert sorted(got) == ["x1", "x2", "x3"]
    assert got["x1"]["document"] == "v2", "the later write of x1 is hidden"

    rows = [json.loads(line) for line in vecwal(
        "history", "--config", str(cfg), "--collection", "docs", "--id", "x1",
        "--format", "json").stdout.splitlines() if line.strip()]
    assert [r["offset"] for r in rows] == [0, 3], "in capture order, not producer order"
    from daemon.status import iso_ms

    assert [r["producer_time"] for r in rows] == [iso_ms(stamps["x1 v1"]),
                                                  iso_ms(stamps["x1 v2"])]
    assert rows[0]["timestamp_ms"] <= rows[1]["timestamp_ms"] <= after
