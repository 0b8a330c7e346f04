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
from daemon.errors import StoreUnavailable
from daemon.kafka_headers import message_tail

Seal = Callable[[PartitionState, float, str], None]
Hold = Callable[[PartitionState, int, Exception], None]


class RunIntake:
    def __init__(self, cfg: CaptureConfig, future: FutureStamps, capture_timeline: bool,
                 sealer: CaptureSealer | None) -> None:
        self.cfg, self.future = cfg, future
        self.capture_timeline, self.sealer = capture_timeline, sealer

    def take(self, ps: PartitionState, run: tuple[Any, ...], msgs: Sequence[Any],
             seen_ms: int, now: float, seal: Seal, hold: Hold) -> bool:
        """Add ``run`` (``encode_runs``' tuple; its Kafka messages are ``msgs[first:]``) to
        ``ps``' open segment, sealing it (``seal``) each time it is full. ``seen_ms``: the
        wall time of the consume() call that fetched it. With per-tenant keys, an event
        whose tenant key cannot be had now (the key service or the store does not answer)
        ends the run: the events before it are added, and ``hold`` reads the partition again
        from it later. False when that happened."""
        first, _topic, _partition, collection, offsets, stamps, sizes, datums, ops, ids = run
        n = len(offsets)
        # Redeliveries of what the segment already covers are dropped (offsets rise).
        lo = bisect_left(offsets, ps.open.end) if offsets[0] < ps.open.end else 0
        if lo == n:
            return True
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
            failed: StoreUnavailable | None = None
            if self.sealer is not None:  # per-tenant keys: content sealed
                chunk, failed = self._sealed(chunk)
                hi = lo + len(chunk)
                if not chunk:
                    assert failed is not None
                    hold(ps, offsets[lo], failed)
                    return False
            ps.open.add_run(chunk, offsets[hi - 1], times[:hi - lo], sizes[lo:hi], ops[lo:hi],
                            collection, ids[lo:hi], now)
            if ps.open.full(self.cfg):  # size limits hold per event, not per batch
                seal(ps, now, "size")
            if failed is not None:
                hold(ps, offsets[hi], failed)
                return False
            lo = hi
        return True

    def _sealed(self, datums: list[bytes]) -> tuple[list[bytes], StoreUnavailable | None]:
        """``datums`` sealed, up to the first whose tenant key cannot be had now, and why."""
        assert self.sealer is not None
        out = []
        try:
            for d in datums:
                out.append(self.sealer.datum(d))
        except StoreUnavailable as exc:  # KeyServiceUnavailable is one
            return out, exc
        return out, None
