"""Reading many objects in order with a few GETs in flight: restore and compaction read
segments and bucket files one after another, and on S3 each GET is a round trip."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from daemon.objectstore import ObjectStore


def prefetched(store: ObjectStore, keys: Iterable[str | None], depth: int = 4
               ) -> Iterator[bytes | None]:
    """The bytes of each key, in order, fetching up to ``depth`` ahead (None stays None).
    Memory holds at most ``depth + 1`` objects."""
    pending: deque[Future[bytes] | None] = deque()
    it = iter(keys)
    with ThreadPoolExecutor(max(1, depth), thread_name_prefix="vecwal-prefetch") as pool:

        def submit() -> bool:
            key = next(it, StopIteration)
            if key is StopIteration:
                return False
            pending.append(None if key is None else pool.submit(store.get, key))  # type: ignore[arg-type]
            return True

        for _ in range(depth):
            if not submit():
                break
        while pending:
            fut = pending.popleft()
            submit()
            yield None if fut is None else fut.result()
