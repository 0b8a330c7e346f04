"""The Kafka side of capture: consumer settings and the few metadata calls capture needs."""

from __future__ import annotations

import os
import socket
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not marked re-exported
    AdminClient,
    ConfigResource,
    ResourceType,
)

from daemon.config import Config
from daemon.errors import VecwalError
from daemon.kafka_client import admin_settings
from daemon.kafka_logging import serve, with_logger


def consumer_settings(config: Config) -> dict[str, Any]:
    k, c = config.kafka, config.capture
    # librdkafka prefetches up to this much per partition; keep it inside the buffer bound.
    prefetch_kb = max(1024, min(64 * 1024, c.max_buffer_bytes // 8 // 1024))
    settings: dict[str, Any] = {
        "bootstrap.servers": k.bootstrap_servers,
        "group.id": k.group_id,
        "client.id": f"vecwal-{socket.gethostname()}-{os.getpid()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.partition.eof": True,
        "isolation.level": "read_committed",
        "queued.max.messages.kbytes": prefetch_kb,
        "fetch.max.bytes": min(52428800, prefetch_kb * 1024),
        "max.partition.fetch.bytes": min(8 * 1024 * 1024, prefetch_kb * 1024),
        # librdkafka's default waits a whole second before fetching again once the prefetch
        # queue was full: with large events the loop then starves (measured: half the JSON
        # capture rate). Refill as soon as there is room.
        "fetch.queue.backoff.ms": 10,
        "session.timeout.ms": 30000,
        "max.poll.interval.ms": 300000,
    }
    settings.update(k.client)
    return settings


def partitions_of(consumer: Consumer, topics: list[str], timeout: float = 10.0) -> list[TopicPartition]:
    """Every partition of ``topics``; a missing topic is a configuration error."""
    out: list[TopicPartition] = []
    for topic in topics:
        try:
            md = consumer.list_topics(topic, timeout=timeout)
        except KafkaException as exc:
            raise VecwalError(f"cannot read metadata of topic {topic!r}: {exc}",
                              "check [kafka] bootstrap_servers and that the broker is up") from None
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            raise VecwalError(f"topic {topic!r} does not exist on the configured brokers",
                              "create the topic, or fix [kafka] topics in the config")
        out.extend(TopicPartition(topic, p) for p in sorted(tmd.partitions))
    return out


def timestamp_types(config: Config, timeout: float = 10.0) -> dict[str, str]:
    """Each configured topic's ``message.timestamp.type`` (CreateTime or LogAppendTime), read
    with the admin API (DescribeConfigs)."""
    k = config.kafka
    admin = AdminClient(with_logger(admin_settings(k.bootstrap_servers, k.client), "capture"))
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in k.topics]
    out = {}
    try:
        for res, fut in admin.describe_configs(resources, request_timeout=timeout).items():
            entries = fut.result(timeout=timeout)
            out[res.name] = entries["message.timestamp.type"].value
    except (KafkaException, KeyError, TimeoutError) as exc:  # no answer: TimeoutError
        raise VecwalError(f"cannot read the topics' message.timestamp.type: "
                          f"{str(exc) or f'no answer within {timeout:g}s'}",
                          "check [kafka] bootstrap_servers and that capture may "
                          "DescribeConfigs on its topics (an ACL may forbid it)") from None
    finally:
        serve(admin)  # its log lines, before it is dropped
    return out


def high_watermarks(consumer: Consumer, partitions: list[TopicPartition],
                    timeout: float = 10.0) -> dict[tuple[str, int], tuple[int, int]]:
    """(low, high) offsets per partition, asked of the broker now."""
    out = {}
    for tp in partitions:
        lo, hi = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                timeout=timeout, cached=False)
        out[(tp.topic, tp.partition)] = (lo, hi)
    return out


def coordinates(msg: Message) -> tuple[str, int, int]:
    """A fetched message's topic, partition and offset."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset
