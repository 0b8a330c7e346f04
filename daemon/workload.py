"""A realistic ingestion stream for demos, tests and benchmarks: several collections and
tenants, upserts and re-upserts with drifting vectors, deletes, schema and alias changes, tenant
settings, and (when asked) bad events of every kind capture must quarantine.

Deterministic for a given seed. Each generated event says what capture should make of it.
"""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import fastavro
import numpy as np
import orjson
from confluent_kafka import Producer

from daemon.events import CHANGE_EVENT_SCHEMA
from daemon.kafka_logging import with_logger

BAD_KINDS = ("unparseable", "unknown_op", "missing_field", "wrong_dimension", "non_finite",
             "bad_vector", "oversize")


@dataclass(frozen=True)
class GeneratedEvent:
    key: bytes
    value: bytes
    event: dict[str, Any] | None
    """The event as a JSON-ready dict (None for raw garbage)."""
    bad: str | None = None
    """The quarantine reason capture must give, or None for a valid event."""


@dataclass
class Workload:
    seed: int = 7
    collections: dict[str, int] = field(default_factory=lambda: {"docs": 64, "images": 32})
    tenants: list[str] = field(default_factory=lambda: ["acme", "globex", "initech"])
    id_space: int = 500
    bad_rate: float = 0.0
    fmt: str = "json"
    oversize_bytes: int = 300_000
    """Under Kafka's default 1 MB message limit; set capture.max_event_bytes below it."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        self.live: dict[tuple[str, str], set[str]] = {}
        self._model_version = {c: 1 for c in self.collections}

    # -- catalog ----------------------------------------------------------------------------
    def preamble(self) -> list[GeneratedEvent]:
        """collection.put, alias.put and tenant.put for every collection and tenant."""
        out = []
        for coll, dim in self.collections.items():
            out.append(self._control(coll, {"op": "collection.put", "collection": coll,
                                            "schema": self.schema(coll, dim)}))
            out.append(self._control(coll, {"op": "alias.put", "collection": coll,
                                            "alias": f"{coll}-live"}))
            for tenant in self.tenants:
                out.append(self._control(coll, {"op": "tenant.put", "collection": coll,
                                                "tenant": tenant,
                                                "settings": {"tier": self.rng.choice(
                                                    ["gold", "silver", "bronze"])}}))
        return out

    def schema(self, coll: str, dim: int) -> dict[str, Any]:
        return {"dimension": dim, "metric": "cosine",
                "index": {"type": "hnsw", "m": 16, "ef_construct": 100},
                "metadata_fields": {"lang": "keyword", "rank": "integer"},
                "embedding_model": {"name": "all-MiniLM-L6-v2",
                                    "version": str(self._model_version[coll])},
                "ingestion": {"chunk_size": 512, "chunk_overlap": 64}}

    def schema_change(self, coll: str) -> GeneratedEvent:
        """A new embedding model version for ``coll`` (same dimension)."""
        self._model_version[coll] += 1
        return self._control(coll, {"op": "collection.put", "collection": coll,
                                    "schema": self.schema(coll, self.collections[coll])})

    # -- the stream -------------------------------------------------------------------------
    def events(self, n: int) -> Iterator[GeneratedEvent]:
        for _ in range(n):
            if self.bad_rate and self.rng.random() < self.bad_rate:
                yield self.bad_event(self.rng.choice(BAD_KINDS))
                continue
            coll = self.rng.choice(list(self.collections))
            tenant = self.rng.choice(self.tenants)
            live = self.live.setdefault((coll, tenant), set())
            roll = self.rng.random()
            if live and roll < 0.12:
                rid = self.rng.choice(sorted(live))
                live.discard(rid)
                yield self._encode(rid.encode(), {"op": "delete", "collection": coll,
                                                  "tenant": tenant, "id": rid})
                continue
            rid = f"doc-{self.rng.randrange(self.id_space)}#{self.rng.randrange(4)}"
            live.add(rid)
            yield self._encode(rid.encode(), self.upsert(coll, tenant, rid))

    def upsert(self, coll: str, tenant: str, rid: str, dim: int | None = None) -> dict[str, Any]:
        dim = dim or self.collections[coll]
        vec = self.np_rng.standard_normal(dim).astype(np.float32)
        vec /= np.linalg.norm(vec)
        return {
            "op": "upsert", "collection": coll, "tenant": tenant, "id": rid,
            "vector": vec.tolist(), "document": f"chunk {rid} of {coll} for {tenant}",
            "metadata": {"lang": self.rng.choice(["en", "de", "fr"]),
                         "rank": self.rng.randrange(10)},
            "acl": [f"g:{tenant}", f"u:{self.rng.choice(['ann', 'bob', 'eve'])}"],
            "embedding_model": {"name": "all-MiniLM-L6-v2",
                                "version": str(self._model_version.get(coll, 1))},
            "source": {"uri": f"s3://corpus/{coll}/{rid.split('#')[0]}.pdf",
                       "chunk": int(rid.split("#")[1]), "content_sha256": uuid.UUID(
                           int=self.rng.getrandbits(128)).hex * 2},
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "event_time": "2026-11-25T14:03:07.120Z",
        }

    def bad_event(self, kind: str) -> GeneratedEvent:
        coll = next(iter(self.collections))
        base = self.upsert(coll, self.tenants[0], f"bad-{self.rng.randrange(10**9)}#0")
        if kind == "unparseable":
            return GeneratedEvent(b"garbage", b"{\"op\": \"upsert\", truncated", None, kind)
        if kind == "unknown_op":
            base["op"] = "merge"
        elif kind == "missing_field":
            del base["id"]
        elif kind == "wrong_dimension":
            base["vector"] = base["vector"][:-1]
        elif kind == "non_finite":
            base["vector"][0] = 1e39  # not representable in float32: infinity
        elif kind == "bad_vector":  # numbers as JSON strings; in Avro, bytes that are no float32s
            base["vector"] = ([str(v) for v in base["vector"]] if self.fmt == "json"
                              else b"\x00\x00\x80")
        elif kind == "oversize":
            base["document"] = "x" * self.oversize_bytes
        ev = self._encode(str(base.get("id", "none")).encode(), base)
        return GeneratedEvent(ev.key, ev.value, base, kind)

    # -- encoding ---------------------------------------------------------------------------
    def _control(self, coll: str, event: dict[str, Any]) -> GeneratedEvent:
        return self._encode(coll.encode(), event)

    def _encode(self, key: bytes, event: dict[str, Any]) -> GeneratedEvent:
        if self.fmt == "avro":
            return GeneratedEvent(key, to_avro(event), event)
        return GeneratedEvent(key, orjson.dumps(event), event)


def to_avro(event: dict[str, Any]) -> bytes:
    """The Avro (change_event.avsc) encoding of a JSON-shaped event."""
    ev = dict(event)
    if isinstance(ev.get("vector"), list):
        ev["vector"] = np.asarray(ev["vector"], dtype="<f4").tobytes()
    for name in ("metadata", "schema", "settings"):
        if isinstance(ev.get(name), dict):
            ev[name] = orjson.dumps(ev[name]).decode()
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, CHANGE_EVENT_SCHEMA, ev)
    return buf.getvalue()


@dataclass(frozen=True)
class Produced:
    """Where one generated event landed in Kafka."""

    partition: int
    offset: int
    timestamp: int
    event: GeneratedEvent


def produce(bootstrap: str, topic: str, events: Iterable[GeneratedEvent],
            rate_per_s: float | None = None, partitions: list[int] | None = None,
            client: dict[str, str] | None = None) -> list[Produced]:
    """Produce as an ordinary producer does (batched, linger.ms=5); each event to the
    partition its key hashes to, or to ``partitions`` in turn. ``client``: more librdkafka
    properties (a secured listener's security.protocol, sasl.*, ssl.ca.location)."""
    producer = Producer(with_logger({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                     "message.max.bytes": 10_000_000,
                                     "enable.idempotence": True, **(client or {})}, "workload"))
    out: list[Produced] = []
    errors: list[str] = []

    def report(err: Any, msg: Any, *, ev: GeneratedEvent) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            out.append(Produced(msg.partition(), msg.offset(), msg.timestamp()[1], ev))

    began = time.monotonic()
    for i, ev in enumerate(events):
        while True:
            try:
                if partitions is None:
                    producer.produce(topic, ev.value, ev.key, on_delivery=partial(report, ev=ev))
                else:
                    producer.produce(topic, ev.value, ev.key, on_delivery=partial(report, ev=ev),
                                     partition=partitions[i % len(partitions)])
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if rate_per_s:
            ahead = (i + 1) / rate_per_s - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
    assert producer.flush(60) == 0, "producer could not deliver everything"
    assert not errors, errors[:3]
    return sorted(out, key=lambda p: (p.partition, p.offset))
