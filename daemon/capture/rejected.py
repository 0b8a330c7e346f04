"""RejectedEvents: what capture does with an event it refuses, whichever judged it (the native
codec, in the parser's words, or the Python parser): the event is kept whole in its open
segment's quarantine (raw key and value, Kafka coordinates, reason, detail), counted by
``vecwal_quarantined_events_total`` and logged, rate limited (``QuarantineLog``).

A flood of bad events goes through here one by one, so it holds each (topic, reason)'s
counter rather than looking its labels up per event. With per-tenant keys, ``sealer`` seals
the entries of a segment when it is made durable (``make_durable``), off the loop thread.
"""

from __future__ import annotations

from typing import Any

from daemon.capture.quarantine_log import QuarantineLog
from daemon.capture.sealing import QuarantineSealer
from daemon.capture.segment_buffer import OpenSegment
from daemon.changelog.quarantine import QuarantineEntry
from daemon.metrics import Metrics


class RejectedEvents:
    def __init__(self, metrics: Metrics, log: QuarantineLog | None = None,
                 sealer: QuarantineSealer | None = None) -> None:
        self.metrics = metrics
        self.log = log or QuarantineLog()
        self.sealer = sealer
        self._counters: dict[tuple[str, str], Any] = {}

    def keep(self, segment: OpenSegment, entry: QuarantineEntry, size: int, now: float) -> None:
        """``entry``, ``size`` bytes from Kafka, into the quarantine of ``segment``."""
        segment.add_quarantined(entry, size, now)
        counter = self._counters.get((entry.topic, entry.reason))
        if counter is None:
            counter = self._counters[(entry.topic, entry.reason)] = \
                self.metrics.quarantined.labels(entry.topic, entry.reason)
        counter.inc()
        self.log.note(entry, segment.start, now)  # rate limited per (topic, reason)
