"""The test services themselves: a real Kafka broker and real S3 servers (tests/services.py)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

pytestmark = pytest.mark.integration


def _produce(
    bootstrap: str, topic: str, records: dict[bytes, bytes], **produce_kw: Any
) -> dict[bytes, tuple[int, int]]:
    """Produce records (key -> value); returns key -> (partition, offset) from delivery reports."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    delivered: dict[bytes, tuple[int, int]] = {}
    errors: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[msg.key()] = (msg.partition(), msg.offset())

    for key, value in records.items():
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery, **produce_kw)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert errors == []
    return delivered


def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 30) -> list[Any]:
    """Consume from the start with a fresh consumer group until `expected` messages arrived."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"vecwal-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
        # nothing beyond what was produced
        extra = consumer.poll(0.5)
        assert extra is None, f"unexpected extra message {extra.key()!r}"
    finally:
        consumer.close()
    return got


def test_kafka_produce_consume(kafka_bootstrap: str, kafka_topic: Any) -> None:
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

    topic = kafka_topic(partitions=3)
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(10)}
    before_ms = int(time.time() * 1000)
    # a CreateTime far in the past: the topic's LogAppendTime must replace it
    delivered = _produce(kafka_bootstrap, topic, sent, timestamp=1_000)
    after_ms = int(time.time() * 1000)
    assert set(delivered) == set(sent)
    assert len({p for p, _ in delivered.values()}) > 1, "all keys landed in one partition"

    got = _consume(kafka_bootstrap, topic, expected=len(sent))
    assert {m.key(): m.value() for m in got} == sent
    for m in got:
        assert (m.partition(), m.offset()) == delivered[m.key()]
        ts_type, ts = m.timestamp()
        assert ts_type == TIMESTAMP_LOG_APPEND_TIME
        assert before_ms - 5_000 <= ts <= after_ms + 5_000


def test_kafka_topic_factory_config(kafka_admin: Any, kafka_topic: Any) -> None:
    from confluent_kafka.admin import ConfigResource

    default = kafka_topic()
    compacted = kafka_topic(partitions=1, config={"cleanup.policy": "compact"})
    assert default != compacted
    md = kafka_admin.list_topics(timeout=10)
    assert len(md.topics[default].partitions) == 3
    assert len(md.topics[compacted].partitions) == 1

    resources = [ConfigResource("topic", default), ConfigResource("topic", compacted)]
    configs = {
        r.name: f.result(timeout=10) for r, f in kafka_admin.describe_configs(resources).items()
    }
    assert configs[default]["message.timestamp.type"].value == "LogAppendTime"
    assert configs[default]["cleanup.policy"].value == "delete"
    assert configs[compacted]["message.timestamp.type"].value == "LogAppendTime"
    assert configs[compacted]["cleanup.policy"].value == "compact"


def test_s3_put_get_list(s3_client: Any, s3_bucket: str) -> None:
    assert s3_client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0, "bucket not empty"

    bodies = {f"seg/{i:04d}.avro": f"segment {i} ".encode() * (i + 1) for i in range(5)}
    for key, body in bodies.items():
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    s3_client.put_object(Bucket=s3_bucket, Key="manifest.json", Body=b"{}")

    for key, body in bodies.items():
        assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == body

    listed: list[str] = []
    pages = 0
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(
        Bucket=s3_bucket, Prefix="seg/", PaginationConfig={"PageSize": 2}
    ):
        pages += 1
        listed += [o["Key"] for o in page.get("Contents", [])]
    assert listed == sorted(bodies)
    assert pages == 3

    ranged = s3_client.get_object(Bucket=s3_bucket, Key="seg/0001.avro", Range="bytes=8-9")
    assert ranged["Body"].read() == bodies["seg/0001.avro"][8:10]

    s3_client.put_object(Bucket=s3_bucket, Key="lock", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3_client.put_object(Bucket=s3_bucket, Key="lock", Body=b"second", IfNoneMatch="*")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3_client.get_object(Bucket=s3_bucket, Key="lock")["Body"].read() == b"first"


def test_s3_restart_keeps_data(s3_service: Any, s3_client: Any, s3_bucket: str) -> None:
    if not s3_service.controllable:
        pytest.skip(f"S3 from {s3_service.source} is not controlled by the tests")
    body = uuid.uuid4().bytes * 1000
    s3_client.put_object(Bucket=s3_bucket, Key="before-outage.bin", Body=body)
    endpoint = s3_service.endpoint_url

    s3_service.stop()
    impatient = s3_service.client(retries={"max_attempts": 1}, connect_timeout=1)
    with pytest.raises(EndpointConnectionError):
        impatient.head_object(Bucket=s3_bucket, Key="before-outage.bin")

    s3_service.start()
    assert s3_service.endpoint_url == endpoint
    got = s3_client.get_object(Bucket=s3_bucket, Key="before-outage.bin")["Body"].read()
    assert got == body
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["before-outage.bin"]


@pytest.mark.slow
def test_kafka_restart_keeps_data(kafka_service: Any, kafka_topic: Any) -> None:
    if not kafka_service.controllable:
        pytest.skip(f"Kafka from {kafka_service.source} is not controlled by the tests")
    topic = kafka_topic(partitions=2)
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(5)}
    _produce(kafka_service.bootstrap, topic, sent)
    bootstrap = kafka_service.bootstrap

    kafka_service.restart()
    assert kafka_service.bootstrap == bootstrap
    got = _consume(kafka_service.bootstrap, topic, expected=len(sent))
    assert {m.key(): m.value() for m in got} == sent


def _listening_ports(pid: int) -> set[tuple[str, int]]:
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN}


@pytest.mark.slow
def test_seaweedfs_binds_only_loopback_and_restart_keeps_data(
    seaweedfs_service: Any, seaweedfs_client: Any, seaweedfs_lock_bucket: str
) -> None:
    """Every SeaweedFS port is on 127.0.0.1 (its filer port deletes locked versions directly),
    and a stop and start keeps the ports, the data and the Object Lock configuration."""
    server = seaweedfs_service.server
    listening = _listening_ports(server.pid)
    assert {port for _, port in listening} >= set(server.ports.values())
    assert {ip for ip, _ in listening} == {"127.0.0.1"}
    body = uuid.uuid4().bytes * 1000
    seaweedfs_client.put_object(Bucket=seaweedfs_lock_bucket, Key="before-restart.bin", Body=body)
    endpoint = seaweedfs_service.endpoint_url

    seaweedfs_service.stop()
    seaweedfs_service.start()
    assert seaweedfs_service.endpoint_url == endpoint
    got = seaweedfs_client.get_object(Bucket=seaweedfs_lock_bucket, Key="before-restart.bin")
    assert got["Body"].read() == body
    lock = seaweedfs_client.get_object_lock_configuration(Bucket=seaweedfs_lock_bucket)
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
