"""prefetched: order kept, None passed through, never more than depth in flight."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from daemon.objectstore import open_store
from daemon.objectstore.prefetch import prefetched


class CountingStore:
    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def get(self, key: str) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(0.01)
        try:
            return self.inner.get(key)  # type: ignore[attr-defined,no-any-return]
        finally:
            with self.lock:
                self.in_flight -= 1


def test_prefetched_keeps_order_and_bounds_depth(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    keys = [f"k/{i:03d}" for i in range(20)]
    for i, k in enumerate(keys):
        store.put(k, str(i).encode())
    counting = CountingStore(store)
    wanted: list[str | None] = [*keys[:5], None, *keys[5:]]
    got = list(prefetched(counting, wanted, depth=3))  # type: ignore[arg-type]
    assert got == [None if k is None else str(keys.index(k)).encode() for k in wanted]
    assert 1 < counting.max_in_flight <= 3
