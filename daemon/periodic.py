"""A job run every ``interval`` seconds on a background thread of `vecwal run` (compaction,
drills): ``start`` (nothing when the interval is 0), ``stop``, and ``run_once`` to override."""

from __future__ import annotations

import threading


class Periodic:
    def __init__(self, interval: float, name: str) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def before_first(self) -> None:
        """Runs once on the thread before the first interval (default: nothing)."""

    def run_once(self) -> object:
        raise NotImplementedError

    def _run(self) -> None:
        self.before_first()
        while not self._stop.wait(self.interval):
            self.run_once()
