"""Prune on a real S3 server that enforces Object Lock (SeaweedFS): what is still locked is
skipped and reported with its retain-until date, deleted by the next prune after it; restore
points kept beyond the window get their locks extended; restores stay exact throughout."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.changelog.repository import Repository
from daemon.errors import ObjectLocked
from daemon.lifecycle.listing import gather_listing
from daemon.lifecycle.plan import plan_prune
from daemon.lifecycle.policy import Policy
from daemon.lifecycle.prune import prune
from daemon.objectstore.s3 import S3Store
from daemon.snapshot.compactor import Compactor, list_manifests
from daemon.snapshot.manifest import manifest_key
from daemon.snapshot.retention import read_retention
from tests.oracle.history import TOPIC, History, generate, write_log
from tests.oracle.test_prune import HOUR, check_restores, hours_apart

pytestmark = pytest.mark.integration
LOCK_S = 20


def recent(history: History, now_ms: int) -> History:
    """Shift the history so that its last event is an hour before ``now_ms``."""
    shift = now_ms - HOUR - max(e["timestamp"] for p in history.events for e in p)
    for events in history.events:
        for ev in events:
            ev["timestamp"] += shift
    return history


def test_prune_skips_locked_objects_then_deletes_them_and_extends_restore_points(
        seaweedfs_service: Any, seaweedfs_lock_bucket: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs_service.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs_service.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", seaweedfs_service.region)
    store = S3Store(seaweedfs_lock_bucket, "repo", endpoint_url=seaweedfs_service.endpoint_url,
                    object_lock="governance", lock_s=LOCK_S)
    store.check_object_lock()
    repo = Repository(store)
    began = int(time.time() * 1000)
    history = recent(hours_apart(generate(5, 150)), began)
    times = history.times
    write_log(repo, history, 5)
    for k in range(1, 6):
        Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4).compact(
            times[len(times) * k // 6])
    policy = Policy(window_ms=24 * HOUR, grace_ms=0, keep_daily=2)
    lock_ms = LOCK_S * 1000

    first = prune(repo, policy, confirm=True, lock_ms=lock_ms)
    assert first.locked, "objects written seconds ago are still locked"
    assert not first.failed
    now = int(time.time() * 1000)
    assert all(u is not None and now - 5000 < u <= now + lock_ms + 5000 for _, u in first.locked)
    locked_keys = {k for k, _ in first.locked}
    assert all(store.head(k) for k in locked_keys), "the server kept them"
    record = read_retention(repo)
    assert record is not None and record.points, "restore points beyond the window"
    assert first.extended > 0
    point = record.points[0].snapshot
    assert (store.retain_until(manifest_key(point)) or 0) >= first.plan.now_ms + lock_ms - 1000
    check_restores(repo, history, record, [times[-1], record.points[0].cut_time_ms],
                   tmp_path / "a")

    time.sleep(max(0.0, (max(u or 0 for _, u in first.locked) - time.time() * 1000) / 1000) + 1)
    second = prune(repo, policy, confirm=True, lock_ms=lock_ms)
    assert not second.failed
    gone = {k for k in locked_keys if not any(True for _ in store.list(k))}
    assert gone == locked_keys - {k for k, _ in second.locked}, "unlocked ones went"
    assert len(gone) > 0
    now = int(time.time() * 1000)
    plan = plan_prune(gather_listing(repo, now), policy, now, read_retention(repo))
    assert plan.total == (0, 0) or {k for v in plan.deletions.values() for k in
                                    (d.key for d in v)} <= {k for k, _ in second.locked}
    # The restore point outlived the lock its objects got when written: extended, so the
    # server still refuses to delete it.
    assert point in list_manifests(repo)
    refused = store.delete_many([manifest_key(point)])
    assert isinstance(refused.get(manifest_key(point)), ObjectLocked)
    record = read_retention(repo)
    assert record is not None
    check_restores(repo, history, record, [times[-1], record.points[0].cut_time_ms],
                   tmp_path / "b")


def test_capture_compaction_and_prune_into_a_locked_bucket(
        seaweedfs_service: Any, seaweedfs_lock_bucket: str, kafka_bootstrap: str,
        kafka_topic: Any, tmp_path: Path, group_id: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon as a user runs it, with [storage] object_lock: capture (twice, a restart
    between), compaction and prune cope; segments are locked, watermarks are not."""
    from daemon.workload import produce
    from tests.integration.harness import (
        Target,
        assert_exactly_once,
        read_everything,
        vecwal,
    )
    from tests.integration.test_capture import DIMS, mixed_stream

    target = Target(bootstrap=kafka_bootstrap, topic=kafka_topic(partitions=3),
                    storage_url=f"s3://{seaweedfs_lock_bucket}/repo",
                    endpoint_url=seaweedfs_service.endpoint_url,
                    env={"AWS_ACCESS_KEY_ID": seaweedfs_service.access_key,
                         "AWS_SECRET_ACCESS_KEY": seaweedfs_service.secret_key,
                         "AWS_REGION": seaweedfs_service.region})
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_records=100,
                              segment_max_age_s=1.0, dimensions=DIMS)
    text = cfg.read_text().replace("[storage]\n", '[storage]\nobject_lock = "governance"\n'
                                   "lock_days = 1\n", 1)
    cfg.write_text(text + '\n[retention]\nwindow = "1h"\ngrace = "0s"\n')
    w = mixed_stream(3, 600)
    produced = produce(target.bootstrap, target.topic, [*w.preamble(), *w.events(300)])
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env)
    produced += produce(target.bootstrap, target.topic, w.events(300))
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env)
    assert_exactly_once(read_everything(target.repository(), target.topic, 3), produced, 3)

    vecwal("compact", "--config", str(cfg), env=target.env)
    pruned = json.loads(vecwal("prune", "--config", str(cfg), "--confirm", "--json",
                               env=target.env).stdout)
    assert pruned["executed"] and not pruned["failed"]
    for name, value in target.env.items():
        monkeypatch.setenv(name, value)
    locked = S3Store(seaweedfs_lock_bucket, "repo", endpoint_url=seaweedfs_service.endpoint_url,
                     object_lock="governance", lock_s=86_400)
    segment = next(i.key for i in locked.list("log/") if i.key.endswith(".avro"))
    assert (locked.retain_until(segment) or 0) > time.time() * 1000 + 23 * 3_600_000
    watermark = next(i.key for i in locked.list("state/watermark/"))
    assert locked.retain_until(watermark) is None, "watermarks are overwritten: never locked"
    refused = locked.delete_many([segment])
    assert isinstance(refused.get(segment), ObjectLocked), "the server refuses"
    verify = json.loads(vecwal("verify", "--config", str(cfg), "--json", env=target.env).stdout)
    assert verify["ok"], verify
