"""The per-event quarantine layout as capture wrote it before one object per segment: for
tests that older repositories stay readable, and for the benchmark's baseline."""

from __future__ import annotations

import time

from daemon.capture.segment_buffer import SealedSegment
from daemon.changelog.keys import QuarantineKey
from daemon.changelog.quarantine import QuarantineEntry, SegmentQuarantine
from daemon.changelog.repository import Repository
from daemon.changelog.watermark import Watermark


def put_per_event(repo: Repository, entry: QuarantineEntry) -> None:
    """One rejected event as its own object, ``quarantine/<topic>/p=<p>/<offset>.json``."""
    key = QuarantineKey(entry.topic, entry.partition, entry.offset, entry.offset + 1,
                        per_event=True)
    repo.put_quarantine(SegmentQuarantine(key, [entry]))


def make_durable_per_event(repo: Repository, seg: SealedSegment, watermark: Watermark,
                           sealer: object = None) -> float:
    """``daemon.capture.loop.make_durable`` before: a PUT per rejected event, then the
    segment, its sidecar and the watermark (``sealer``: taken as ``make_durable`` takes it,
    unused: the per-event layout predates sealed entries)."""
    data, sidecar = seg.frame()
    began = time.monotonic()
    for entry in seg.quarantine:
        put_per_event(repo, entry)
    repo.put_segment(seg.key, data)
    repo.put_sidecar(sidecar)
    repo.write_watermark(watermark)
    return time.monotonic() - began
