"""The compaction lease: one holder, expiry, renewal, and no commit after losing it."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from daemon.objectstore import open_store
from daemon.snapshot.lease import Lease, LeaseHeld, LeaseLost


def test_one_holder_then_takeover_after_expiry(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    a = Lease(store, "compaction", ttl_s=0.3)
    a.acquire()
    with pytest.raises(LeaseHeld, match="held by"):
        Lease(store, "compaction", ttl_s=0.3).acquire()
    time.sleep(0.4)
    b = Lease(store, "compaction", ttl_s=0.3)
    b.acquire()  # a's lease expired: taken over
    with pytest.raises(LeaseLost, match="taken over"):
        a.check()
    a.renewed_at = 0.0  # due for renewal: renewing a lost lease is refused too
    with pytest.raises(LeaseLost):
        a.keep_alive()
    a.release()  # not ours any more: left alone
    assert orjson.loads(store.get(b.key))["token"] == b.token
    b.release()
    assert not list(store.list("locks/"))


def test_keep_alive_extends_the_expiry(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    lease = Lease(store, "compaction", ttl_s=0.6)
    lease.acquire()
    first = orjson.loads(store.get(lease.key))["expires_at_ms"]
    time.sleep(0.25)
    lease.keep_alive()
    assert orjson.loads(store.get(lease.key))["expires_at_ms"] > first
    time.sleep(0.45)  # past the first expiry, inside the renewed one
    with pytest.raises(LeaseHeld):
        Lease(store, "compaction", ttl_s=0.6).acquire()
    lease.release()
