"""Reading a window of the log: for each partition, the events from a start offset (a
snapshot's cut) in offset order, deduplicated, up to a stop rule: the first event with a
timestamp after a target time, or a target offset. Coverage is checked first: a window with a
hole is refused, never read partially."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.errors import VecwalError
from daemon.objectstore.prefetch import prefetched


class CoverageGap(VecwalError):
    """The log lacks offsets a restore or compaction needs."""

    exit_code = 4


@dataclass
class PartitionWindow:
    topic: str
    partition: int
    start: int
    durable_end: int
    """Every offset below this is in the log (the watermark, or the last segment's end)."""
    segments: list[SegmentKey]
    sizes: dict[SegmentKey, int] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(self.sizes.get(k, 0) for k in self.segments)


SegmentListing = list[tuple[SegmentKey, int]]
"""(segment key, size in bytes) of one partition, as LIST returned them."""


def list_partition_segments(repo: Repository, topic: str, partition: int) -> SegmentListing:
    out = []
    for info in repo.store.list(f"log/{topic}/p={partition:05d}/"):
        key = SegmentKey.parse(info.key)
        if key is not None:
            out.append((key, info.size))
    return out


def plan_window(listing: SegmentListing, topic: str, partition: int, start: int,
                durable_end: int | None = None) -> PartitionWindow:
    """The segments covering [start, durable end) of one partition, in order (pure); raises
    CoverageGap naming the partition and the missing range."""
    infos = sorted(listing, key=lambda ks: (ks[0].start, ks[0].end))
    end = durable_end if durable_end is not None else max((k.end for k, _ in infos), default=start)
    chosen, sizes = [], {}
    through = start
    for key, size in infos:
        if key.end <= through or key.start >= end:
            continue
        if key.start > through:
            raise CoverageGap(
                f"log/{topic}/p={partition:05d} lacks offsets [{through}, {key.start}): no "
                "segment covers them",
                "a segment was deleted or never written; run `vecwal verify`, or restore to "
                "a time before the gap",
            )
        chosen.append(key)
        sizes[key] = size
        through = key.end
    if through < end:
        raise CoverageGap(
            f"log/{topic}/p={partition:05d} is durable to offset {end} but its segments end at "
            f"{through}",
            "a segment was deleted; run `vecwal verify`, or restore to an earlier time")
    return PartitionWindow(topic, partition, start, end, chosen, sizes)


@dataclass
class WindowReader:
    """Iterates one window's events; ``stopped_at`` is then the first offset not read."""

    repo: Repository
    window: PartitionWindow
    until_ms: int | None = None
    until_offset: int | None = None
    stopped_at: int = -1
    bytes_read: int = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        w = self.window
        through = w.start
        self.stopped_at = w.durable_end
        fetched = prefetched(self.repo.store, [k.avro for k in w.segments])
        for key, data in zip(w.segments, fetched, strict=True):
            self.bytes_read += w.sizes.get(key, 0)
            for rec in self.repo.read_segment(key, data):
                offset = rec["offset"]
                if offset < through:
                    continue  # an overlapping segment: read once
                if self.until_offset is not None and offset >= self.until_offset:
                    self.stopped_at = offset
                    return
                if self.until_ms is not None and rec["timestamp"] > self.until_ms:
                    self.stopped_at = offset
                    return
                yield rec
            through = max(through, key.end)
            if self.until_offset is not None and through >= self.until_offset:
                self.stopped_at = self.until_offset
                return
        self.stopped_at = min(through, w.durable_end) if self.until_offset is None else \
            min(through, self.until_offset)
