"""Reading a window of the log: for each partition, the events from a start offset (a
snapshot's cut) in offset order, deduplicated, up to a stop rule: the first event with a
timestamp after a target time, or a target offset. Coverage is checked first: a window with a
hole is refused, never read partially."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.changelog.scan import Event, scan_segment
from daemon.changelog.segment import read_header
from daemon.errors import IntegrityError, ObjectNotFound, VecwalError
from daemon.objectstore.prefetch import prefetched

if TYPE_CHECKING:
    from daemon.changelog.watermark import Watermark


class Cut(Protocol):
    """Where a base snapshot left off (``snapshot.manifest.Manifest`` is one): the log after
    it starts at each partition's cut offset."""

    @property
    def cut_time_ms(self) -> int: ...

    def cut_of(self, topic: str, partition: int) -> int: ...


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
    """Contiguous from ``start``: up to ``gap`` if there is one, else to ``durable_end``."""
    sizes: dict[SegmentKey, int] = field(default_factory=dict)
    gap: tuple[int, int] | None = None
    """The first offsets after ``segments`` that no segment covers."""
    gap_safe_until_ms: int | None = None
    """A time target at or before this cannot need the gap (None: every time target may)."""

    @property
    def bytes(self) -> int:
        return sum(self.sizes.get(k, 0) for k in self.segments)

    def check_reach(self, until_ms: int | None, until_offset: int | None) -> None:
        """Raise CoverageGap if reading to the target may need offsets in the gap."""
        if self.gap is None:
            return
        a, b = self.gap
        where = f"log/{self.topic}/p={self.partition:05d}"
        if until_offset is not None:
            if until_offset <= a:
                return
        elif until_ms is not None and self.gap_safe_until_ms is not None \
                and until_ms <= self.gap_safe_until_ms:
            return
        safe = ("" if self.gap_safe_until_ms is None else
                f", or to a time at or before {self.gap_safe_until_ms} ms (epoch)")
        raise CoverageGap(
            f"{where} lacks offsets [{a}, {b}): no segment covers them, and the target "
            "may need them",
            f"a segment was deleted or never written; restore to offsets below {a}{safe}; "
            "`vecwal list` shows every gap")


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
    """The contiguous segments from ``start`` (pure), and the first gap after them, if any."""
    infos = sorted(listing, key=lambda ks: (ks[0].start, ks[0].end))
    end = durable_end if durable_end is not None else max((k.end for k, _ in infos), default=start)
    chosen, sizes = [], {}
    through = start
    gap = None
    for key, size in infos:
        if key.end <= through or key.start >= end:
            continue
        if key.start > through:
            gap = (through, key.start)
            break
        chosen.append(key)
        sizes[key] = size
        through = key.end
    if gap is None and through < end:
        gap = (through, end)
    return PartitionWindow(topic, partition, start, end, chosen, sizes, gap)


def offsets_after(windows: list[PartitionWindow], cut: dict[str, dict[str, int]]
                  ) -> dict[str, int]:
    """Per "topic/partition", the logged offsets beyond where a replay stopped (``cut``, the
    first offset not replayed per partition): events after the target, and any quarantined
    events among them."""
    return {f"{w.topic}/{w.partition}": max(0, w.durable_end - cut.get(w.topic, {}).get(
        str(w.partition), w.durable_end)) for w in windows}


def windows_after(repo: Repository, watermarks: list[Watermark], base: Cut | None
                ) -> list[PartitionWindow]:
    """Each watermarked partition's window from ``base``'s cut (or offset 0) to its
    watermark: the contiguous segments, and the first gap with its time bound."""
    windows = []
    for wm in watermarks:
        start = base.cut_of(wm.topic, wm.partition) if base else 0
        listing = list_partition_segments(repo, wm.topic, wm.partition)
        window = plan_window(listing, wm.topic, wm.partition, start, wm.captured_through)
        bound_gap(repo, window, base.cut_time_ms if base else None)
        windows.append(window)
    return windows


def bound_gap(repo: Repository, window: PartitionWindow, cut_time_ms: int | None) -> None:
    """Fill ``gap_safe_until_ms`` (a sidecar read or two): from the lost segment's own sidecar
    when it survived, else from the last event before the gap (events in the gap are no older
    than it, so targets before that time never reach the gap)."""
    if window.gap is None:
        return
    a, b = window.gap
    try:  # the lost segment's sidecar may have survived it: it knows the gap's first time
        lost = repo.read_sidecar(SegmentKey(window.topic, window.partition, a, b))
    except (IntegrityError, ObjectNotFound):
        lost = None
    if lost is not None and lost.min_timestamp is not None:
        window.gap_safe_until_ms = lost.min_timestamp - 1
    elif window.segments:
        side = repo.read_sidecar(window.segments[-1])
        if side.max_timestamp is not None:
            window.gap_safe_until_ms = side.max_timestamp - 1
    elif cut_time_ms is not None:
        window.gap_safe_until_ms = cut_time_ms  # events after a cut are later than its time


def split_window(window: PartitionWindow, parts: int) -> list[PartitionWindow]:
    """The window as up to ``parts`` consecutive sub-windows of about equal bytes (pure; a
    window of fewer segments gives fewer): reading them one after another reads exactly the
    window's events. Each starts where the segments before it end, so an overlapping segment's
    events are still read once; each but the last ends at its last segment's end (its
    ``durable_end``, no gap); the last keeps the window's end, gap and gap bound. A reader of
    a sub-window that stops early (``WindowReader.stopped_early``) is where the window's
    reading stops: the sub-windows after it are not part of the window's events."""
    segments = window.segments
    if parts < 2 or len(segments) < 2:
        return [window]
    total = sum(window.sizes.get(k, 0) for k in segments)
    groups: list[list[SegmentKey]] = [[]]
    done = 0
    for i, key in enumerate(segments):
        left = len(segments) - i
        if groups[-1] and len(groups) < parts and (
                done >= total * len(groups) / parts or left <= parts - len(groups)):
            groups.append([])
        groups[-1].append(key)
        done += window.sizes.get(key, 0)
    out = []
    start = window.start
    for g, group in enumerate(groups):
        last = g == len(groups) - 1
        end = window.durable_end if last else max(start, group[-1].end)
        out.append(PartitionWindow(
            window.topic, window.partition, start, end, group,
            {k: window.sizes[k] for k in group if k in window.sizes},
            window.gap if last else None, window.gap_safe_until_ms if last else None))
        start = max(start, group[-1].end)
    return out


@dataclass
class WindowReader:
    """Iterates one window's events; ``stopped_at`` is then the first offset not read, and
    ``stopped_early`` says whether a stop rule (the target's time or offset) ended the
    reading before the window's last segment was read through.

    Events are scanned, not decoded (``scan.py``): each says its offset, time, op, collection,
    tenant and id, gives its snapshot row (``row``) or its decoded dict (``event``). A segment
    whose header (or sidecar) says every event in it is after the target is not scanned at
    all, so a damaged segment past the target does not stop a restore before it."""

    repo: Repository
    window: PartitionWindow
    until_ms: int | None = None
    until_offset: int | None = None
    stopped_at: int = -1
    stopped_early: bool = False
    bytes_read: int = 0

    def __iter__(self) -> Iterator[Event]:
        w = self.window
        w.check_reach(self.until_ms, self.until_offset)
        through = w.start
        self.stopped_at = w.durable_end
        fetched = prefetched(self.repo.store, [k.avro for k in w.segments])
        for key, data in zip(w.segments, fetched, strict=True):
            if self.until_ms is not None and self._all_after(key, data, self.until_ms):
                self.stopped_at, self.stopped_early = through, True
                return
            self.bytes_read += w.sizes.get(key, 0)
            if data is None:
                data = self.repo.store.get(key.avro)
            for ev in scan_segment(key, data):
                offset = ev.offset
                if offset < through:
                    continue  # an overlapping segment: read once
                if self.until_offset is not None and offset >= self.until_offset:
                    self.stopped_at, self.stopped_early = offset, True
                    return
                if self.until_ms is not None and ev.timestamp > self.until_ms:
                    self.stopped_at, self.stopped_early = offset, True
                    return
                yield ev
            through = max(through, key.end)
            if self.until_offset is not None and through >= self.until_offset:
                self.stopped_at, self.stopped_early = self.until_offset, True
                return
        if w.gap is not None:  # at the gap: only a target it cannot contain may stop here
            w.check_reach(self.until_ms, self.until_offset)
        self.stopped_at = min(through, w.durable_end) if self.until_offset is None else \
            min(through, self.until_offset)

    def _all_after(self, key: SegmentKey, data: bytes | None, until_ms: int) -> bool:
        """True when every event of the segment is after ``until_ms``, asking the header
        first and the sidecar if the header is unreadable."""
        try:
            first = read_header(data if data is not None else self.repo.store.get(key.avro),
                                key.avro).min_timestamp
        except IntegrityError:
            try:
                first = self.repo.read_sidecar(key).min_timestamp
            except (IntegrityError, ObjectNotFound):
                return False  # unknowable: reading it will report the damage
        return first is not None and first > until_ms
