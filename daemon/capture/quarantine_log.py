"""The log lines of rejected events, rate limited per (topic, reason): a producer bug that sends
thousands of bad events a second must not also flood the log.

The first rejected event of a (topic, reason) is logged in full (``event quarantined``,
``count`` 1). Later ones are counted; the first one at least ``interval_s`` after the previous
line is logged in full too, with ``count``: how many of that topic and reason were quarantined
since the previous line (``since_s`` seconds ago), this one included. Every event is counted by the
``vecwal_quarantined_events_total`` metric whatever the log says, and each segment made durable
logs its rejected events by reason (``quarantine durable``, in ``make_durable``).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from daemon.changelog.keys import QuarantineKey
from daemon.changelog.quarantine import QuarantineEntry

log = structlog.get_logger("vecwal.capture")

LOG_INTERVAL_S = 10.0


@dataclass
class _Window:
    logged_at: float
    unlogged: int = 0
    """Events quarantined since the line at ``logged_at``."""


class QuarantineLog:
    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._windows: dict[tuple[str, str], _Window] = {}

    def note(self, entry: QuarantineEntry, segment_start: int, now: float) -> bool:
        """Count one rejected event of the open segment that starts at ``segment_start``;
        log it if its (topic, reason) is due a line. Returns whether it was logged."""
        window = self._windows.get((entry.topic, entry.reason))
        if window is not None and now - window.logged_at < self.interval_s:
            window.unlogged += 1
            return False
        count, since = (1, None) if window is None else \
            (window.unlogged + 1, round(now - window.logged_at, 1))
        self._windows[(entry.topic, entry.reason)] = _Window(now)
        log.warning("event quarantined", topic=entry.topic, partition=entry.partition,
                    offset=entry.offset, key=show_key(entry.key), reason=entry.reason,
                    detail=entry.detail, count=count, since_s=since,
                    object=QuarantineKey.pattern(entry.topic, entry.partition, segment_start))
        return True


def show_key(key: bytes | None) -> str | None:
    """A Kafka key for a log line: its text, or hex when it is not UTF-8."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return key.hex()
