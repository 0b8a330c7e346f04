"""Prune against the oracle: for random histories, compactions and policies, every instant
the policy promises (the window, the kept restore points) restores after prune exactly as a
plain replay says, field by field; a target outside is refused with the window in the message;
and a second prune finds nothing more to delete. A prune killed at every step, then run again,
keeps the same promises and leaves nothing that should have gone."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.changelog.repository import Repository
from daemon.lifecycle.listing import gather_listing
from daemon.lifecycle.plan import plan_prune
from daemon.lifecycle.policy import Policy
from daemon.lifecycle.prune import prune
from daemon.objectstore import ObjectStore, open_store
from daemon.restore.planner import RestoreRefused
from daemon.snapshot.compactor import Compactor, list_manifests
from daemon.snapshot.retention import RetentionRecord, read_retention
from tests.component.fakes import FlakyStore
from tests.oracle.history import TOPIC, History, generate, replay, write_log
from tests.oracle.test_oracle import assert_same, restore_to

HOUR = 3_600_000


def hours_apart(history: History) -> History:
    """The generator's milliseconds become hours, so a history spans days and weeks and the
    calendar rules (daily, weekly...) have something to choose from."""
    for events in history.events:
        for ev in events:
            ev["timestamp"] *= HOUR
    return history


def build(tmp: str, history: History, seed: int, cuts: list[int],
          store: ObjectStore | None = None) -> Repository:
    repo = Repository(store or open_store(f"file://{tmp}/repo"))
    write_log(repo, history, seed)
    for cut in sorted(set(cuts)):
        Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4).compact(cut)
    return repo


def check_restores(repo: Repository, history: History, record: RetentionRecord,
                   targets: list[int], out: Path) -> None:
    for i, t in enumerate(targets):
        if record.allows(t):
            got, catalog = restore_to(repo, t, out / f"r{i}")
            want, want_catalog, _ = replay(history, t)
            assert_same(got, want)
            assert {k: catalog[k] for k in ("collections", "aliases", "tenants")} == want_catalog
        else:
            with pytest.raises(RestoreRefused, match="outside the restorable window"):
                restore_to(repo, t, out / f"r{i}")


def nothing_left(repo: Repository, policy: Policy, now: int) -> None:
    plan = plan_prune(gather_listing(repo, now), policy, now, read_retention(repo))
    assert plan.total == (0, 0), plan.counts()


POLICIES = st.builds(
    Policy, window_ms=st.sampled_from([6 * HOUR, 24 * HOUR, 72 * HOUR]),
    grace_ms=st.sampled_from([0, 0, 3 * HOUR]), keep_daily=st.integers(0, 3), keep_weekly=st.integers(0, 2),
    keep_monthly=st.integers(0, 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(30, 150), data=st.data(), policy=POLICIES)
def test_prune_keeps_every_promised_restore(seed: int, n: int, data: st.DataObject,
                                            policy: Policy) -> None:
    history = hours_apart(generate(seed, n))
    times = history.times
    cuts = data.draw(st.lists(st.sampled_from(times), min_size=1, max_size=6))
    now = times[-1] + data.draw(st.integers(0, 96)) * HOUR
    targets = data.draw(st.lists(st.sampled_from([*times, *cuts]), min_size=1, max_size=4))
    assert policy.window_ms is not None
    with tempfile.TemporaryDirectory() as tmp:
        repo = build(tmp, history, seed, cuts)
        before = set(list_manifests(repo))
        # Prune lists the log only below its floor; it plans the same deletions as from a
        # listing of everything.
        full = plan_prune(gather_listing(repo, now), policy, now)
        bounded = plan_prune(gather_listing(repo, now, policy), policy, now)
        assert bounded.deletions == full.deletions and bounded.record == full.record
        result = prune(repo, policy, confirm=True, now_ms=now)
        record = read_retention(repo)
        assert record is not None
        # The promise: every instant of the window, and every kept point's cut.
        horizon = now - policy.window_ms
        assert all(record.allows(t) for t in [*times, *cuts] if t >= horizon)
        kept = set(list_manifests(repo))
        assert kept <= before and kept == set(result.plans[-1].keep.reasons)
        assert all(record.allows(int(sid.split("-")[0])) for sid in kept)
        check_restores(repo, history, record, [*targets, *(t for t in times if t >= horizon)][:6],
                       Path(tmp))
        nothing_left(repo, policy, now)


class Killed(BaseException):
    """kill -9: nothing after it runs, not even an except clause."""


class KillingStore(FlakyStore):
    """Dies at the ``kill_at``-th write or delete (puts, deletes, delete batches)."""

    def __init__(self, inner: ObjectStore, kill_at: int) -> None:
        super().__init__(inner)
        self.kill_at, self.writes, self.dead = kill_at, 0, False

    def _check(self) -> None:
        if self.dead:  # the process is gone: not even a finally clause reaches the store
            raise Killed
        super()._check()

    def _write(self) -> None:
        self.writes += 1
        if self.writes == self.kill_at:
            self.dead = True
            raise Killed

    def put(self, key: str, data: bytes, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        self._write()
        super().put(key, data, create_only=create_only, sha256=sha256)

    def delete(self, key: str) -> None:
        self._write()
        super().delete(key)

    def delete_many(self, keys: Any) -> Any:
        self._write()
        return super().delete_many(keys)


def shape(store: ObjectStore) -> list[str]:
    """The keys, without the random part of snapshot and file ids (each build draws its own)
    and without leases."""
    return sorted(re.sub(r"-[0-9a-f]{8}(?=[./])", "", i.key) for i in store.list("")
                  if not i.key.startswith("locks/"))


def test_prune_killed_at_every_step_then_run_again(tmp_path: Path) -> None:
    history = hours_apart(generate(11, 150))
    times = history.times
    cuts = [times[len(times) * k // 6] for k in range(1, 6)]
    now = times[-1] + 2 * HOUR
    policy = Policy(window_ms=24 * HOUR, grace_ms=0, keep_daily=1)
    targets = [cuts[0], cuts[2], times[-1] - 20 * HOUR, times[-1] - HOUR, times[-1]]
    # How many writes a whole prune makes: kill at each of them in turn.
    probe = KillingStore(open_store(f"file://{tmp_path / 'probe'}/repo"), kill_at=-1)
    build(str(tmp_path / "probe"), history, 11, cuts)
    probe_repo = Repository(probe)
    prune(probe_repo, policy, confirm=True, now_ms=now, lease_ttl_s=0.001)
    steps = probe.writes
    assert steps >= 6, "a prune that deletes something makes several writes"
    expected = shape(probe.inner)
    for kill_at in range(1, steps + 1):
        root = tmp_path / f"k{kill_at}"
        build(str(root), history, 11, cuts)
        killing = KillingStore(open_store(f"file://{root}/repo"), kill_at)
        with pytest.raises(Killed):
            prune(Repository(killing), policy, confirm=True, now_ms=now, lease_ttl_s=0.001)
        repo = Repository(open_store(f"file://{root}/repo"))
        prune(repo, policy, confirm=True, now_ms=now, lease_ttl_s=0.001)  # takes over the lease
        assert shape(repo.store) == expected, f"killed at write {kill_at}"
        record = read_retention(repo)
        assert record is not None
        check_restores(repo, history, record, targets, root / "out")
        nothing_left(repo, policy, now)


def test_a_target_outside_the_window_is_refused_with_the_window(tmp_path: Path) -> None:
    history = hours_apart(generate(3, 120))
    times = history.times
    n = len(times)
    cuts = [times[n // 8], times[n // 2], times[n * 3 // 4]]
    repo = build(str(tmp_path), history, 3, cuts)
    now = times[-1]
    prune(repo, Policy(window_ms=now - cuts[2], grace_ms=0), confirm=True, now_ms=now)
    with pytest.raises(RestoreRefused) as refused:
        restore_to(repo, times[n // 4], tmp_path / "out")
    assert "every instant from" in str(refused.value) and "vecwal list" in refused.value.hint
    record = read_retention(repo)
    assert record is not None and record.window_from_ms == cuts[2]
    check_restores(repo, history, record, [cuts[2], times[n * 7 // 8], times[-1]], tmp_path / "ok")


def test_files_of_an_expired_snapshot_go_one_grace_after_its_manifest(tmp_path: Path) -> None:
    history = hours_apart(generate(9, 150))
    times = history.times
    cuts = [times[len(times) * k // 5] for k in range(1, 5)]
    repo = build(str(tmp_path), history, 9, cuts)
    policy = Policy(window_ms=24 * HOUR, grace_ms=3 * HOUR)
    now = times[-1] + 2 * HOUR
    first = prune(repo, policy, confirm=True, now_ms=now)
    assert first.deleted["manifests"][0] >= 1 and "data" not in first.deleted
    waiting = first.plan.waiting["data"][0]
    assert waiting > 0, "the expired snapshots' own files wait for grace"
    early = prune(repo, policy, confirm=True, now_ms=now + 3 * HOUR - 1)
    assert "data" not in early.deleted, "not before grace has passed"
    on_time = prune(repo, policy, confirm=True, now_ms=now + 3 * HOUR)
    assert on_time.deleted["data"][0] == waiting, "exactly one grace after the manifest went"
    record = read_retention(repo)
    assert record is not None
    kept = [t for t in times if record.allows(t)]
    check_restores(repo, history, record, [kept[0], kept[len(kept) // 2], kept[-1]],
                   tmp_path / "out")
    nothing_left(repo, policy, now + 3 * HOUR)


class ListingCounter(FlakyStore):
    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner)
        self.listed: list[str] = []

    def list(self, prefix: str, start_after: str = "") -> Any:
        for info in super().list(prefix, start_after):
            self.listed.append(info.key)
            yield info


def test_prune_lists_the_log_only_below_its_floor(tmp_path: Path) -> None:
    history = hours_apart(generate(4, 150))
    times = history.times
    cuts = [times[len(times) * k // 5] for k in range(1, 5)]
    build(str(tmp_path), history, 4, cuts)
    counter = ListingCounter(open_store(f"file://{tmp_path}/repo"))
    repo = Repository(counter)
    now = times[-1] + 2 * HOUR
    policy = Policy(window_ms=24 * HOUR, grace_ms=1)  # (grace > 0: one pass)
    result = prune(repo, policy, confirm=True, now_ms=now)
    floor = result.plan.record.log_floor[TOPIC]
    assert floor, "the window's anchor cut the log"
    listed_log = [k for k in counter.listed if k.startswith("log/")]
    deleted = result.deleted["segments"][0] + result.deleted["sidecars"][0]
    # Per partition: what goes, a segment and sidecar across the floor, and the one key that
    # told the listing to stop.
    assert deleted <= len(listed_log) <= deleted + 3 * len(floor)
    everything = [i.key for i in repo.store.list("log/")]
    assert len(everything) > len(floor), "the log the window keeps was not listed"
