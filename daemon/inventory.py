"""``vecwal list``: what a repository holds (snapshots with their pins, segments per partition)
and the window of times it can restore to."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from daemon.changelog.reader import coverage
from daemon.changelog.repository import Repository
from daemon.changelog.window import list_partition_segments
from daemon.lifecycle.pins import list_pins, pins_by_snapshot
from daemon.snapshot.compactor import list_manifests, readable_manifests, repository_valid_through
from daemon.snapshot.retention import read_retention
from daemon.status import iso_ms


@dataclass(frozen=True)
class SnapshotSummary:
    id: str
    cut_time: str | None
    cut_time_ms: int
    records: int
    bytes: int
    collections: dict[str, int]
    parent: str | None
    pins: list[dict[str, Any]] = field(default_factory=list)
    """``Pin.to_dict`` of each pin of this snapshot, active or expired."""


@dataclass(frozen=True)
class PartitionSummary:
    topic: str
    partition: int
    segments: int
    bytes: int
    from_offset: int | None
    to_offset: int | None
    gaps: list[tuple[int, int]]


@dataclass
class Inventory:
    repository: str
    snapshots: list[SnapshotSummary] = field(default_factory=list)
    partitions: list[PartitionSummary] = field(default_factory=list)
    restorable_from: str | None = None
    restorable_to: str | None = None
    restorable_from_ms: int | None = None
    restorable_to_ms: int | None = None
    unknown_pins: list[dict[str, Any]] = field(default_factory=list)
    """Pins of snapshots this listing does not show (deleted, or of another format)."""
    restore_points: list[dict[str, Any]] = field(default_factory=list)
    """After a prune: the snapshots kept beyond the window, restorable at exactly their cut."""
    pruned_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_inventory(repo: Repository, topics: list[str]) -> Inventory:
    inv = Inventory(repo.store.url)
    now_ms = int(time.time() * 1000)
    pins = pins_by_snapshot(list_pins(repo))
    for m in readable_manifests(repo, list_manifests(repo)):  # as restore sees them
        inv.snapshots.append(SnapshotSummary(
            m.id, iso_ms(m.cut_time_ms), m.cut_time_ms, m.records, m.total_bytes,
            {c: s.records for c, s in m.collections.items()}, m.parent,
            [p.to_dict(now_ms) for p in pins.pop(m.id, [])]))
    inv.unknown_pins = [p.to_dict(now_ms) for ps in pins.values() for p in ps]
    first_times = []
    for topic in topics:
        for wm in repo.list_watermarks(topic):
            listing = list_partition_segments(repo, topic, wm.partition)
            keys = sorted(k for k, _ in listing)
            inv.partitions.append(PartitionSummary(
                topic, wm.partition, len(keys), sum(size for _, size in listing),
                keys[0].start if keys else None, max((k.end for k in keys), default=None),
                coverage(keys).gaps))
            for key in keys:  # the first segment with a record gives the log's first time
                side = repo.read_sidecar(key)
                if side.min_timestamp is not None:
                    first_times.append(side.min_timestamp)
                    break
    valid = repository_valid_through(repo, topics)
    earliest: int | None
    if inv.snapshots:
        earliest = inv.snapshots[0].cut_time_ms
        if all(p.from_offset in (0, None) for p in inv.partitions) and first_times:
            earliest = min(earliest, min(first_times))
    else:
        earliest = min(first_times) if first_times else None
    record = read_retention(repo)
    if record is not None:  # what the last prune kept, not what the oldest snapshot suggests
        inv.pruned_at = iso_ms(record.pruned_at_ms)
        inv.restore_points = [{"snapshot": p.snapshot, "cut_time": iso_ms(p.cut_time_ms),
                               "cut_time_ms": p.cut_time_ms, "why": p.why}
                              for p in record.points]
        if record.window_from_ms is not None:
            earliest = record.window_from_ms
    inv.restorable_from_ms, inv.restorable_to_ms = earliest, valid
    inv.restorable_from, inv.restorable_to = iso_ms(earliest), iso_ms(valid)
    return inv
