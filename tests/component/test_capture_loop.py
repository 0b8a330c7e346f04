"""The capture commit protocol without a broker: a replaying consumer and stores that fail on
purpose, against the real file:// store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition
from structlog.testing import capture_logs

from daemon.capture.loop import CaptureLoop
from daemon.capture.quarantine_log import QuarantineLog
from daemon.changelog.keys import QuarantineKey, SegmentKey
from daemon.changelog.reader import coverage, read_partition
from daemon.changelog.repository import Repository
from daemon.changelog.segment import encode_segment
from daemon.config import Config, config_from_mapping
from daemon.errors import IntegrityError
from daemon.objectstore import ObjectInfo, ObjectStore, open_store
from tests.component.fakes import FakeConsumer, FlakyStore, run_through_outage

TOPIC = "ingest"


def event(i: int, dim: int = 4) -> bytes:
    return orjson.dumps({"op": "upsert", "collection": "c", "tenant": "t", "id": f"r{i}",
                         "vector": [float(i)] * dim, "metadata": {"i": i}})


def config(**capture: object) -> Config:
    return config_from_mapping({
        "kafka": {"bootstrap_servers": "fake:9092", "topics": [TOPIC]},
        "storage": {"url": "file:///unused"},
        "capture": {"segment_max_age_s": 0.05, "shutdown_timeout_s": 5.0,
                    "retry_max_backoff_s": 0.2, **capture},
        "metrics": {"listen": ""},
    }, environ={})


def repo_at(tmp_path: Path) -> Repository:
    return Repository(open_store(f"file://{tmp_path / 'repo'}"))


def test_offsets_are_committed_only_after_segment_sidecar_and_watermark(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    log = {(TOPIC, 0): [event(i) for i in range(50)], (TOPIC, 1): [event(i) for i in range(30)]}
    checked = []

    def check(offsets: list[TopicPartition]) -> None:
        for tp in offsets:
            keys = list(repo.list_segments(tp.topic, tp.partition))
            assert keys and max(k.end for k in keys) == tp.offset, "segment before commit"
            last = max(keys, key=lambda k: k.end)
            repo.read_sidecar(last)  # raises if the sidecar is missing
            wm = repo.read_watermark(tp.topic, tp.partition)
            assert wm is not None and wm.captured_through == tp.offset, "watermark before commit"
            checked.append(tp.offset)

    fake = FakeConsumer(log, on_commit_check=check)
    loop = CaptureLoop(config(segment_max_records=10), repo, consumer_factory=lambda s: fake)
    assert loop.run(until_caught_up=True) == 0
    assert checked and fake.closed
    assert fake.committed_offsets == {(TOPIC, 0): 50, (TOPIC, 1): 30}
    for p, n in ((0, 50), (1, 30)):
        assert [r["offset"] for r in read_partition(repo, TOPIC, p)] == list(range(n))
        keys = list(repo.list_segments(TOPIC, p))
        assert len(keys) == n // 10 and not coverage(keys).gaps


class OutageAfterAssign(FakeConsumer):
    """The store goes down the instant partitions are assigned, before any segment can be
    flushed, however fast or slow the machine is."""

    def __init__(self, log: dict[tuple[str, int], list[bytes | None]],
                 store: FlakyStore) -> None:
        super().__init__(log)
        self.store = store

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any,
                  on_lost: Any) -> None:
        def assign_then_outage(consumer: Any, partitions: list[TopicPartition]) -> None:
            on_assign(consumer, partitions)
            self.store.down = True

        super().subscribe(topics, assign_then_outage, on_revoke, on_lost)


def test_store_outage_pauses_consumption_commits_nothing_and_loses_nothing(
        tmp_path: Path) -> None:
    flaky = FlakyStore(open_store(f"file://{tmp_path / 'repo'}"))
    repo = Repository(flaky)
    repo.ensure_initialized()
    fake = OutageAfterAssign({(TOPIC, 0): [event(i, dim=64) for i in range(400)]}, flaky)
    cfg = config(segment_max_records=20, segment_max_bytes=2048, max_buffer_bytes=8192)
    loop = CaptureLoop(cfg, repo, consumer_factory=lambda s: fake)

    def end_outage() -> None:
        flaky.down = False

    paused, commits_while_down = run_through_outage(
        loop, fake, lambda: flaky.down and fake.pause_calls >= 1, end_outage)
    assert paused, "consumption must pause at the buffer bound"
    assert commits_while_down == [], "nothing may be committed while the store is down"
    assert flaky.failed_calls > 0
    assert [r["offset"] for r in read_partition(repo, TOPIC, 0)] == list(range(400))
    assert fake.committed_offsets[(TOPIC, 0)] == 400
    assert loop.metrics.registry.get_sample_value("vecwal_errors_total", {"kind": "store"}) > 0


def test_resume_position_comes_from_the_store(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    repo.ensure_initialized()
    # A writer died after uploading [0, 25) but before its watermark and commit.
    from daemon.events import EventParser

    parser = EventParser(1 << 20)
    records = [parser.parse(event(i), "json", key=None, offset=i, timestamp=1000 + i)
               for i in range(25)]
    key = SegmentKey(TOPIC, 0, 0, 25)
    repo.put_segment(key, encode_segment(key, records))
    fake = FakeConsumer({(TOPIC, 0): [event(i) for i in range(40)]},
                        committed_offsets={(TOPIC, 0): 10})
    loop = CaptureLoop(config(), repo, consumer_factory=lambda s: fake)
    assert loop.run(until_caught_up=True) == 0
    keys = list(repo.list_segments(TOPIC, 0))
    assert [(k.start, k.end) for k in keys] == [(0, 25), (25, 40)], "resumed at 25, not 10"
    assert [r["offset"] for r in read_partition(repo, TOPIC, 0)] == list(range(40))


class RacingStore(FlakyStore):
    """A zombie writer stores different bytes under a segment key just before we do."""

    def put(self, key: str, data: bytes, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        if key.endswith(".avro"):
            self.inner.put(key, b"a zombie writer's different bytes", create_only=True)
        self.inner.put(key, data, create_only=create_only, sha256=sha256)


def test_a_different_object_under_a_segment_key_is_an_integrity_error(tmp_path: Path) -> None:
    repo = Repository(RacingStore(open_store(f"file://{tmp_path / 'repo'}")))
    fake = FakeConsumer({(TOPIC, 0): [event(i) for i in range(5)]})
    loop = CaptureLoop(config(), repo, consumer_factory=lambda s: fake)
    with pytest.raises(IntegrityError, match="different content"):
        loop.run(until_caught_up=True)
    assert not fake.commits, "nothing is committed past a conflicting segment"
    assert fake.closed, "the consumer leaves the group so another member can take over"


class RecordingStore(FlakyStore):
    """Remembers the key of every put, in order."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.puts: list[str] = []

    def put(self, key: str, data: bytes, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        self.puts.append(key)
        super().put(key, data, create_only=create_only, sha256=sha256)


def test_quarantine_is_one_object_written_before_its_segment_and_counted(
        tmp_path: Path) -> None:
    store = RecordingStore(open_store(f"file://{tmp_path / 'repo'}"))
    repo = Repository(store)
    values: list[bytes | None] = [event(0), b"{broken", None, event(3)]
    fake = FakeConsumer({(TOPIC, 0): values})
    loop = CaptureLoop(config(), repo, consumer_factory=lambda s: fake)
    with capture_logs() as logs:
        assert loop.run(until_caught_up=True) == 0
    (seg,) = repo.list_segments(TOPIC, 0)
    (qkey,) = [k for k, _ in repo.list_quarantine(TOPIC)]
    assert qkey == QuarantineKey.of_segment(seg) == QuarantineKey(TOPIC, 0, 0, 4)
    assert store.puts.index(qkey.object_key) < store.puts.index(seg.avro)
    rejected = repo.read_quarantine(qkey).entries
    assert [(e.offset, e.reason, e.value, e.key) for e in rejected] == [
        (1, "unparseable", b"{broken", b"k1"), (2, "unparseable", None, b"k2")]
    assert [r["offset"] for r in read_partition(repo, TOPIC, 0)] == [0, 3]
    assert loop.metrics.registry.get_sample_value(
        "vecwal_quarantined_events_total", {"topic": TOPIC, "reason": "unparseable"}) == 2
    (durable,) = [x for x in logs if x["event"] == "quarantine durable"]
    assert durable["object"] == qkey.object_key and durable["reasons"] == {"unparseable": 2}


def test_a_flood_of_bad_events_is_one_object_per_segment_and_a_few_log_lines(
        tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    bad = [b"{broken", orjson.dumps({"op": "merge", "collection": "c", "id": "x"}),
           orjson.dumps({"op": "upsert", "collection": "c", "vector": [1.0] * 4})]
    values: list[bytes | None] = [event(i) if i % 2 else bad[i % 3] for i in range(2_000)]
    fake = FakeConsumer({(TOPIC, 0): values, (TOPIC, 1): values[:500]})
    loop = CaptureLoop(config(segment_max_records=100), repo, consumer_factory=lambda s: fake)
    loop.rejected.log = QuarantineLog(interval_s=3600.0)  # however slow the machine is
    with capture_logs() as logs:
        assert loop.run(until_caught_up=True) == 0
    for p, n in ((0, 2_000), (1, 500)):
        segments = list(repo.list_segments(TOPIC, p))
        qkeys = [k for k, _ in repo.list_quarantine(TOPIC) if k.partition == p]
        assert qkeys == [QuarantineKey.of_segment(k) for k in segments] and len(qkeys) == n // 100
        held = [e.offset for k in qkeys for e in repo.read_quarantine(k).entries]
        assert held == list(range(0, n, 2))
        assert [r["offset"] for r in read_partition(repo, TOPIC, p)] == list(range(1, n, 2))
    counted = {r: loop.metrics.registry.get_sample_value(
        "vecwal_quarantined_events_total", {"topic": TOPIC, "reason": r})
        for r in ("unparseable", "unknown_op", "missing_field")}
    assert sum(counted.values()) == 1_250 and all(counted.values())
    lines = [x for x in logs if x["event"] == "event quarantined"]
    assert sorted(x["reason"] for x in lines) == sorted(counted), "one line per reason"
    durable = [x for x in logs if x["event"] == "quarantine durable"]
    assert len(durable) == 25 and sum(x["quarantined"] for x in durable) == 1_250
    assert all(sum(x["reasons"].values()) == x["quarantined"] == 50 for x in durable)


def test_scheduled_compaction_writes_snapshots(tmp_path: Path) -> None:
    from daemon.compaction_scheduler import CompactionScheduler
    from daemon.metrics import Metrics
    from daemon.snapshot.compactor import list_manifests

    repo = repo_at(tmp_path)
    fake = FakeConsumer({(TOPIC, 0): [event(i) for i in range(30)]})
    cfg = config_from_mapping({
        "kafka": {"bootstrap_servers": "fake:9092", "topics": [TOPIC]},
        "storage": {"url": "file:///unused"},
        "capture": {"segment_max_age_s": 0.05},
        "compaction": {"interval_s": 0.2, "min_buckets": 2},
        "metrics": {"listen": ""},
    }, environ={})
    assert CaptureLoop(cfg, repo, consumer_factory=lambda s: fake).run(until_caught_up=True) == 0
    metrics = Metrics()
    scheduler = CompactionScheduler(cfg, repo, metrics)
    scheduler.start()
    deadline = time.monotonic() + 10
    while not list_manifests(repo) and time.monotonic() < deadline:
        time.sleep(0.05)
    scheduler.stop()
    ids = list_manifests(repo)
    assert ids, "the scheduler wrote no snapshot"
    from daemon.snapshot.compactor import read_manifest

    assert read_manifest(repo, ids[-1]).records == 30
    assert metrics.registry.get_sample_value("vecwal_compaction_seconds_count") >= 1


def test_until_caught_up_proves_the_last_batch_and_idle_partitions(tmp_path: Path) -> None:
    """Every event appended before ``run --until-caught-up`` began (less the clock margin) is
    inside the valid-through time it leaves, on every partition: the one whose last producer
    batch shares one millisecond, and the one that got nothing and had an old watermark."""
    repo = repo_at(tmp_path)
    cfg = config(clock_margin_ms=200)
    old = int(time.time() * 1000) - 60_000
    first = FakeConsumer({(TOPIC, 0): [event(i) for i in range(3)], (TOPIC, 1): []}, stamp=old)
    assert CaptureLoop(cfg, repo, consumer_factory=lambda s: first).run(until_caught_up=True) == 0
    idle_before = repo.read_watermark(TOPIC, 1)
    assert idle_before is not None and idle_before.captured_through == 0, \
        "a partition that never had an event gets a watermark too"

    burst = int(time.time() * 1000) - 1_000  # one batch, one millisecond, a second ago
    second = FakeConsumer({(TOPIC, 0): [event(i) for i in range(8)], (TOPIC, 1): []},
                          stamp=burst)
    started = int(time.time() * 1000)
    assert CaptureLoop(cfg, repo, consumer_factory=lambda s: second).run(until_caught_up=True) == 0
    busy, idle = repo.read_watermark(TOPIC, 0), repo.read_watermark(TOPIC, 1)
    assert busy is not None and idle is not None
    assert busy.captured_through == 8 and busy.valid_through_ms is not None
    assert busy.valid_through_ms >= started - 200 > burst, \
        f"the last batch (at {burst}) is outside valid-through {busy.valid_through_ms}"
    assert idle.valid_through_ms is not None and idle.valid_through_ms >= started - 200, \
        "an idle partition's old watermark would hold the repository's valid-through back"
    assert idle.valid_through_ms <= int(time.time() * 1000)


def test_an_idle_partition_is_proven_at_once_after_a_burst(tmp_path: Path) -> None:
    """In `vecwal run`, the end-of-partition seen after a burst moves valid-through past the
    burst's last millisecond as soon as its segment is durable, not segment_max_age_s later."""
    repo = repo_at(tmp_path)
    burst = int(time.time() * 1000) - 1_000
    fake = FakeConsumer({(TOPIC, 0): [event(i) for i in range(20)]}, stamp=burst)
    loop = CaptureLoop(config(clock_margin_ms=200, segment_max_age_s=0.3), repo,
                       consumer_factory=lambda s: fake)
    threading.Timer(1.5, loop.request_stop).start()
    began = time.monotonic()
    assert loop.run() == 0
    wm = repo.read_watermark(TOPIC, 0)
    assert wm is not None and wm.captured_through == 20
    assert wm.valid_through_ms is not None and wm.valid_through_ms > burst, \
        f"valid-through {wm.valid_through_ms} leaves out the burst at {burst}"
    assert time.monotonic() - began < 5


class SlowStore(FlakyStore):
    """Every put takes 10 ms: uploads stay in flight while the loop has nothing to consume."""

    def put(self, key: str, data: bytes, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        time.sleep(0.01)
        super().put(key, data, create_only=create_only, sha256=sha256)


@pytest.mark.parametrize("until_caught_up", [True, False])
def test_after_a_burst_segments_drain_without_idle_waits_between_them(
        tmp_path: Path, until_caught_up: bool) -> None:
    """The instant after a burst: a partition's sealed segments go one after another (one
    upload in flight per partition), and the loop, with nothing left to consume, must act on
    each finished upload at once: dispatch the next, commit. A consumer blocking its whole idle
    timeout between two uploads made draining N segments take N idle waits (100 ms each)."""
    store = SlowStore(open_store(f"file://{tmp_path / 'repo'}"))
    fake = FakeConsumer({(TOPIC, 0): [event(i) for i in range(120)]}, blocks=True)
    loop = CaptureLoop(config(segment_max_records=10, segment_max_age_s=60), Repository(store),
                       consumer_factory=lambda s: fake)
    began = time.monotonic()
    if until_caught_up:
        assert loop.run(until_caught_up=True) == 0
    else:  # `vecwal run`: stopped once the last offset is committed
        fake.on_commit_check = lambda offsets: [
            loop.request_stop() for tp in offsets if tp.offset == 120]
        threading.Timer(10.0, loop.request_stop).start()
        assert loop.run() == 0
    took = time.monotonic() - began
    assert fake.committed_offsets[(TOPIC, 0)] == 120
    assert len(list(Repository(store).list_segments(TOPIC, 0))) == 12
    long_waits = [t for t, uncommitted in fake.idle_waits if uncommitted and t > 0.01]
    # A run that is not catching up may wait out the last upload, which has nothing behind it.
    assert len(long_waits) <= (0 if until_caught_up else 1), \
        f"{len(long_waits)} idle waits of {long_waits[0]} s while segments were uploading"
    assert took < 12 * 0.1, f"12 segments drained in {took:.2f} s"


@pytest.mark.parametrize("native_codec", [True, False])
def test_capture_timeline_orders_by_capture_time_and_keeps_the_producers(
        tmp_path: Path, native_codec: bool) -> None:
    """capture.timeline = capture: a producer an hour fast does not push events (or the
    watermark) an hour ahead; its stamp stays in the record, as do the message's headers; the
    events are counted."""
    repo = repo_at(tmp_path)
    hour_ahead = int(time.time() * 1000) + 3_600_000
    values: list[bytes | None] = [event(i) for i in range(6)]
    values[3] = b"{broken"  # a quarantined event keeps the Kafka stamp in its entry
    fake = FakeConsumer({(TOPIC, 0): values}, stamp=hour_ahead,
                        headers_at=lambda o: [("batch", b"b-%d" % o)] * o if o % 2 else None)
    cfg = config(timeline="capture", native_codec=native_codec)
    before = int(time.time() * 1000)
    loop = CaptureLoop(cfg, repo, consumer_factory=lambda s: fake)
    assert loop.run(until_caught_up=True) == 0
    after = int(time.time() * 1000)
    records = read_partition(repo, TOPIC, 0)
    assert [r["offset"] for r in records] == [0, 1, 2, 4, 5]
    for r in records:
        assert before <= r["timestamp"] <= after, "capture time, not the producer's"
        assert r["producer_timestamp"] == hour_ahead
        o = r["offset"]  # the headers end the record, after the restamped fields
        assert r["headers"] == ([{"key": "batch", "value": b"b-%d" % o}] * o if o % 2 else None)
    stamps = [r["timestamp"] for r in records]
    assert stamps == sorted(stamps)
    wm = repo.read_watermark(TOPIC, 0)
    assert wm is not None and wm.valid_through_ms is not None and wm.valid_through_ms <= after
    assert wm.future_stamped == 6 and wm.last_future_stamped is not None
    assert wm.last_future_stamped["offset"] == 5
    assert loop.metrics.registry.get_sample_value(
        "vecwal_future_stamped_events_total", {"topic": TOPIC}) == 6


def test_kafka_timeline_refuses_a_create_time_topic(tmp_path: Path) -> None:
    from daemon.capture.timeline import CreateTimeTopic

    fake = FakeConsumer({(TOPIC, 0): [event(0)]})
    loop = CaptureLoop(config(), repo_at(tmp_path), consumer_factory=lambda s: fake,
                       topic_timestamp_types=lambda: {TOPIC: "CreateTime"})
    with pytest.raises(CreateTimeTopic):
        loop.run(until_caught_up=True)
    assert not fake._assigned, "nothing was consumed"


def test_kafka_timeline_never_runs_ahead_of_the_wall_clock(tmp_path: Path) -> None:
    """Even on the kafka timeline (a broker clock ahead), valid-through stays at or before the
    wall clock and the future-stamped events are counted."""
    repo = repo_at(tmp_path)
    fake = FakeConsumer({(TOPIC, 0): [event(i) for i in range(4)]},
                        stamp=int(time.time() * 1000) + 3_600_000)
    loop = CaptureLoop(config(), repo, consumer_factory=lambda s: fake)
    assert loop.run(until_caught_up=True) == 0
    wm = repo.read_watermark(TOPIC, 0)
    assert wm is not None and wm.valid_through_ms is not None
    assert wm.valid_through_ms <= int(time.time() * 1000)
    assert wm.future_stamped == 4


def test_assignment_asks_the_consumer_when_the_ends_cannot_be_read_at_once(
        tmp_path: Path) -> None:
    """The partitions' ends are read in one request on a client of their own; when that
    fails (an admin client the brokers refuse), assignment asks the consumer, says so, and
    capture goes on as before."""
    repo = repo_at(tmp_path)
    fake = FakeConsumer({(TOPIC, 0): [event(i) for i in range(5)], (TOPIC, 1): []})
    loop = CaptureLoop(config(), repo, consumer_factory=lambda s: fake)

    def refused(keys: list[tuple[str, int]], earliest: bool) -> dict[str, Any]:
        raise RuntimeError("ListOffsets: broker refused")

    loop._ask_ends = refused
    with capture_logs() as logs:
        assert loop.run(until_caught_up=True) == 0
    assert fake.committed_offsets[(TOPIC, 0)] == 5
    warned = [e for e in logs if e["event"].startswith("partition ends not read")]
    assert warned and warned[0]["error"] == "ListOffsets: broker refused"


class SlowReads(FlakyStore):
    """Every read takes 20 ms, as a remote bucket's round trips do."""

    def get(self, key: str) -> bytes:
        time.sleep(0.02)
        return super().get(key)

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        time.sleep(0.02)
        return super().list(prefix, start_after)


def test_a_member_given_many_partitions_reads_their_state_at_once(tmp_path: Path) -> None:
    """Assignment reads each partition's watermark and later segments (a GET and a LIST),
    and the collection ops logged since (a LIST and the new sidecars' op counts): for 16
    partitions of a remote bucket one after another, 1.4 s of round trips inside the
    rebalance callback here. They are read together, and each partition still resumes where
    the store says."""
    inner = open_store(f"file://{tmp_path / 'repo'}")
    parts = {(TOPIC, p): [event(i) for i in range(3)] for p in range(16)}
    first = FakeConsumer({k: v[:2] for k, v in parts.items()})
    assert CaptureLoop(config(), Repository(inner),
                       consumer_factory=lambda s: first).run(until_caught_up=True) == 0

    fake = FakeConsumer(parts)  # committed offsets lost: the store alone says where to go on
    loop = CaptureLoop(config(), Repository(SlowReads(inner)), consumer_factory=lambda s: fake)
    took: list[float] = []
    assign = loop._on_assign

    def timed(consumer: Any, partitions: list[TopicPartition]) -> None:
        began = time.monotonic()
        assign(consumer, partitions)
        took.append(time.monotonic() - began)

    loop._on_assign = timed  # type: ignore[method-assign]
    assert loop.run(until_caught_up=True) == 0
    assert {key: pos for key, pos in fake.positions.items()} == {k: 3 for k in parts}
    segments = [k for p in range(16) for k in Repository(inner).list_segments(TOPIC, p)]
    assert sorted((k.partition, k.start, k.end) for k in segments) == \
        sorted((p, s, e) for p in range(16) for s, e in ((0, 2), (2, 3))), \
        "each partition resumed at offset 2, from the store"
    assert took and took[0] < 0.4, f"assignment took {took[0]:.2f} s (each read 20 ms)"
