"""Capture end to end: a real Kafka broker, the real S3 server and the file:// store."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from daemon.changelog.keys import QuarantineKey
from daemon.workload import BAD_KINDS, Produced, Workload, produce
from tests.integration.harness import (
    Target,
    assert_exactly_once,
    assert_fields_equal,
    read_everything,
    start_vecwal,
    vecwal,
    wait_for,
)

pytestmark = pytest.mark.integration

DIMS = {"docs": 64, "images": 32}


def mixed_stream(seed: int, n: int) -> Workload:
    return Workload(seed=seed, collections=dict(DIMS), bad_rate=0.04)


def test_mixed_stream_is_captured_exactly_once(target: Target, tmp_path: Path,
                                               group_id: str) -> None:
    w = mixed_stream(1, 800)
    events = [*w.preamble(), *w.events(400), w.schema_change("docs"), *w.events(400)]
    events += [w.bad_event(kind) for kind in ("unparseable", "unknown_op", "missing_field",
                                              "wrong_dimension", "non_finite", "oversize")]
    events.append(w._encode(b"docs", {"op": "tenant.drop", "collection": "docs",
                                      "tenant": "initech"}))
    events.append(w._encode(b"images", {"op": "alias.drop", "collection": "images",
                                        "alias": "images-live"}))
    produced = produce(target.bootstrap, target.topic, events)
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_records=150,
                              segment_max_age_s=1.0, max_event_bytes=200_000, dimensions=DIMS)
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env)

    log = read_everything(target.repository(), target.topic, 3)
    assert_exactly_once(log, produced, 3)
    checked = assert_fields_equal(log, produced)
    assert checked == sum(1 for p in produced if p.event.bad is None) > 700
    assert {e.reason for e in log.quarantine.values()} >= {
        "unparseable", "unknown_op", "missing_field", "wrong_dimension", "non_finite", "oversize"}
    assert sum(len(s) for s in log.segments.values()) > 3, "segments are closed by records"

    status = json.loads(vecwal("status", "--config", str(cfg), "--json", env=target.env).stdout)
    highs = {p: max(pr.offset + 1 for pr in produced if pr.partition == p) for p in range(3)}
    for row in status["partitions"]:
        assert row["captured_offset"] == highs[row["partition"]] == row["high_watermark"]
        assert row["lag"] == 0 and row["committed_offset"] == row["captured_offset"]
        assert row["valid_through_ms"] is not None and row["rpo_seconds"] is not None
    text = vecwal("status", "--config", str(cfg), env=target.env).stdout
    assert target.topic in text and "valid through" in text

    # A second run finds everything durable and exits at once, writing nothing new.
    before = sum(len(s) for s in log.segments.values())
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env)
    again = read_everything(target.repository(), target.topic, 3)
    assert sum(len(s) for s in again.segments.values()) == before


def test_avro_input_is_captured(file_target: Target, tmp_path: Path, group_id: str) -> None:
    w = Workload(seed=3, collections=dict(DIMS), fmt="avro")
    produced = produce(file_target.bootstrap, file_target.topic, [*w.preamble(), *w.events(300)])
    cfg = file_target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=1.0)
    text = cfg.read_text().replace('group_id', 'format = "avro"\ngroup_id')
    cfg.write_text(text)
    vecwal("run", "--config", str(cfg), "--until-caught-up")
    log = read_everything(file_target.repository(), file_target.topic, 3)
    assert_exactly_once(log, produced, 3)
    assert assert_fields_equal(log, produced) == len(produced)


def _produce_in_background(target: Target, w: Workload, n: int, rate: float
                           ) -> tuple[threading.Thread, list[Produced]]:
    out: list[Produced] = []

    def run() -> None:
        out.extend(produce(target.bootstrap, target.topic, w.events(n), rate_per_s=rate))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _settled(read, quiet_s: float, timeout: float):  # type: ignore[no-untyped-def]
    """``read()``'s value once it has not changed for ``quiet_s`` seconds."""
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return value
    raise AssertionError(f"still changing after {timeout}s: {value}")


def test_kill_9_mid_run_loses_and_doubles_nothing(target: Target, tmp_path: Path,
                                                   group_id: str) -> None:
    w = mixed_stream(2, 0)
    produced = produce(target.bootstrap, target.topic, w.preamble())
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5,
                              segment_max_records=200, dimensions=DIMS)
    producer, later = _produce_in_background(target, w, 4000, rate=800)
    proc = start_vecwal("run", "--config", str(cfg), env=target.env,
                        log_path=tmp_path / "daemon.log")
    repo = target.repository()
    wait_for(lambda: sum(1 for p in range(3) for _ in repo.list_segments(target.topic, p)) >= 6,
              60, "some segments")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    producer.join(60)
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env)
    log = read_everything(target.repository(), target.topic, 3)
    assert_exactly_once(log, produced + later, 3, allow_overlap=True)
    assert assert_fields_equal(log, produced + later) > 3000


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def test_store_outage_of_20s_loses_nothing(s3_target: Target, s3_service, tmp_path: Path,  # type: ignore[no-untyped-def]
                                           group_id: str) -> None:
    if not s3_service.controllable:
        pytest.skip("the S3 server was given by the environment; it cannot be stopped here")
    target = s3_target
    w = mixed_stream(4, 0)
    produced = produce(target.bootstrap, target.topic, w.preamble())
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5,
                              dimensions=DIMS, retry_max_backoff_s=2.0)
    proc = start_vecwal("run", "--config", str(cfg), env=target.env,
                        log_path=tmp_path / "daemon.log")
    try:
        producer, later = _produce_in_background(target, w, 6000, rate=200)
        repo = target.repository()
        wait_for(lambda: any(True for _ in repo.list_segments(target.topic, 0)), 60,
                  "first segment")
        s3_service.stop()
        # Commits of segments made durable just before the stop may still land (later on a
        # loaded machine); then the offsets must stand still. A daemon that commits without
        # durability keeps moving them (events arrive at 200/s), and this times out.
        frozen = _settled(lambda: _committed(target.bootstrap, group_id, target.topic),
                          quiet_s=3.0, timeout=20.0)
        samples = []
        for _ in range(17):
            time.sleep(1)
            samples.append(_committed(target.bootstrap, group_id, target.topic))
        s3_service.start()
        assert all(s == frozen for s in samples), "offsets committed while the store was down"
        assert proc.poll() is None, "the daemon must survive a store outage"
        producer.join(90)
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env)
    log = read_everything(target.repository(), target.topic, 3)
    assert_exactly_once(log, produced + later, 3)
    assert assert_fields_equal(log, produced + later) > 5000
    final = _committed(target.bootstrap, group_id, target.topic)
    ends = {p: max(k.end for k in log.segments[p]) for p in range(3)}
    assert all(final[p] <= ends[p] for p in range(3)), (final, ends)
    lines = [orjson.loads(x) for x in (tmp_path / "daemon.log").read_text().splitlines()
             if x.startswith("{")]
    assert any(x.get("event") == "store write failed, will retry" for x in lines)


def test_two_daemons_split_partitions(target: Target, tmp_path: Path, group_id: str) -> None:
    w = mixed_stream(5, 0)
    produced = produce(target.bootstrap, target.topic, w.preamble())
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5,
                              dimensions=DIMS)
    a = start_vecwal("run", "--config", str(cfg), env=target.env, log_path=tmp_path / "a.log")
    producer, later = _produce_in_background(target, w, 3000, rate=600)
    time.sleep(2)
    b = start_vecwal("run", "--config", str(cfg), env=target.env, log_path=tmp_path / "b.log")
    b_log = tmp_path / "b.log"
    wait_for(lambda: b_log.exists() and '"partition assigned"' in b_log.read_text(), 90,
              "the second daemon's first assignment")
    producer.join(60)
    # More events once the partitions are split: both daemons have some to write, however
    # slowly the second one started (under load it could join after the first batch ended).
    later.extend(produce(target.bootstrap, target.topic, w.events(300), rate_per_s=600))
    repo = target.repository()
    highs = {p: max((pr.offset + 1 for pr in produced + later if pr.partition == p), default=0)
             for p in range(3)}

    def durable() -> bool:
        marks = {wm.partition: wm.captured_through for wm in repo.list_watermarks(target.topic)}
        return all(marks.get(p, 0) >= h for p, h in highs.items())

    wait_for(durable, 90, "both daemons to capture everything")
    for proc in (a, b):
        proc.send_signal(signal.SIGTERM)
    assert a.wait(60) == 0 and b.wait(60) == 0
    writers = {wm.writer for wm in repo.list_watermarks(target.topic)}
    assert len(writers) == 2, f"partitions were not split between the daemons: {writers}"
    log = read_everything(repo, target.topic, 3)
    assert_exactly_once(log, produced + later, 3, allow_overlap=True)
    assert assert_fields_equal(log, produced + later) > 2800


def test_sigterm_flushes_open_segments_and_exits_0(file_target: Target, tmp_path: Path,
                                                   group_id: str) -> None:
    w = mixed_stream(6, 0)
    cfg = file_target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=3600.0,
                                   dimensions=DIMS)
    proc = start_vecwal("run", "--config", str(cfg), log_path=tmp_path / "daemon.log")
    produced = produce(file_target.bootstrap, file_target.topic, [*w.preamble(), *w.events(200)])
    log_path = tmp_path / "daemon.log"
    wait_for(lambda: log_path.read_text().count('"partition assigned"') >= 3, 60, "assignment")
    time.sleep(3)  # consumed, but no segment is due for an hour
    assert not any(True for p in range(3) for _ in file_target.repository().list_segments(
        file_target.topic, p)), "nothing should be durable before SIGTERM"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log_path.read_text()[-3000:]
    log = read_everything(file_target.repository(), file_target.topic, 3)
    assert_exactly_once(log, produced, 3)


def test_wrong_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[kafka]\nbootstrap_servers = "x:1"\ntopics = ["t"]\n[storage]\n'
                   'url = "file:///tmp/x"\n[capture]\nsegment_max_age = 3\n')
    proc = vecwal("run", "--config", str(cfg), check=False)
    assert proc.returncode == 2
    assert "segment_max_age" in proc.stderr and "hint:" in proc.stderr


def test_metrics_and_health_endpoints(file_target: Target, tmp_path: Path,
                                      group_id: str) -> None:
    import urllib.request

    w = mixed_stream(7, 0)
    produced = produce(file_target.bootstrap, file_target.topic,
                       [*w.preamble(), *w.events(100), w.bad_event("unparseable")])
    cfg = file_target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5,
                                   dimensions=DIMS)
    log_path = tmp_path / "daemon.log"
    proc = start_vecwal("run", "--config", str(cfg), log_path=log_path)
    try:
        def address() -> str | None:
            for line in log_path.read_text().splitlines():
                if '"metrics endpoint"' in line:
                    return str(orjson.loads(line)["address"]).rsplit("/", 1)[0]
            return None

        wait_for(lambda: address() is not None, 30, "the metrics endpoint")
        base = address()
        repo = file_target.repository()
        highs = {p: max(pr.offset + 1 for pr in produced if pr.partition == p) for p in range(3)}
        wait_for(lambda: all((wm := repo.read_watermark(file_target.topic, p)) is not None
                              and wm.captured_through >= h for p, h in highs.items()),
                  60, "capture")
        time.sleep(1.5)  # one metrics tick after the last segment
        health = urllib.request.urlopen(f"{base}/healthz", timeout=5)
        ready = urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert health.status == 200 and ready.status == 200
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    topic = file_target.topic
    valid = sum(1 for p in produced if p.event.bad is None)
    assert samples[f'vecwal_events_captured_total{{topic="{topic}"}}'] == valid
    assert samples[f'vecwal_quarantined_events_total{{reason="unparseable",topic="{topic}"}}'] == 1
    assert samples[f'vecwal_segments_written_total{{topic="{topic}"}}'] >= 3
    assert samples["vecwal_segment_upload_seconds_count"] >= 3
    assert samples[f'vecwal_bytes_captured_total{{topic="{topic}"}}'] > 0
    for p in range(3):
        assert samples[f'vecwal_consumer_lag_events{{partition="{p}",topic="{topic}"}}'] == 0
        assert 0 <= samples[f'vecwal_rpo_seconds{{partition="{p}",topic="{topic}"}}'] < 30
    data_lines = [orjson.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    for line in data_lines:
        if line["event"] in ("segment durable", "event quarantined"):
            assert line["topic"] == topic and "partition" in line and "object" in line
            assert "offset" in line or ("from_offset" in line and "to_offset" in line)


def test_a_flood_of_bad_events_is_one_quarantine_object_per_segment(
        target: Target, tmp_path: Path, group_id: str) -> None:
    """2,000 bad events of every kind among 2,000 good ones: nothing lost, each bad offset in
    exactly one quarantine object, one object per segment that rejected any, few log lines."""
    w = Workload(seed=11, collections=dict(DIMS), oversize_bytes=30_000)
    kinds = itertools.cycle(BAD_KINDS)
    mixed = [ev for good in w.events(2_000) for ev in (good, w.bad_event(next(kinds)))]
    produced = produce(target.bootstrap, target.topic, [*w.preamble(), *mixed])
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_records=400,
                              segment_max_age_s=1.0, max_event_bytes=20_000, dimensions=DIMS)
    run = vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env)

    repo = target.repository()
    log = read_everything(repo, target.topic, 3)
    assert_exactly_once(log, produced, 3)
    assert assert_fields_equal(log, produced) == sum(1 for p in produced if p.event.bad is None)
    bad = {(p.partition, p.offset) for p in produced if p.event.bad is not None}
    assert len(bad) == 2_000
    held = Counter((k.partition, o) for k, offsets in log.quarantine_objects.items()
                   for o in offsets)
    assert set(held) == bad and set(held.values()) == {1}, "each bad offset in one object"
    rejecting = {QuarantineKey.of_segment(k) for p in range(3) for k in log.segments[p]
                 if repo.read_sidecar(k).quarantined}
    assert set(log.quarantine_objects) == rejecting, "one object per segment that rejected"
    assert not any(k.per_event for k in log.quarantine_objects)
    assert len(log.quarantine_objects) == len(rejecting) < 2_000 // 10
    assert {e.reason for e in log.quarantine.values()} == set(BAD_KINDS)

    lines = [orjson.loads(x) for x in run.stderr.splitlines() if x.startswith("{")]
    quarantined = [x for x in lines if x["event"] == "event quarantined"]
    assert len(BAD_KINDS) <= len(quarantined) < 100, "rate limited per reason, not per event"
    durable = [x for x in lines if x["event"] == "quarantine durable"]
    assert {x["object"] for x in durable} == {k.object_key for k in rejecting}
    assert sum(x["quarantined"] for x in durable) == 2_000
