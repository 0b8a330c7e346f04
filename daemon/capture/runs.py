"""Steps 2 and 3 of capture's commit order for the native codec's runs (``encode_runs``).

A run is consecutive encoded events of one partition and one collection, offsets rising, as
parallel lists (offsets, timestamps, value sizes, datums, ops, ids). ``RunIntake.take`` adds a
run to its partition's open segment in as few chunks as the segment limits allow: each chunk
is the events up to the one that fills the segment (``OpenSegment.fitting``), added at once
(``OpenSegment.add_run``), then the segment is sealed. What the segment, its sidecar and the
watermark hold is what adding the events one by one gives (``OpenSegment.add``): the same
datums, range, time bounds, op counts in the order the ops first appear, and ids; only the
Python work is per chunk, not per event.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

from daemon.capture.partition import PartitionState
from daemon.capture.sealing import CaptureSealer
from daemon.capture.timeline import CaptureClock, FutureStamps, restamp
from daemon.config import CaptureConfig
from daemon.kafka_headers import message_tail

Seal = Callable[[PartitionState, float, str], None]


class RunIntake:
    def __init__(self, cfg: CaptureConfig, future: FutureStamps, capture_timeline: bool,
                 sealer: CaptureSealer | None) -> None:
        self.cfg, self.future = cfg, future
        self.capture_timeline, self.sealer = capture_timeline, sealer

    def take(self, ps: PartitionState, run: tuple[Any, ...], msgs: Sequence[Any],
             seen_ms: int, now: float, seal: Seal) -> None:
        """Add ``run`` (``encode_runs``' tuple; its Kafka messages are ``msgs[first:]``) to
        ``ps``' open segment, sealing it (``seal``) each time it is full. ``seen_ms``: the
        wall time of the consume() call that fetched it."""
        first, _topic, _partition, collection, offsets, stamps, sizes, datums, ops, ids = run
        n = len(offsets)
        # Redeliveries of what the segment already covers are dropped (offsets rise).
        lo = bisect_left(offsets, ps.open.end) if offsets[0] < ps.open.end else 0
        if lo == n:
            return
        if max(stamps[lo:] if lo else stamps) > seen_ms:
            for j in range(lo, n):
                if stamps[j] > seen_ms:
                    self.future.check(ps, offsets[j], stamps[j], seen_ms)
        while lo < n:
            hi = ps.open.fitting(sizes, lo, n, self.cfg)
            chunk, times = datums[lo:hi], stamps[lo:hi]
            if self.capture_timeline:  # the producer's stamp goes beside capture's
                captured = CaptureClock.stamp(ps, seen_ms)  # one value until the next seal
                chunk = [restamp(d, captured, t, message_tail(msgs[first + j]))
                         for j, d, t in zip(range(lo, hi), chunk, times, strict=True)]
                times = [captured] * (hi - lo)
            if self.sealer is not None:  # per-tenant keys: content sealed
                chunk = [self.sealer.datum(d) for d in chunk]
            ps.open.add_run(chunk, offsets[hi - 1], times, sizes[lo:hi], ops[lo:hi],
                            collection, ids[lo:hi], now)
            if ps.open.full(self.cfg):  # size limits hold per event, not per batch
                seal(ps, now, "size")
            lo = hi
