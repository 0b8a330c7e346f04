"""Reading one partition's log back: segments in offset order, deduplicated by offset.

Two segments may overlap (a zombie writer after a rebalance, a crash between upload and
watermark); every offset is read from the first segment that covers it and skipped after.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository


@dataclass(frozen=True)
class Coverage:
    """Which offsets of a partition the log covers: [start, end) minus ``gaps``."""

    start: int | None
    end: int | None
    gaps: list[tuple[int, int]]


def coverage(keys: Iterable[SegmentKey]) -> Coverage:
    ordered = sorted(keys, key=lambda k: (k.start, k.end))
    if not ordered:
        return Coverage(None, None, [])
    gaps: list[tuple[int, int]] = []
    through = ordered[0].start
    for k in ordered:
        if k.start > through:
            gaps.append((through, k.start))
        through = max(through, k.end)
    return Coverage(ordered[0].start, through, gaps)


def read_partition(repo: Repository, topic: str, partition: int,
                   from_offset: int = 0) -> Iterator[dict[str, Any]]:
    """Every captured record of the partition from ``from_offset`` on, once, in offset order."""
    through = from_offset
    for key in repo.list_segments(topic, partition):
        if key.end <= through:
            continue
        for rec in repo.read_segment(key):
            offset = rec["offset"]
            assert isinstance(offset, int)
            if offset >= through:
                yield rec
        through = max(through, key.end)
