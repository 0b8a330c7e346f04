"""Reading the rejected events of a topic back from ``quarantine/``, both layouts: one object
per segment (capture now) and one per event (repositories written before).

Each rejected offset is yielded once: an object left by a crash before its segment was stored
overlaps the one written when the range was captured again. An object that cannot be decoded
is named in ``QuarantineScan.unreadable`` and skipped; one deleted since the listing is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from daemon.audit.idfilter import fetch_many
from daemon.changelog.keys import QuarantineKey
from daemon.changelog.quarantine import QuarantineEntry
from daemon.changelog.repository import Repository
from daemon.errors import IntegrityError

SMALL_IN_FLIGHT = 16
"""GETs in flight for per-event objects (one event each)."""
LARGE_IN_FLIGHT = 4
"""GETs in flight for per-segment objects (up to a segment's worth of raw events each)."""


@dataclass
class QuarantineScan:
    objects: int = 0
    """Quarantine objects read."""
    entries: int = 0
    """Rejected events in them (an offset two objects hold counts twice)."""
    unreadable: list[str] = field(default_factory=list)
    """Keys of objects that could not be decoded: their events are not yielded."""


def rejected_events(repo: Repository, topic: str, scan: QuarantineScan,
                    partitions: set[int] | None = None) -> Iterator[QuarantineEntry]:
    """Every rejected event of ``topic`` (of ``partitions``, when given), once, by partition
    and offset range."""
    keys = [k for k, _ in repo.list_quarantine(topic)
            if partitions is None or k.partition in partitions]
    seen: set[tuple[int, int]] = set()
    for batch in _batches(keys):
        for key, data in zip(batch, fetch_many(repo.store, [k.object_key for k in batch]),
                             strict=True):
            if data is None:
                continue
            try:
                entries = repo.read_quarantine(key, data).entries
            except IntegrityError:
                scan.unreadable.append(key.object_key)
                continue
            scan.objects += 1
            scan.entries += len(entries)
            for entry in entries:
                where = (entry.partition, entry.offset)
                if where not in seen:
                    seen.add(where)
                    yield entry


def _batches(keys: list[QuarantineKey]) -> Iterator[list[QuarantineKey]]:
    """Consecutive keys, as many as may be in memory at once."""
    batch: list[QuarantineKey] = []
    for key in keys:
        limit = SMALL_IN_FLIGHT if key.per_event else LARGE_IN_FLIGHT
        if len(batch) >= limit or (batch and batch[-1].per_event != key.per_event):
            yield batch
            batch = []
        batch.append(key)
    if batch:
        yield batch
