"""CaptureLoop: the Kafka ingestion stream into durable change-log segments, exactly once.

Commit order (DESIGN section 3; every step below is where it says, keep it true):

1. consume a batch: ``consumer.consume(num_messages=batch_size)``       -> ``_consume_batch``
2. parse and validate each event: plain upserts and deletes, and the
   common bad events, by the native codec, all others by the Python
   parser; a bad one becomes a quarantine entry of its segment, with raw
   bytes, coordinates, reason and detail                                 -> ``_take``
3. append to the partition's open segment (memory, bounded by
   ``capture.max_buffer_bytes``: above it every partition is paused;
   a partition whose source does not answer is held at that event)     -> ``FlowControl``
4. when a segment is due (records, bytes or age ``segment_max_age_s``)
   seal it, then make it durable off the loop thread:
   the segment's quarantine object (one for all its rejected events, if
   any), then the segment, create-only (``If-None-Match: *`` on S3, an
   exclusive link on a directory; an identical object already there is
   success, a different one a hard IntegrityError)                       -> ``make_durable``
5. then the sidecar, then the partition's watermark object               -> ``make_durable``
                                                      (daemon/capture/durable.py)
6. only then the Kafka offset of the segment's end is committed          -> ``_on_durable``

Segments of one partition become durable strictly in order (one upload in flight per
partition), so a watermark never jumps over a segment that is not stored. While the store
fails, sealed segments wait in memory and are retried with capped exponential backoff; nothing
is committed for them. Kafka's retention is then the spool.

Valid-through, the time each watermark vouches for (``PartitionState.valid_through_at``): one
ms before the segment's last timestamp (its millisecond may hold more events), or better, what a
look at the partition's end proves: Kafka's end was offset E at wall time t, so once the log is
durable to E every event stamped up to t - ``clock_margin_ms`` is durable (LogAppendTime). Looks
come from the end-of-partition events, the assignment, the start of ``--until-caught-up`` and,
for a partition idle for ``segment_max_age_s``, a live ask of the broker (``EndLooks``: on an
admin client's connections, answered at a later step, never waited for); an idle partition's
watermark is written alone as soon as a look moves it, and a stop writes the last one.

On assignment the resume position is max(committed offset, highest segment end in the store):
the store, not Kafka, is the source of truth (``capture.assignment``, which reads both sides
for all assigned partitions at once). On revoke the revoked partitions are flushed and
committed; on loss their buffers are dropped without committing (the new owner re-reads them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from functools import partial
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from daemon.capture import native
from daemon.capture.assignment import partition_ends, resume_position, stored_states
from daemon.capture.catch_up import CatchUp
from daemon.capture.durable import make_durable
from daemon.capture.end_looks import EndLooks, admin_asker, consumer_asker, wall_ms
from daemon.capture.flow import FlowControl, retry_store
from daemon.capture.idle_wait import IDLE_WAIT_S, idle_wait
from daemon.capture.kafka import (
    consumer_settings,
    coordinates,
    high_watermarks,
    partitions_of,
    timestamp_types,
)
from daemon.capture.partition import PartitionState
from daemon.capture.rejected import RejectedEvents
from daemon.capture.runs import RunIntake
from daemon.capture.sealing import capture_sealer, quarantine_sealer
from daemon.capture.seeding import DimensionSeeder
from daemon.capture.segment_buffer import OpenSegment, SealedSegment
from daemon.capture.timeline import CaptureClock, FutureStamps, check_topics
from daemon.changelog.quarantine import QuarantineEntry
from daemon.changelog.repository import Repository, writer_identity
from daemon.config import Config
from daemon.errors import BadEvent, IntegrityError, StoreError, StoreUnavailable, VecwalError
from daemon.events import EventParser
from daemon.kafka_client import check_brokers, explain
from daemon.kafka_headers import UNREADABLE, encode_tail, message_headers
from daemon.kafka_logging import ErrorLog, client_logger
from daemon.metrics import Metrics
from daemon.snapshot.known_schemas import KnownSchemas
from daemon.sources import native_topics, sources_for
from daemon.sources.registry import RegistryUnavailable
from daemon.sources.registry_check import check_registry

log = structlog.get_logger("vecwal.capture")

TP = tuple[str, int]

class CaptureLoop:
    def __init__(self, config: Config, repo: Repository, metrics: Metrics | None = None,
                 consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
                 topic_timestamp_types: Callable[[], dict[str, str]] | None = None) -> None:
        """``topic_timestamp_types`` reads each topic's message.timestamp.type (default: the
        admin API, when the consumer is Kafka's own; an injected consumer skips the check
        unless it is given too)."""
        self.config = config
        self.cfg = config.capture
        self.repo = repo
        self.metrics = metrics or Metrics()
        self._consumer_factory = consumer_factory
        if topic_timestamp_types is None and consumer_factory is Consumer:
            topic_timestamp_types = partial(timestamp_types, config)
        self._timestamp_types = topic_timestamp_types
        self._capture_timeline = self.cfg.timeline == "capture"
        # On capture's own timeline there is no other clock to be skewed against: a look at
        # a partition's end at t proves every event after it gets a capture time >= t.
        self._margin_ms = 1 if self._capture_timeline else self.cfg.clock_margin_ms
        self._future = FutureStamps(self.cfg.clock_margin_ms,
                                    lambda topic: self.metrics.future_stamped.labels(topic).inc())
        self._consumer: Consumer | None = None  # created lazily by run(): no I/O here
        self._kafka_log = client_logger("capture")  # the consumer's and the admin client's
        if consumer_factory is Consumer:  # partitions' ends, asked on a client of their own
            self._ask_ends, self._serve_looks = admin_asker(config.kafka.bootstrap_servers,
                                                            config.kafka.client, self._kafka_log)
        else:
            self._ask_ends, self._serve_looks = consumer_asker(lambda: self._consumer)
        self._looks = EndLooks(self._ask_ends)
        self._kafka_errors = ErrorLog("capture")  # error_cb's events, repeats counted
        self.parser = EventParser(self.cfg.max_event_bytes, self.cfg.dimensions)
        self._seeder = DimensionSeeder(KnownSchemas(repo, config.kafka.topics),
                                       self.cfg.dimensions)  # read on assignment
        self._codec = native.event_codec() if self.cfg.native_codec else None
        self._avro_topics = native_topics(config.kafka)  # the rest go to the Python parser
        self.sources = sources_for(config.kafka)  # topic -> how its messages decode
        self._sealer = capture_sealer(config, repo)  # per-tenant keys: content sealed
        self._runs = RunIntake(self.cfg, self._future, self._capture_timeline, self._sealer)
        self._flow = FlowControl(self.cfg.max_buffer_bytes, self.cfg.retry_max_backoff_s,
                                 self.metrics)
        self.partitions: dict[TP, PartitionState] = {}
        self._pool = ThreadPoolExecutor(self.cfg.upload_threads, thread_name_prefix="vecwal-upload")
        self._stop = False
        self._writer = writer_identity()
        self.heartbeat = time.monotonic()
        self.store_ok_at = time.monotonic()
        self._catch_up: CatchUp | None = None  # run(until_caught_up=True)
        self._consumed_at_ms = 0
        """Wall time just before the consume() call whose messages are being handled."""
        self._next_tick = 0.0
        self.first_message_at: float | None = None
        self.rejected = RejectedEvents(self.metrics, None, quarantine_sealer(self._sealer, self.sources))

    # -- public -----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the loop to flush and return (safe from a signal handler)."""
        self._stop = True

    def run(self, until_caught_up: bool = False) -> int:
        """Capture until stopped (or, with ``until_caught_up``, until every partition of the
        configured topics is durable up to the high watermark seen at start).
        Returns 0 when everything consumed was made durable, 1 otherwise."""
        if self._consumer_factory is Consumer:  # a wrong password or CA: ConfigError, no hang
            check_brokers(self.config.kafka.bootstrap_servers, self.config.kafka.client)
            if self.config.kafka.schema_registry_url:  # and the registry's, the same way
                check_registry(self.config.kafka.schema_registry_url,
                               self.config.kafka.schema_registry)
        self.repo.ensure_initialized()
        if self._timestamp_types is not None:  # before anything is consumed
            check_topics(self._timestamp_types(), self.cfg.timeline,
                         self.config.kafka.bootstrap_servers)
        consumer = self._consumer = self._consumer_factory(self._settings())
        try:
            if until_caught_up:
                parts = partitions_of(consumer, self.config.kafka.topics)
                seen_ms = wall_ms()  # before the look: every event stamped earlier is below it
                ends = high_watermarks(consumer, parts)
                self._catch_up = CatchUp({k: hi for k, (_, hi) in ends.items()}, seen_ms)
                log.info("capture until caught up", targets={f"{t}/{p}": o for (t, p), o in
                                                             self._catch_up.targets.items()})
            consumer.subscribe(self.config.kafka.topics, on_assign=self._on_assign,
                               on_revoke=self._on_revoke, on_lost=self._on_lost)
            while not self._stop:
                self._consume_batch(consumer)
                self._step(time.monotonic())
                if self._catch_up is not None and self._catch_up.done(self.partitions, self.repo):
                    log.info("caught up: every partition durable to its start high watermark")
                    break
        except BaseException:
            # Nothing more is flushed or committed: drop the buffers and leave the group at
            # once, so another member takes the partitions over from the store's position.
            self.partitions.clear()
            consumer.close()
            raise
        else:
            return self._shutdown(consumer)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- 1-3: consume, validate, append -----------------------------------------------------
    def _consume_batch(self, consumer: Consumer) -> None:
        # Take what is already fetched without waiting to fill a batch; block only when idle.
        self._consumed_at_ms = wall_ms()
        msgs = consumer.consume(num_messages=self.cfg.batch_size, timeout=0)
        if not msgs:
            msgs = self._wait_for_work(consumer)
        now = time.monotonic()
        self.heartbeat = now
        if msgs and self.first_message_at is None:
            self.first_message_at = now
        self._take(msgs, now)

    def _wait_for_work(self, consumer: Consumer) -> list[Message]:
        """Nothing was fetched: wait for events, or for an upload to finish (``idle_wait``)."""
        uploads, timeout = idle_wait(self.partitions.values(), self._flow.paused,
                                     self._catch_up is not None)
        if uploads:
            wait(uploads, timeout=IDLE_WAIT_S, return_when=FIRST_COMPLETED)
        self._consumed_at_ms = wall_ms()
        return consumer.consume(num_messages=self.cfg.batch_size, timeout=timeout)

    def _take(self, msgs: list[Message], now: float) -> None:
        """Steps 2 and 3 for one batch, in offset order. The native codec encodes the plain
        upserts and deletes, in runs of one partition and collection (``RunIntake``),
        refuses the common bad events (a QuarantineEntry's fields, in the parser's words)
        and leaves the rest (their index) to ``_on_other``; it stops after an event that may
        change a collection's dimension, so the next ones are checked against what the
        Python parser learned from it."""
        codec, start = self._codec, 0
        while start < len(msgs):
            if codec is None:
                items: list[Any] = list(range(start, len(msgs)))
                stop = len(msgs)
            else:
                items, stop = codec.encode_runs(msgs, start, self._avro_topics,
                                                self.parser.dimensions,
                                                self.cfg.max_event_bytes, encode_tail,
                                                UNREADABLE)
            held = self._flow.held  # partitions to read again from an offset (rarely any)
            for item in items:
                if type(item) is int:
                    self._on_other(msgs[item], now)
                elif len(item) == 8:
                    self._on_refused(QuarantineEntry(*item), now)
                elif (ps := self.partitions.get(key := (item[1], item[2]))) is not None:
                    if held and not self._flow.admits(key, item[4][0]):
                        continue  # fetched before its partition was sought back: comes again
                    if self._runs.take(ps, item, msgs, self._consumed_at_ms, now, self._seal,
                                       self._hold) and held:
                        self._flow.decoded(key)
            start = stop

    def _hold(self, ps: PartitionState, offset: int, error: Exception) -> None:
        """Read ``ps`` again from ``offset`` later: what it needs does not answer now."""
        assert self._consumer is not None
        self._flow.hold(self._consumer, (ps.topic, ps.partition), offset, error)

    def _on_refused(self, entry: QuarantineEntry, now: float) -> None:
        """A bad event the codec refused (a native topic's: never held)."""
        ps = self.partitions.get((entry.topic, entry.partition))
        if ps is None or entry.offset < ps.open.end:
            return  # revoked meanwhile, or a redelivery of what is already covered
        if entry.timestamp > self._consumed_at_ms:
            self._future.check(ps, entry.offset, entry.timestamp, self._consumed_at_ms)
        self.rejected.keep(ps.open, entry, len(entry.value or b""), now)
        if ps.open.full(self.cfg):
            self._seal(ps, now, "size")

    def _on_other(self, msg: Message, now: float) -> None:
        err = msg.error()
        if err is None:
            self._on_message(msg, now)
        elif err.code() == KafkaError._PARTITION_EOF:
            topic, partition, offset = coordinates(msg)
            ps = self.partitions.get((topic, partition))
            if ps is not None and not self._flow.is_held((topic, partition)):
                # Kafka's end of the partition, at about the consume() call (not fetched
                # before a held partition was sought back: the held events are not covered)
                ps.observe_end(offset, self._consumed_at_ms)
                ps.open.extend_to(offset, now)
        else:
            self.metrics.errors.labels("kafka").inc()
            log.error("kafka error", topic=msg.topic(), partition=msg.partition(),
                      error=str(err))
            if err.fatal():
                raise VecwalError(f"fatal Kafka error: {err}",
                                  "check the broker and the [kafka] settings, then restart")

    def _on_message(self, msg: Message, now: float) -> None:
        topic, partition, offset = coordinates(msg)
        ps = self.partitions.get((topic, partition))
        if ps is None or offset < ps.open.end or not self._flow.admits((topic, partition), offset):
            return  # revoked meanwhile, a redelivery of what is covered, or a held partition
        value, key = msg.value(), msg.key()
        timestamp = msg.timestamp()[1]
        size = len(value) if value else 0
        self._future.check(ps, offset, timestamp, self._consumed_at_ms)
        try:
            record = self.parser.parse_from(self.sources[topic], value, key=key, offset=offset,
                                            timestamp=timestamp, headers=message_headers(msg))
            if record is not None and self._capture_timeline:  # the producer's stamp beside
                record["producer_timestamp"] = timestamp
                record["timestamp"] = CaptureClock.stamp(ps, self._consumed_at_ms)
            if record is not None and self._sealer is not None:  # per-tenant keys: sealed
                record = self._sealer.record(record)
        except (RegistryUnavailable, StoreUnavailable) as exc:  # not the event's fault: the
            self._hold(ps, offset, exc)  # registry, or the tenant's key: read it again later
            return
        except BadEvent as bad:
            self.rejected.keep(ps.open, QuarantineEntry(topic, partition, offset, timestamp,
                                                        bad.reason, bad.detail, key, value),
                               size, now)
        else:
            if record is None:  # carries no change (a tombstone after a Debezium delete)
                ps.open.skip(offset, now)
                self.metrics.skipped.labels(topic, "tombstone").inc()
            else:
                ps.open.add_record(record, size, now)
        self._flow.decoded((topic, partition))
        if ps.open.full(self.cfg):  # size limits hold per event, not per batch
            self._seal(ps, now, "size")

    # -- 4-6: seal, make durable, commit ----------------------------------------------------
    def _step(self, now: float) -> None:
        for key, ps in list(self.partitions.items()):
            reason = ps.open.due(now, self.cfg)
            if reason is None and self._catch_up is not None and self._catch_up.reached(key, ps):
                reason = "caught-up"  # a batch run need not wait for the age limit
            if reason is not None:
                self._seal(ps, now, reason)
            self._collect(ps)
            self._dispatch(ps, now)
        assert self._consumer is not None
        self._flow.backpressure(self._consumer,
                                sum(ps.buffered_bytes for ps in self.partitions.values()),
                                list(self.partitions))
        self._flow.release_due(self._consumer, now)
        if self._looks.waiting:
            self._take_looks(now)
        if now >= self._next_tick:
            self._next_tick = now + 1.0
            self._tick(now)

    def _seal(self, ps: PartitionState, now: float, reason: str) -> None:
        seg = ps.open.seal(self.cfg.codec, now)
        if self._capture_timeline and seg.max_timestamp is not None:
            CaptureClock.close(ps, seg.max_timestamp)  # later events get a later millisecond
        ps.pending.append(seg)
        ps.open = ps.open.successor()
        log.debug("segment sealed", topic=ps.topic, partition=ps.partition,
                  from_offset=seg.key.start, to_offset=seg.key.end, reason=reason,
                  records=seg.count)

    def _dispatch(self, ps: PartitionState, now: float) -> None:
        if ps.in_flight is not None or not ps.pending or now < ps.retry_at:
            return
        seg = ps.pending[0]
        valid = ps.valid_through_after(seg, self._margin_ms, wall_ms(),
                                       last_ms_closed=self._capture_timeline)
        wm = ps.watermark(seg.key.end, valid, seg.key.avro, self._writer)
        ps.in_flight = self._pool.submit(make_durable, self.repo, seg, wm, self.rejected.sealer)
        ps.in_flight_kind, ps.in_flight_valid_ms = "segment", valid

    def _collect(self, ps: PartitionState) -> None:
        fut = ps.in_flight
        if fut is None or not fut.done():
            return
        ps.in_flight = None
        kind = ps.in_flight_kind
        try:
            took = fut.result()
        except IntegrityError:
            raise
        except (StoreError, OSError) as exc:
            self._on_store_failure(ps, kind, exc)
            return
        self.store_ok_at = time.monotonic()
        self.metrics.store_up.set(1)
        if ps.failures:
            log.info("store reachable again", topic=ps.topic, partition=ps.partition,
                     failures=ps.failures)
        ps.failures = 0
        ps.valid_through_ms = ps.in_flight_valid_ms
        if kind == "segment":
            self._on_durable(ps, ps.pending.popleft(), took)
        ps.drop_proofs_through(ps.durable_through)

    def _on_durable(self, ps: PartitionState, seg: SealedSegment, took: float) -> None:
        ps.durable_through = seg.key.end
        ps.last_watermark_write = time.monotonic()
        # Step 6: the segment, its sidecar and the watermark are stored: now commit.
        assert self._consumer is not None
        self._consumer.commit(offsets=[TopicPartition(ps.topic, ps.partition, seg.key.end)],
                              asynchronous=True)
        m = self.metrics
        m.events_captured.labels(ps.topic).inc(seg.count)
        m.bytes_captured.labels(ps.topic).inc(seg.value_bytes)
        m.segments_written.labels(ps.topic).inc()
        m.segment_bytes.labels(ps.topic).inc(seg.sidecar.size)
        m.upload_seconds.observe(took)
        log.info("segment durable", topic=ps.topic, partition=ps.partition,
                 from_offset=seg.key.start, to_offset=seg.key.end, object=seg.key.avro,
                 records=seg.count, quarantined=len(seg.quarantine),
                 bytes=seg.sidecar.size, upload_ms=round(took * 1000, 1),
                 age_s=round(time.monotonic() - seg.opened_at, 3))

    def _on_store_failure(self, ps: PartitionState, kind: str, exc: Exception) -> None:
        ps.failures += 1
        backoff = min(self.cfg.retry_max_backoff_s, 0.25 * 2 ** min(ps.failures - 1, 10))
        ps.retry_at = time.monotonic() + backoff
        ps.note_error(type(exc).__name__, str(exc))
        self.metrics.errors.labels("store").inc()
        self.metrics.store_up.set(0)
        seg = ps.pending[0] if ps.pending else None
        log.warning("store write failed, will retry", topic=ps.topic, partition=ps.partition,
                    what=kind, object=seg.key.avro if seg else None, attempt=ps.failures,
                    retry_in_s=round(backoff, 2), error=str(exc))

    # -- once a second: idle valid-through, lag and RPO -------------------------------------
    def _tick(self, now: float) -> None:
        assert self._consumer is not None
        self._serve_looks()
        looks = []
        for (topic, p), ps in self.partitions.items():
            try:
                _, hi = self._consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            except Exception:  # no fetch response yet
                hi = -1
            if hi is not None and hi >= 0:  # for lag only: a cached end has no time of its own
                ps.high_watermark = max(ps.high_watermark or 0, hi)
            if ps.idle and ps.high_watermark == ps.durable_through \
                    and now - ps.last_watermark_write >= self.cfg.segment_max_age_s:
                looks.append((topic, p))  # an idle partition proves time passing
            self._advance_idle(ps, now)
            if ps.high_watermark is not None:
                self.metrics.consumer_lag.labels(topic, str(p)).set(
                    max(0, ps.high_watermark - ps.durable_through))
            if ps.valid_through_ms is not None:
                self.metrics.valid_through.labels(topic, str(p)).set(ps.valid_through_ms / 1000)
                self.metrics.rpo_seconds.labels(topic, str(p)).set(
                    max(0.0, (wall_ms() - ps.valid_through_ms) / 1000))
        self._looks.ask(looks)  # answered at a later step: the loop does not wait

    def _take_looks(self, now: float) -> None:
        """The looks at partition ends answered since the last step: each moves its
        partition's proofs and, if idle, its watermark at once."""
        for key, hi, seen_ms in self._looks.answers():
            ps = self.partitions.get(key)
            if ps is not None:  # not revoked meanwhile
                ps.observe_end(hi, seen_ms)
                self._advance_idle(ps, now)

    def _advance_idle(self, ps: PartitionState, now: float) -> bool:
        """A partition with nothing to upload whose valid-through the looks at its end move:
        write its watermark alone (no segment). Returns True when a write was started."""
        if not ps.idle:
            return False
        valid = ps.proven_through(ps.durable_through, self._margin_ms)
        if valid is None or (ps.valid_through_ms is not None and valid <= ps.valid_through_ms):
            return False
        if now < ps.retry_at:
            return False
        ps.last_watermark_write = now
        wm = ps.watermark(ps.durable_through, valid, None, self._writer)
        ps.in_flight = self._pool.submit(self.repo.write_watermark, wm)
        ps.in_flight_kind, ps.in_flight_valid_ms = "watermark", valid
        return True

    # -- rebalance callbacks (run inside consume()) -----------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in consumer.committed(partitions, timeout=30)}
        seen_ms = wall_ms()  # before the question: each end is the end at or after it
        ends = partition_ends(self._ask_ends, consumer, partitions)
        in_store = stored_states(self.repo, [(tp.topic, tp.partition) for tp in partitions],
                                 self._retry_store)
        now = time.monotonic()
        for tp in partitions:
            key = (tp.topic, tp.partition)
            stored, wm = in_store[key]
            lo, hi = ends[key]
            start = tp.offset = resume_position(key, committed.get(key, -1), stored, lo,
                                                self.metrics)
            ps = PartitionState(tp.topic, tp.partition, OpenSegment(tp.topic, tp.partition, start),
                                durable_through=start,
                                valid_through_ms=wm.valid_through_ms if wm else None,
                                last_watermark_write=now)
            if wm is not None:
                ps.future_stamped, ps.last_future_stamped = (wm.future_stamped,
                                                             wm.last_future_stamped)
            start_end = self._catch_up.start_ends.get(key) if self._catch_up else None
            if start_end is not None:
                ps.observe_end(start_end.offset, start_end.seen_ms)
            ps.observe_end(hi, seen_ms)
            self.partitions[key] = ps
            log.info("partition assigned", topic=tp.topic, partition=tp.partition,
                     resume_offset=start, committed=committed.get(key), store=stored,
                     high_watermark=hi)
        self._seeder.seed(self.parser.dimensions, self._retry_store)  # before any parsing
        consumer.incremental_assign(partitions)
        if self._flow.paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        deadline = time.monotonic() + self.cfg.shutdown_timeout_s
        owned = [(tp.topic, tp.partition) for tp in partitions
                 if (tp.topic, tp.partition) in self.partitions]
        done = self._flush(owned, deadline)
        self._commit_sync(done)
        self._flow.forget(owned)
        for key in owned:
            ps = self.partitions.pop(key)
            log.info("partition revoked", topic=key[0], partition=key[1],
                     durable_through=ps.durable_through, flushed=key in done)
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._flow.forget([(tp.topic, tp.partition) for tp in partitions])
        for tp in partitions:
            ps = self.partitions.pop((tp.topic, tp.partition), None)
            log.warning("partition lost, buffers dropped without commit", topic=tp.topic,
                        partition=tp.partition,
                        dropped_bytes=ps.buffered_bytes if ps else 0)
        consumer.incremental_unassign(partitions)

    # -- flushing: revoke and shutdown -----------------------------------------------------
    def _flush(self, keys: list[TP], deadline: float) -> list[TP]:
        """Seal and make durable every buffered segment of ``keys``, retrying until
        ``deadline``. Returns the partitions that are fully durable."""
        states = [self.partitions[k] for k in keys if k in self.partitions]
        now = time.monotonic()
        for ps in states:
            if not ps.open.is_empty:
                self._seal(ps, now, "flush")
        while time.monotonic() < deadline:
            busy = False
            for ps in states:
                self._collect(ps)
                if ps.pending or ps.in_flight is not None:
                    busy = True
                    ps.retry_at = min(ps.retry_at, time.monotonic() + 1.0)
                    self._dispatch(ps, time.monotonic())
                elif self._advance_idle(ps, time.monotonic()):  # the last look at its end
                    busy = True
            if not busy:
                break
            uploading = [ps.in_flight for ps in states if ps.in_flight is not None]
            if uploading:  # act on the first to finish, not at the end of a fixed sleep
                wait(uploading, timeout=0.02, return_when=FIRST_COMPLETED)
            else:
                time.sleep(0.02)
        return [(ps.topic, ps.partition) for ps in states if ps.idle]

    def _commit_sync(self, keys: list[TP]) -> None:
        assert self._consumer is not None
        offsets = [TopicPartition(t, p, self.partitions[(t, p)].durable_through)
                   for (t, p) in keys if (t, p) in self.partitions]
        if offsets:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # the store is the truth; a failed commit loses nothing
                log.warning("offset commit failed", error=str(exc))

    def _shutdown(self, consumer: Consumer) -> int:
        deadline = time.monotonic() + self.cfg.shutdown_timeout_s
        keys = list(self.partitions)
        done = self._flush(keys, deadline)
        self._commit_sync(done)
        unflushed = [k for k in keys if k not in done]
        if unflushed:
            log.error("stopping with segments not durable; they will be captured again from "
                      "Kafka on restart", partitions=[f"{t}/{p}" for t, p in unflushed])
        self.partitions.clear()  # flushed already: the revoke from close() has nothing to do
        consumer.close()
        log.info("capture stopped", flushed_partitions=len(done))
        return 1 if unflushed else 0

    def _retry_store(self, fn: Callable[[], Any], what: str) -> Any:
        """``fn()``, retried while the store does not answer (``retry_store``)."""
        return retry_store(fn, what, self.metrics, max(60.0, self.cfg.shutdown_timeout_s),
                           self.cfg.retry_max_backoff_s)

    def _settings(self) -> dict[str, Any]:
        settings = consumer_settings(self.config)
        settings["error_cb"] = self._on_kafka_error
        settings["on_commit"] = self._on_commit
        settings["logger"] = self._kafka_log  # librdkafka's lines: events, served by consume
        return settings

    def _on_kafka_error(self, err: KafkaError) -> None:
        self.metrics.errors.labels("kafka").inc()
        why = explain(err, self.config.kafka.bootstrap_servers, self.config.kafka.client)
        # librdkafka retries a refused login forever: say what to fix (once per window)
        errors = self._kafka_errors
        (errors.error if why.hint else errors.warning)(why.message, hint=why.hint or None)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("offset commit failed", error=str(err))


__all__ = ["CaptureLoop", "make_durable"]
