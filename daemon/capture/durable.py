"""make_durable: steps 4 and 5 of capture's commit order (``daemon/capture/loop.py``) for one
sealed segment, on an upload thread: its quarantine object, the segment, its sidecar, then the
partition's watermark. With per-tenant keys the rejected events are sealed first, here (once:
a retry uploads the same entries)."""

from __future__ import annotations

import time

import structlog

from daemon.capture.sealing import QuarantineSealer
from daemon.capture.segment_buffer import SealedSegment
from daemon.changelog.keys import QuarantineKey
from daemon.changelog.quarantine import SegmentQuarantine
from daemon.changelog.repository import Repository
from daemon.changelog.watermark import Watermark

log = structlog.get_logger("vecwal.capture")


def make_durable(repo: Repository, seg: SealedSegment, watermark: Watermark,
                 sealer: QuarantineSealer | None = None) -> float:
    """Steps 4 and 5 of the commit order, for one sealed segment (framed and hashed here, on
    the upload thread, the first time; its rejected events sealed under their tenants' keys
    by ``sealer``). Returns the seconds the store took."""
    data, sidecar = seg.frame()
    if sealer is not None and seg.quarantine:
        seg.quarantine = sealer.seal(seg.quarantine)
    # The raw bytes of the segment's rejected events: one object, named by its range.
    rejected = SegmentQuarantine(QuarantineKey.of_segment(seg.key), seg.quarantine)
    began = time.monotonic()
    if seg.quarantine:
        repo.put_quarantine(rejected)  # create-only; identical is success
    # create-only; identical is success. The sidecar's digest goes with it: S3 checks the
    # body against it, so what is stored is what the sidecar describes.
    repo.put_segment(seg.key, data, bytes.fromhex(sidecar.sha256))
    repo.put_sidecar(sidecar)
    repo.write_watermark(watermark)  # last: readers trust it only after the segment exists
    took = time.monotonic() - began
    if seg.quarantine:
        log.info("quarantine durable", topic=seg.key.topic, partition=seg.key.partition,
                 from_offset=seg.key.start, to_offset=seg.key.end,
                 object=rejected.key.object_key, quarantined=len(seg.quarantine),
                 reasons=rejected.reasons())
    return took
