"""The compaction lease: one holder, expiry, renewal, release, no commit after losing it, and
exactly one winner of a takeover race, on file:// and on a real S3 server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.objectstore import ObjectStore, open_store
from daemon.snapshot.lease import (
    KEEP,
    Lease,
    LeaseHeld,
    LeaseLost,
    generation_key,
    old_layout_key,
)

Opener = Callable[[], ObjectStore]


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.integration)])
def opener(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[Opener]:
    """Opens a new client of one repository (each racer has its own, as processes would)."""
    opened: list[ObjectStore] = []
    if request.param == "file":
        def open_one() -> ObjectStore:
            opened.append(open_store(f"file://{tmp_path / 'repo'}"))
            return opened[-1]
    else:
        service = request.getfixturevalue("s3_service")
        bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", service.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", service.secret_key)
        for variable in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))

        def open_one() -> ObjectStore:
            opened.append(open_store(f"s3://{bucket}/repo", endpoint_url=service.endpoint_url,
                                     region=service.region))
            return opened[-1]
    yield open_one
    for store in opened:
        store.close()


def race(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` in threads released together; each result, or the exception raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def wait_expired(store: ObjectStore, lease: Lease) -> None:
    expires = orjson.loads(store.get(lease.key))["expires_at_ms"]
    time.sleep(max(0.0, expires / 1000 - time.time()) + 0.05)


def generations(store: ObjectStore, name: str = "compaction") -> list[int]:
    return [int(i.key.rsplit("/", 1)[1].removesuffix(".json"))
            for i in store.list(f"locks/{name}/")]


def test_one_holder_then_takeover_after_expiry(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    a = Lease(store, "compaction", ttl_s=0.3)
    a.acquire()
    with pytest.raises(LeaseHeld, match="held by") as held:
        Lease(store, "compaction", ttl_s=0.3).acquire()
    assert "delete locks/compaction/" in held.value.hint
    time.sleep(0.4)
    b = Lease(store, "compaction", ttl_s=0.3)
    b.acquire()  # a's lease expired: taken over
    assert b.generation == a.generation + 1
    with pytest.raises(LeaseLost, match="taken over"):
        a.check()
    a.renewed_at = 0.0  # due for renewal: renewing a lost lease is refused too
    with pytest.raises(LeaseLost):
        a.keep_alive()
    a.release()  # not ours any more: left alone
    assert orjson.loads(store.get(b.key))["token"] == b.token
    b.check()
    b.release()
    top = orjson.loads(store.get(generation_key("compaction", max(generations(store)))))
    assert top["released"] and top["token"] == b.token


def test_keep_alive_extends_the_expiry(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    lease = Lease(store, "compaction", ttl_s=0.6)
    lease.acquire()
    first = orjson.loads(store.get(lease.key))["expires_at_ms"]
    time.sleep(0.25)
    lease.keep_alive()
    renewed = orjson.loads(store.get(lease.key))
    assert renewed["expires_at_ms"] > first and renewed["token"] == lease.token
    time.sleep(0.45)  # past the first expiry, inside the renewed one
    with pytest.raises(LeaseHeld):
        Lease(store, "compaction", ttl_s=0.6).acquire()
    lease.check()
    lease.release()


def test_many_takers_of_an_expired_lease_one_wins(opener: Opener) -> None:
    """The bug this layout fixes: with delete-then-create two takers could both win."""
    dead = Lease(opener(), "compaction", ttl_s=0.2)
    dead.acquire()
    holder = dead
    for _ in range(3):
        wait_expired(holder.store, holder)
        # A ttl longer than the race takes: a winner's lease that expired while slow takers
        # still ran could rightly be taken over again.
        takers = [Lease(opener(), "compaction", ttl_s=30) for _ in range(12)]
        results = race([t.acquire for t in takers])
        winners = [t for t, r in zip(takers, results, strict=True) if r is None]
        assert len(winners) == 1, results
        assert all(isinstance(r, LeaseHeld) for r in results if r is not None), results
        holder = winners[0]
        holder.check()
        for loser in (t for t in takers if t is not holder):
            assert not loser.generation
        with pytest.raises(LeaseLost):
            dead.check()
        holder.ttl_s, holder.renewed_at = 0.2, 0.0
        holder.keep_alive()  # renewed to expire soon: the next round takes it over
    assert len(generations(holder.store)) <= KEEP


def test_first_acquire_race_one_wins(opener: Opener) -> None:
    takers = [Lease(opener(), "compaction", ttl_s=30) for _ in range(10)]
    results = race([t.acquire for t in takers])
    assert sum(r is None for r in results) == 1, results
    assert generations(takers[0].store) == [1]


def test_renewal_racing_takeover_one_wins(opener: Opener) -> None:
    for _ in range(3):
        holder = Lease(opener(), "compaction", ttl_s=0.2)
        holder.acquire()
        wait_expired(holder.store, holder)
        holder.ttl_s, holder.renewed_at = 30, 0.0  # due; renewed, it outlasts the race
        takers = [Lease(opener(), "compaction", ttl_s=30) for _ in range(6)]
        results = race([holder.keep_alive, *(t.acquire for t in takers)])
        renewed = results[0] is None
        took = [t for t, r in zip(takers, results[1:], strict=True) if r is None]
        assert renewed + len(took) == 1, results
        if renewed:
            holder.check()
            assert all(isinstance(r, LeaseHeld) for r in results[1:])
        else:
            assert isinstance(results[0], LeaseLost)
            with pytest.raises(LeaseLost):
                holder.check()
            took[0].check()
        (holder if renewed else took[0]).release()


def test_renewal_then_takeover_and_takeover_then_renewal(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    holder = Lease(store, "compaction", ttl_s=0.2)
    holder.acquire()
    wait_expired(store, holder)
    holder.ttl_s, holder.renewed_at = 30, 0.0
    holder.keep_alive()  # renewed after expiry, before anyone took over: still ours
    with pytest.raises(LeaseHeld):
        Lease(store, "compaction", ttl_s=0.2).acquire()
    holder.check()
    holder.ttl_s, holder.renewed_at = 0.2, 0.0
    holder.keep_alive()
    wait_expired(store, holder)
    taker = Lease(store, "compaction", ttl_s=5)
    taker.acquire()
    holder.renewed_at = 0.0
    with pytest.raises(LeaseLost, match="taken over by"):
        holder.keep_alive()
    taker.check()


def test_release_hands_over_at_once_and_never_revives_a_lost_holder(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    stale = Lease(store, "compaction", ttl_s=0.2)
    stale.acquire()
    wait_expired(store, stale)
    a = Lease(store, "compaction", ttl_s=60)
    a.acquire()
    released_at = a.generation + 1
    a.release()
    b = Lease(store, "compaction", ttl_s=60)
    b.acquire()  # a released it: no wait for its 60 s expiry
    assert b.generation == released_at + 1
    b.release()
    # The stale holder of the first generation finds successors (with delete-on-release it
    # would find none and believe it held the lease again).
    with pytest.raises(LeaseLost):
        stale.check()
    stale.renewed_at = 0.0
    with pytest.raises(LeaseLost):
        stale.keep_alive()
    stale.release()  # not ours: the released top stays
    assert orjson.loads(store.get(generation_key("compaction", max(generations(store)))))[
        "token"] == b.token


def test_old_generations_are_pruned(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    lease = Lease(store, "compaction", ttl_s=0.03)
    lease.acquire()
    for _ in range(10):
        time.sleep(0.011)
        lease.keep_alive()
    assert generations(store) == list(range(lease.generation - KEEP + 1, lease.generation + 1))
    lease.release()
    assert len(generations(store)) == KEEP


def test_deleted_chain_loses_the_lease(tmp_path: Path) -> None:
    """An operator deleted locks/compaction/ (its holder looked dead): the holder, if alive
    after all, must not commit nor revive its lease."""
    store = open_store(f"file://{tmp_path}")
    lease = Lease(store, "compaction", ttl_s=60)
    lease.acquire()
    for g in generations(store):
        store.delete(generation_key("compaction", g))
    other = Lease(store, "compaction", ttl_s=60)
    other.acquire()
    with pytest.raises(LeaseLost):
        lease.check()
    lease.renewed_at = 0.0
    with pytest.raises(LeaseLost):
        lease.keep_alive()
    lease.release()
    other.check()


class StaleFirstListing:
    """A store whose first listing of the lease is an old one (the chain moved on since)."""

    def __init__(self, store: ObjectStore, stale: list[str]) -> None:
        self.store, self.stale = store, stale

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def list(self, prefix: str, start_after: str = "") -> Iterator[Any]:
        if self.stale and prefix.startswith("locks/"):
            keys, self.stale = self.stale, []
            return (i for i in self.store.list(prefix, start_after) if i.key in keys)
        return self.store.list(prefix, start_after)


def test_a_stale_read_never_revives_a_pruned_generation(tmp_path: Path) -> None:
    """Generations 7.. were pruned after this taker read the chain: creating 7 again
    succeeds, but the LIST after it shows the real top, so the taker does not hold it."""
    store = open_store(f"file://{tmp_path}")
    for g in (6, 8, 9):  # 6 survived a failed prune; 7 was pruned
        store.put(generation_key("compaction", g), orjson.dumps(
            {"owner": "gone:1", "token": f"t{g}", "generation": g, "expires_at_ms": 0}))
    holder = Lease(store, "compaction", ttl_s=60, token="holder", generation=10)
    store.put(holder.key, holder._body(10))
    taker = Lease(StaleFirstListing(store, [generation_key("compaction", 6)]),  # type: ignore[arg-type]
                  "compaction", ttl_s=60)
    with pytest.raises(LeaseHeld, match="held by"):
        taker.acquire()
    assert not taker.generation
    assert orjson.loads(store.get(generation_key("compaction", 7)))["token"] == taker.token
    holder.check()


def test_old_layout_lock_is_held_until_its_expiry(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    old = {"owner": "old-host:4242", "token": "t", "expires_at_ms": int(time.time() * 1000) + 400}
    store.put(old_layout_key("compaction"), orjson.dumps(old))
    with pytest.raises(LeaseHeld, match="old-host:4242") as held:
        Lease(store, "compaction", ttl_s=5).acquire()
    assert "locks/compaction.json" in held.value.hint
    assert not generations(store), "a refused taker writes nothing"
    time.sleep(0.5)
    lease = Lease(store, "compaction", ttl_s=5)
    lease.acquire()
    lease.check()
    assert orjson.loads(store.get(old_layout_key("compaction"))) == old, "left for its owner"
    lease.release()
