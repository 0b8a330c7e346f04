"""``kafka:TOPIC``: re-emit a restored state as change events of the ingestion contract
(DESIGN section 1), so that a pipeline can rebuild a database from it, or vecwal can capture it
again.

What is written:

- every record becomes one ``upsert`` event keyed by its id: collection, tenant, id, vector,
  sparse, document (a JSON object again when it was one), metadata, acl, embedding_model,
  source, event_id, event_time, and the fields outside the contract (``extra``) merged back at
  the top level, so the event parses back, with the same :class:`~daemon.events.EventParser`
  capture uses, to a record with the same content hash (:func:`~daemon.snapshot.datafile.
  record_hash`);
- the catalog becomes ``collection.put`` (with the schema), ``alias.put`` and ``tenant.put``
  (with the settings) events, all keyed by the collection name, so they share one partition in
  that order: a consumer of that partition sees a collection's schema before its aliases and
  tenants;
- ``fmt="json"`` (default) writes orjson values, vectors as base64 of little-endian float32
  (exact, and a third of the size of a list of numbers); ``fmt="avro"`` writes
  ``schemas/change_event.avsc`` binary. The Avro contract cannot carry a JSON-object document,
  fields outside the contract, or a ``source`` that is not ``{uri, chunk, content_sha256}``:
  those only arise in a state captured from a JSON topic, and such a record stops the restore
  with an error naming it rather than being re-emitted with something lost;
- every message carries the header ``vecwal-restore: <restore id>``. The contract ignores
  headers; read-back uses it to tell this restore's messages from anybody else's;
- ``write_events`` produces given change events as they are: a rollback's corrective events
  (``cli_rollback``: ``control_event``, ``upsert_event``, ``delete_event``), under the header
  ``vecwal-rollback: <job id>`` (the sink's ``header`` and ``run_id``). A rollback does not
  read back: the topic holds only corrections, not a state to compare.

Catalog ordering. The executor calls ``write_catalog`` after the last bucket, so, as it is, the
catalog events follow the records in time (their Kafka timestamps are later). That is harmless
for the state: vecwal's own capture does not depend on cross-partition order (an upsert for a
collection whose ``collection.put`` it has not seen yet is captured, and every catalog rule is
last-write-wins by version), so capturing this topic rebuilds exactly the restored state. It is
not what a user rebuilding a *database* wants, though: an indexer that creates the collection
(dimension, metric, index parameters) from ``collection.put`` needs it before the first upsert,
and records can only be emitted as the buckets stream (nothing big is buffered here). The
catalog is known before the first bucket (the executor computes it from the folded log before
``sink.begin()``), so the fix belongs in the executor: call ``sink.write_catalog`` right after
``sink.begin()``, before the buckets.

This sink works in either order. It emits the catalog whenever it is given, read-back checks it
either way, and ``write_catalog`` waits until the catalog events are acknowledged: Kafka orders
only within a partition, and batches for different partitions leave in any order, so without
that wait a record produced after the catalog could still get an earlier timestamp. Called
first, every catalog event is therefore earlier in time than every record, and consumers that
follow timestamps (LogAppendTime topics, as DESIGN section 1 asks) see the schema first.

Timestamps: messages get the producer's current time, not the records' original times.
Rewriting old timestamps would let time-based retention delete the restored events at once,
and the records' original times and offsets are not part of their content anyway (the state
digest does not include them).

The topic must exist: ``begin`` checks it through a metadata listing that cannot auto-create
it, and the producer has ``allow.auto.create.topics=false``. A non-empty topic is appended
to; read-back covers only the offsets this restore wrote (high watermarks at ``begin`` to
high watermarks at ``finish``), and only messages with this restore's header.

Read-back (validation) consumes that range with a fresh consumer, parses every value with
:class:`EventParser`, turns upserts into snapshot records (``record_from_event``) and
recomputes count, per-tenant counts and state digest per collection, so the digests prove that
what Kafka holds parses back to the restored state. Records are parsed without dimension
checks (which would otherwise depend on whether a ``collection.put`` happened to be read
before them); a record whose dimension differs from its collection's schema is logged as a
warning, since a pipeline that knows the schema would quarantine it. The catalog read back
must equal the catalog written, or read-back raises :class:`IntegrityError`.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fastavro
import numpy as np
import orjson
import structlog
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from daemon.errors import BadEvent, IntegrityError, VecwalError
from daemon.events import CHANGE_EVENT_SCHEMA, CONTRACT_FIELDS, CONTROL_OPS, EventParser
from daemon.kafka_client import check_brokers
from daemon.kafka_logging import with_logger
from daemon.restore.sinks import WrittenState
from daemon.rows import StateDigest, record_from_event
from daemon.snapshot.state import Catalog

log = structlog.get_logger("vecwal.restore.kafka")

FORMATS = ("json", "avro")
HEADER = "vecwal-restore"
SOURCE_FIELDS = ("uri", "chunk", "content_sha256")
_LONG = 1 << 63
_READ_BACK_MAX_EVENT_BYTES = 1 << 40
"""Read-back parses what Kafka accepted; Kafka's own size limits applied when producing."""


class KafkaSink:
    """Re-emits a restore as change events into an existing Kafka topic."""

    def __init__(self, bootstrap_servers: str, topic: str, *, fmt: str = "json",
                 client: dict[str, str] | None = None, timeout_s: float = 60.0,
                 header: str = HEADER, run_id: str | None = None) -> None:
        """``header``: the name of the header every message carries, its value ``run_id``
        (default: a new restore id)."""
        if fmt not in FORMATS:
            raise VecwalError(f"kafka sink format {fmt!r} is not one of {', '.join(FORMATS)}",
                              "use json or avro, the formats of the ingestion contract")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.fmt = fmt
        self.client = dict(client or {})
        self.timeout_s = timeout_s
        self.name = f"kafka:{topic}"
        self.restore_id = run_id or uuid.uuid4().hex
        self.produced = 0
        self.catalog_read_back: dict[str, Any] | None = None
        """The live catalog the topic's control events give, after ``read_back``."""
        self._headers = [(header, self.restore_id.encode())]
        self._producer: Any = None
        self._deliveries = _Deliveries()
        self._start: dict[int, int] = {}
        self._end: dict[int, int] | None = None
        self._catalog: dict[str, Any] | None = None
        self._avro_buf = io.BytesIO()

    # -- the Sink protocol ------------------------------------------------------------------
    def begin(self) -> None:
        partitions = self._partitions()
        self._start = self._high_watermarks(partitions)
        if any(self._start.values()):
            log.warning("restore topic is not empty; appending to it", topic=self.topic,
                        offsets=self._start)
        settings = self._settings()
        settings.update({
            "enable.idempotence": True,  # implies acks=all and no duplicates on retry
            "acks": "all",
            "allow.auto.create.topics": False,
            "on_delivery": self._deliveries,  # not a bound method: no sink<->producer cycle
        })
        settings.setdefault("linger.ms", 20)
        settings.setdefault("compression.type", "lz4")
        try:
            self._producer = Producer(with_logger(settings, "kafka-sink"))  # polled, flushed
        except KafkaException as exc:
            raise VecwalError(f"cannot create a Kafka producer for topic {self.topic!r}: "
                              f"{_kafka_error(exc)}",
                              "check [kafka] client settings") from None

    def write_bucket(self, collection: str, bucket: int,
                     records: Iterable[dict[str, Any]]) -> WrittenState:
        digest = StateDigest()
        tenants: dict[str, int] = {}
        encode = self._encode_avro if self.fmt == "avro" else _encode_json
        for rec in records:
            digest.add(rec)
            tenants[rec["tenant"]] = tenants.get(rec["tenant"], 0) + 1
            value = encode(upsert_event(rec, self.fmt))
            self._produce(rec["id"].encode(), value)
        self._require_producer().poll(0)
        self._raise_failure()
        return WrittenState(digest.count, digest.hex, tenants)

    def write_catalog(self, catalog: dict[str, Any]) -> None:
        self._catalog = _catalog_part(catalog)
        encode = self._encode_avro if self.fmt == "avro" else _encode_json
        for event in catalog_events(catalog, self.fmt):
            self._produce(event["collection"].encode(), encode(event))
        # Acknowledged before anything produced after it is sent: Kafka orders partitions only
        # by time, and batches of different partitions leave in any order.
        self._flush()
        log.info("catalog re-emitted", topic=self.topic,
                 collections=len(self._catalog["collections"]),
                 restored_to=catalog.get("restored_to"))

    def write_events(self, events: Iterable[tuple[bytes, dict[str, Any]]],
                     acknowledged: bool = False) -> int:
        """Produce change events as they are ((message key, event of the contract): a
        rollback's corrective events, ``upsert_event``, ``delete_event``, ``control_event``),
        in order; the count produced. Acknowledged by ``finish``, or before this returns with
        ``acknowledged`` (so that what is produced next is later in time, as
        ``write_catalog``)."""
        encode = self._encode_avro if self.fmt == "avro" else _encode_json
        n = 0
        for key, event in events:
            self._produce(key, encode(event))
            n += 1
        if acknowledged:
            self._flush()
        return n

    def finish(self) -> None:
        self._flush()
        self._producer = None
        delivered = self._deliveries.delivered
        if delivered != self.produced:
            raise VecwalError(f"Kafka topic {self.topic!r}: {self.produced} messages produced, "
                              f"{delivered} acknowledged", "restore again into a new topic")
        end = self._high_watermarks(self._partitions())
        short = {p: (end.get(p, 0), want) for p, want in self._deliveries.end.items()
                 if end.get(p, 0) < want}
        if short:
            raise VecwalError(f"Kafka topic {self.topic!r}: high watermarks below acknowledged "
                              f"offsets (partition: (high, acknowledged)) {short}",
                              "was the topic deleted or truncated during the restore?")
        self._end = end
        log.info("restore re-emitted", topic=self.topic, messages=self.produced,
                 restore_id=self.restore_id)

    def read_back(self) -> dict[str, WrittenState]:
        """Consume what this restore wrote, parse it as capture would, and recompute the state
        per collection."""
        if self._end is None:
            raise VecwalError(f"{self.name}: read_back before finish",
                              "read back only a completed restore")
        ranges = {p: (self._start.get(p, 0), hi) for p, hi in self._end.items()
                  if hi > self._start.get(p, 0)}
        parser = EventParser(_READ_BACK_MAX_EVENT_BYTES)
        digests: dict[str, StateDigest] = {}
        tenants: dict[str, dict[str, int]] = {}
        dims: dict[str, set[int]] = {}
        catalog = Catalog()
        foreign = 0
        for msg in self._consume(ranges):
            headers = msg.headers() or []
            if (HEADER, self._headers[0][1]) not in headers:
                foreign += 1
                continue
            p, offset = msg.partition(), msg.offset()
            try:
                ev = parser.parse(msg.value(), self.fmt, key=msg.key(), offset=offset,
                                  timestamp=msg.timestamp()[1])
            except BadEvent as exc:
                raise IntegrityError(
                    f"message {self.topic}/{p}@{offset} of this restore does not parse back: "
                    f"{exc.message}", "this is a bug in the kafka sink; restore into dir:PATH"
                ) from None
            op, coll = ev["op"], ev["collection"]
            if op == "upsert":
                rec = record_from_event(ev, self.topic, p)
                digests.setdefault(coll, StateDigest()).add(rec)
                per = tenants.setdefault(coll, {})
                per[rec["tenant"]] = per.get(rec["tenant"], 0) + 1
                if rec["dimension"] is not None:
                    dims.setdefault(coll, set()).add(rec["dimension"])
            elif op in CONTROL_OPS:
                catalog.apply(ev, self.topic, p)
                parser.dimensions.clear()  # parse records alike, whatever was read first
            else:
                raise IntegrityError(f"message {self.topic}/{p}@{offset} of this restore is "
                                     f"a {op!r}; a restore writes upserts and catalog puts only")
        if foreign:
            log.warning("restore topic holds messages of other producers in the restored "
                        "range; they are not part of the read-back", topic=self.topic,
                        messages=foreign)
        live = catalog.live()
        self.catalog_read_back = live
        got = _catalog_part(live)
        if self._catalog is not None and got != self._catalog:
            differ = [k for k in ("collections", "aliases", "tenants") if got[k] != self._catalog[k]]
            raise IntegrityError(f"the catalog events in Kafka topic {self.topic!r} do not give "
                                 f"the catalog the restore wrote (differing: {', '.join(differ)})",
                                 "restore again into a new topic")
        for coll, seen in sorted(dims.items()):
            want = live["collections"].get(coll, {}).get("dimension")
            if want is not None and seen - {want}:
                log.warning("records whose dimension differs from the collection schema; a "
                            "pipeline that knows the schema will quarantine them",
                            collection=coll, schema_dimension=want, dimensions=sorted(seen))
        return {c: WrittenState(d.count, d.hex, dict(sorted(tenants[c].items())))
                for c, d in sorted(digests.items())}

    # -- Kafka ------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        settings.update(self.client)
        return settings

    def _consumer(self) -> Any:
        settings = self._settings()
        settings.update({
            "group.id": f"vecwal-restore-read-back-{self.restore_id}",  # never joined/committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "error",  # a range deleted under us is an error, not a skip
            "allow.auto.create.topics": False,
        })
        return Consumer(with_logger(settings, "kafka-sink"))  # its close() serves the log

    def _partitions(self) -> list[int]:
        """The topic's partitions, from a metadata listing of all topics (asking for the one
        topic could auto-create it on brokers with auto.create.topics.enable), read by the
        start-up check that names a wrong password, CA or security.protocol
        (:func:`~daemon.kafka_client.check_brokers`)."""
        md = check_brokers(self.bootstrap_servers, self.client, timeout=min(self.timeout_s, 15))
        tmd = md.topics.get(self.topic)
        if tmd is None:
            raise VecwalError(
                f"Kafka topic {self.topic!r} does not exist on {self.bootstrap_servers}",
                "create it first with the partitions and retention the rebuilding pipeline "
                f"needs, e.g. kafka-topics.sh --create --topic {self.topic} --partitions 3 "
                "--config message.timestamp.type=LogAppendTime; vecwal never creates topics")
        if tmd.error is not None or not tmd.partitions:
            raise VecwalError(f"Kafka topic {self.topic!r} is not usable: {tmd.error}",
                              "check the topic's state and the ACLs of the configured client")
        return sorted(tmd.partitions)

    def _high_watermarks(self, partitions: list[int]) -> dict[int, int]:
        consumer = self._consumer()
        try:
            out = {}
            for p in partitions:
                _, hi = consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                       timeout=self.timeout_s, cached=False)
                out[p] = int(hi)
            return out
        except KafkaException as exc:
            raise VecwalError(f"cannot read the offsets of Kafka topic {self.topic!r}: "
                              f"{_kafka_error(exc)}", "check that the brokers are up") from None
        finally:
            consumer.close()

    def _consume(self, ranges: dict[int, tuple[int, int]]) -> Iterator[Any]:
        """Every message at offsets [start, end) of each partition, any order across them."""
        if not ranges:
            return
        consumer = self._consumer()
        try:
            consumer.assign([TopicPartition(self.topic, p, lo) for p, (lo, _) in ranges.items()])
            pending = {p: hi for p, (_, hi) in ranges.items()}
            progress = time.monotonic()
            while pending:
                batch = consumer.consume(1000, timeout=0.5)
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        raise VecwalError(f"cannot read back Kafka topic {self.topic!r}: "
                                          f"{_describe(err)}",
                                          "was the topic deleted, or its retention too short?")
                    p, offset = msg.partition(), msg.offset()
                    end = pending.get(p)
                    if end is None or offset >= end:
                        continue
                    progress = time.monotonic()
                    if offset + 1 >= end:
                        del pending[p]
                    yield msg
                if not batch:
                    # The last offsets may be control records (transaction markers of another
                    # producer), which are never returned: the position says we are past them.
                    for tp in consumer.position([TopicPartition(self.topic, p) for p in pending]):
                        if tp.offset >= pending[tp.partition]:
                            del pending[tp.partition]
                    if pending and time.monotonic() - progress > self.timeout_s:
                        raise VecwalError(
                            f"reading back Kafka topic {self.topic!r}: nothing for "
                            f"{self.timeout_s:.0f} s, still expecting offsets up to {pending}",
                            "check that the brokers are up")
        finally:
            consumer.close()

    def _produce(self, key: bytes, value: bytes) -> None:
        producer = self._require_producer()
        while True:
            try:
                producer.produce(self.topic, value, key, headers=self._headers)
                break
            except BufferError:  # the local queue is full: serve delivery reports, retry
                producer.poll(0.1)
                self._raise_failure()
            except KafkaException as exc:
                raise VecwalError(
                    f"cannot produce to Kafka topic {self.topic!r} (key {key!r}, "
                    f"{len(value)} bytes): {_kafka_error(exc)}",
                    "for a message over the size limit, raise message.max.bytes in [kafka] "
                    "client and the topic's max.message.bytes") from None
        self.produced += 1
        if self.produced % 256 == 0:
            producer.poll(0)
            self._raise_failure()

    def _flush(self) -> None:
        """Wait for every produced message to be acknowledged, as long as progress is made."""
        producer = self._require_producer()
        remaining = -1
        while True:
            left = producer.flush(self.timeout_s)
            self._raise_failure()
            if left == 0:
                return
            if 0 <= remaining <= left:
                raise VecwalError(
                    f"{left} messages to Kafka topic {self.topic!r} were not delivered within "
                    f"{self.timeout_s:.0f} s", "check that the brokers are up and reachable; the "
                    "topic may hold a partial restore: restore again into a new topic")
            remaining = left

    def _raise_failure(self) -> None:
        failure = self._deliveries.failure
        if failure is not None:
            raise VecwalError(f"Kafka did not accept a message for topic {self.topic!r}: "
                              f"{failure}",
                              "fix the cause (size limits, ACLs, broker health); the topic may "
                              "hold a partial restore: restore again into a new topic")

    def _require_producer(self) -> Any:
        if self._producer is None:
            raise VecwalError(f"{self.name}: not begun, or already finished",
                              "call begin() before writing and finish() once")
        return self._producer

    def _encode_avro(self, event: dict[str, Any]) -> bytes:
        buf = self._avro_buf
        buf.seek(0)
        buf.truncate()
        fastavro.schemaless_writer(buf, CHANGE_EVENT_SCHEMA, event)
        return buf.getvalue()


class _Deliveries:
    """The producer's delivery reports: the first failure, acknowledgements, and the end
    offset (last acknowledged + 1) per partition."""

    def __init__(self) -> None:
        self.failure: str | None = None
        self.delivered = 0
        self.end: dict[int, int] = {}

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            if self.failure is None:
                self.failure = f"{_describe(err)} (message key {msg.key()!r})"
            return
        self.delivered += 1
        p = msg.partition()
        self.end[p] = max(self.end.get(p, 0), msg.offset() + 1)


# -- events -----------------------------------------------------------------------------------
def upsert_event(rec: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The ``upsert`` change event of a snapshot record, ready for orjson (``fmt="json"``) or
    for ``change_event.avsc`` (``fmt="avro"``). Raises VecwalError when Avro cannot carry the
    record without loss."""
    avro = fmt == "avro"
    ev: dict[str, Any] = {"op": "upsert", "collection": rec["collection"],
                          "tenant": rec["tenant"], "id": rec["id"]}
    vector = rec.get("vector")
    if vector is not None:
        ev["vector"] = vector if avro else base64.b64encode(vector).decode()
    indices, values = rec.get("sparse_indices"), rec.get("sparse_values")
    if indices is not None:
        values = values or b""
        ev["sparse"] = {"indices": np.frombuffer(indices, dtype="<u4").tolist(),
                        "values": values if avro else base64.b64encode(values).decode()}
    document = rec.get("document")
    if document is not None:
        if rec.get("document_is_json"):
            if avro:
                raise _lossy(rec, "its document is a JSON object, which Avro values carry only "
                                  "as text")
            ev["document"] = orjson.Fragment(document)
        else:
            ev["document"] = document
    metadata = rec.get("metadata")
    if metadata is not None:
        ev["metadata"] = metadata if avro else orjson.Fragment(metadata)
    for name in ("acl", "embedding_model"):
        if rec.get(name) is not None:
            ev[name] = rec[name]
    source = rec.get("source")
    if source is not None:
        ev["source"] = _avro_source(rec, source) if avro else orjson.Fragment(source)
    for name in ("event_id", "event_time"):
        if rec.get(name) is not None:
            ev[name] = rec[name]
    extra = rec.get("extra")
    if extra is not None:
        if avro:
            raise _lossy(rec, "it has fields outside the contract, which Avro values cannot hold")
        fields = orjson.loads(extra)
        if not isinstance(fields, dict) or not CONTRACT_FIELDS.isdisjoint(fields):
            raise IntegrityError(f"record {_name(rec)}: extra is not an object of non-contract "
                                 f"fields: {extra[:200]}", "run `vecwal verify --deep`")
        ev.update(fields)  # after the contract fields: the parser keeps their order
    return ev


def delete_event(collection: str, tenant: str, record_id: str) -> dict[str, Any]:
    """The ``delete`` change event of a record."""
    return {"op": "delete", "collection": collection, "tenant": tenant, "id": record_id}


def control_event(event: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A catalog event (``schema`` and ``settings`` as objects) ready for ``fmt``: Avro values
    carry them as JSON text."""
    if fmt != "avro":
        return event
    return {k: orjson.dumps(v).decode() if k in ("schema", "settings") else v
            for k, v in event.items()}


def catalog_events(catalog: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    """collection.put, then alias.put, then tenant.put events for a restore's catalog."""
    def obj(value: dict[str, Any]) -> Any:
        return orjson.dumps(value).decode() if fmt == "avro" else value

    events: list[dict[str, Any]] = []
    for coll, schema in sorted(catalog.get("collections", {}).items()):
        events.append({"op": "collection.put", "collection": coll, "schema": obj(schema)})
    for alias, coll in sorted(catalog.get("aliases", {}).items()):
        events.append({"op": "alias.put", "collection": coll, "alias": alias})
    for coll, tenants in sorted(catalog.get("tenants", {}).items()):
        for tenant, settings in sorted(tenants.items()):
            events.append({"op": "tenant.put", "collection": coll, "tenant": tenant,
                           "settings": obj(settings or {})})
    return events


def _encode_json(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def _avro_source(rec: dict[str, Any], text: str) -> dict[str, Any]:
    """The Avro ``Source`` record, if it parses back to exactly ``text``."""
    src = orjson.loads(text)
    if isinstance(src, dict) and set(src) <= set(SOURCE_FIELDS):
        uri, chunk, sha = src.get("uri"), src.get("chunk"), src.get("content_sha256")
        long_chunk = isinstance(chunk, int) and not isinstance(chunk, bool) \
            and -_LONG <= chunk < _LONG
        typed = (uri is None or isinstance(uri, str)) and (sha is None or isinstance(sha, str)) \
            and (chunk is None or long_chunk)
        out = {"uri": uri, "chunk": chunk, "content_sha256": sha}
        if typed and orjson.dumps({k: v for k, v in out.items() if v is not None}).decode() == text:
            return out
    raise _lossy(rec, "its source is not {uri, chunk, content_sha256} in that order, the Avro "
                      "Source record")


def _lossy(rec: dict[str, Any], why: str) -> VecwalError:
    return VecwalError(f"record {_name(rec)} cannot be re-emitted as Avro (change_event.avsc) "
                       f"without loss: {why}",
                       "re-emit this state as JSON (the kafka sink's fmt='json'): it carries "
                       "every field; the topic may hold a partial restore")


def _name(rec: dict[str, Any]) -> str:
    return f"{rec['collection']}/{rec['tenant']}/{rec['id']}"


def _catalog_part(catalog: dict[str, Any]) -> dict[str, Any]:
    """collections, aliases and tenants (collections with no tenant left out): what the
    control events carry, in a form the read-back catalog compares with."""
    tenants = {c: dict(ts) for c, ts in catalog.get("tenants", {}).items() if ts}
    return {"collections": dict(catalog.get("collections", {})),
            "aliases": dict(catalog.get("aliases", {})), "tenants": tenants}


def _kafka_error(exc: KafkaException) -> str:
    return _describe(exc.args[0]) if exc.args else str(exc)


def _describe(err: Any) -> str:
    """``MSG_SIZE_TOO_LARGE: Broker: Message size too large`` for a KafkaError."""
    try:
        return f"{err.name()}: {err.str()}"
    except AttributeError:
        return str(err)
