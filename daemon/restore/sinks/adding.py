"""One thread that adds rows to an engine while the restore decodes the next ones.

An engine's bulk call (a Milvus or Chroma insert, a LanceDB ``table.add``) spends much of its
time waiting on the server or in native code without the GIL; run from the restore's own
thread, that time is lost to decoding. ``Adder`` runs the calls on one thread, in the order
they were submitted (so an engine sees the same sequence of adds as without it), with at most
``pending`` of them queued or running: the rows held in memory stay bounded whatever the
backup's size. An add's error comes out of the next ``submit`` or ``drain`` (reads and
``finish`` drain first, so nothing is read before it is written)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Adder:
    def __init__(self, name: str, pending: int = 2) -> None:
        if pending < 1:
            raise ValueError("an adder holds at least one add")
        self.name = name
        self.pending = pending
        self._pool: ThreadPoolExecutor | None = None
        self._queued: deque[Future[None]] = deque()

    def submit(self, add: Callable[..., Any], *args: Any) -> None:
        """``add(*args)`` on the adding thread, after every add submitted before it. Waits
        while ``pending`` adds are queued or running (raising the first one's error)."""
        while len(self._queued) >= self.pending:
            self._queued.popleft().result()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        self._queued.append(self._pool.submit(add, *args))

    def drain(self) -> None:
        """Every submitted add done (the first error raised; the later adds still run, and
        a later drain raises theirs)."""
        while self._queued:
            self._queued.popleft().result()

    def close(self) -> None:
        """Wait for the adds in flight, errors dropped (the restore already failed or
        drained), and stop the thread."""
        queued, self._queued = self._queued, deque()
        for future in queued:
            future.exception()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
