"""Prune on the real S3 server: a restore that planned from a snapshot prune then expires
still finds every file and segment it reads (the grace period), while prune deletes beside it;
and a prune's deletes are batched (a few DeleteObjects calls, not one call per object)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.changelog.repository import Repository
from daemon.lifecycle.policy import Policy
from daemon.lifecycle.prune import prune
from daemon.objectstore import ObjectStore, open_store
from daemon.restore.executor import execute
from daemon.restore.planner import Scope, gather, make_plan
from daemon.restore.sinks.directory import DirSink
from daemon.restore.target import parse_target
from daemon.restore.validate import validate
from daemon.snapshot.compactor import Compactor, list_manifests
from daemon.snapshot.datafile import decode_records
from tests.component.fakes import FlakyStore
from tests.oracle.history import TOPIC, generate, replay, write_log
from tests.oracle.test_oracle import assert_same
from tests.oracle.test_prune import HOUR, hours_apart

pytestmark = pytest.mark.integration


class SlowReads(FlakyStore):
    """The restore's view of the same bucket: every read takes a while, so prune runs to the
    end while the restore is still reading."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.reads = 0

    def get(self, key: str) -> bytes:
        self.reads += 1
        time.sleep(0.05)
        return super().get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self.reads += 1
        time.sleep(0.05)
        return super().get_range(key, start, length)


class CountingStore(FlakyStore):
    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.delete_calls = 0

    def delete(self, key: str) -> None:
        self.delete_calls += 1
        super().delete(key)

    def delete_many(self, keys: Any) -> Any:
        self.delete_calls += 1
        return super().delete_many(keys)


def test_a_restore_running_while_prune_deletes_succeeds(
        s3_service: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_service.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_service.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_service.region)
    url = f"s3://{s3_bucket}/repo"
    store = CountingStore(open_store(url, endpoint_url=s3_service.endpoint_url))
    repo = Repository(store)
    history = hours_apart(generate(21, 200))
    times = history.times
    write_log(repo, history, 21)
    cuts = [times[len(times) * k // 6] for k in range(1, 6)]
    for cut in cuts:
        Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4).compact(cut)

    # A restore to an instant between the 2nd and 3rd cut plans from the 2nd snapshot...
    target_ms = (cuts[1] + cuts[2]) // 2
    slow = SlowReads(open_store(url, endpoint_url=s3_service.endpoint_url))
    target = parse_target(str(target_ms), now_ms=10**15)
    plan = make_plan(gather(Repository(slow), [TOPIC], target), target, Scope(),
                     allow_incomplete=True)
    assert plan.snapshot is not None and plan.snapshot.cut_time_ms == cuts[1]
    # ...and then prune moves the window past the target: older snapshots, their files and the
    # log before the 2nd cut go, while the restore (planned less than grace ago) reads.
    now = target_ms + 24 * HOUR + HOUR
    policy = Policy(window_ms=24 * HOUR, grace_ms=3 * HOUR)
    assert now - policy.window_ms - policy.grace_ms < target_ms < now - policy.window_ms
    outcome: dict[str, Any] = {}

    def restore() -> None:
        sink = DirSink(tmp_path / "out")
        result = execute(Repository(slow), plan, sink)
        outcome["report"] = validate(result, sink)

    worker = threading.Thread(target=restore)
    worker.start()
    while slow.reads < 2 and worker.is_alive():
        time.sleep(0.01)
    store.delete_calls = 0
    result = prune(repo, policy, confirm=True, now_ms=now)
    assert worker.is_alive(), "prune finished while the restore was still reading"
    worker.join(120)
    kept = list_manifests(repo)
    assert not any(sid.startswith(f"{cuts[0]:013d}") for sid in kept), "the 1st snapshot went"
    assert kept[0].startswith(f"{cuts[1]:013d}"), "the restore's snapshot is the window's anchor"
    assert result.deleted["manifests"][0] == 1 and result.deleted["segments"][0] > 0
    assert outcome["report"].ok, outcome["report"].to_dict()

    want, _, _ = replay(history, target_ms)
    got = {(r["collection"], r["tenant"], r["id"]): r
           for f in sorted((tmp_path / "out").glob("*/part-*.avro"))
           for r in decode_records(f.read_bytes(), str(f))}
    assert_same(got, want)
    # One DeleteObjects call per kind here (each under 1,000 keys), plus the lease's own.
    assert store.delete_calls <= len(result.deleted) + 3, "deletes are batched by kind"
