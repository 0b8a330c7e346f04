"""Reading the rejected events of a topic back from ``quarantine/``, both layouts: one object
per segment (capture now) and one per event (repositories written before).

Each rejected offset is yielded once: an object left by a crash before its segment was stored
overlaps the one written when the range was captured again. An object that cannot be decoded
is named in ``QuarantineScan.unreadable`` and skipped; one deleted since the listing is skipped.

An entry sealed under its tenant's key (per-tenant keys) is opened with ``sealer``; one of a
forgotten tenant is yielded still sealed (``entry.sealed`` set: no detail, key or value) and
counted in ``QuarantineScan.forgotten``. Any other key failure (a KMS that cannot be reached,
a key missing with no erasure recorded) is raised, never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from daemon.audit.idfilter import fetch_many
from daemon.changelog.keys import QuarantineKey
from daemon.changelog.quarantine import QuarantineEntry, open_entry
from daemon.changelog.repository import Repository
from daemon.errors import EncryptionKeyError, IntegrityError
from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import TenantForgotten

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
    """Keys of objects that could not be decoded: their events are not yielded (a sealed
    entry that does not open under its key names its object here too)."""
    forgotten: dict[tuple[str, str], int] = field(default_factory=dict)
    """(collection, tenant) -> entries yielded without content: the tenant was forgotten."""


def rejected_events(repo: Repository, topic: str, scan: QuarantineScan,
                    partitions: set[int] | None = None, sealer: TenantSealer | None = None
                    ) -> Iterator[QuarantineEntry]:
    """Every rejected event of ``topic`` (of ``partitions``, when given), once, by partition
    and offset range; sealed entries opened with ``sealer`` (see the module)."""
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
                if where in seen:
                    continue
                if entry.sealed is not None:
                    try:
                        entry = _opened(entry, key, sealer, scan)
                    except IntegrityError:
                        scan.unreadable.append(key.object_key)
                        continue
                seen.add(where)
                yield entry


def _opened(entry: QuarantineEntry, key: QuarantineKey, sealer: TenantSealer | None,
            scan: QuarantineScan) -> QuarantineEntry:
    if sealer is None:
        raise EncryptionKeyError(
            f"{key.object_key} holds rejected events sealed under tenant keys",
            "read it with the repository's config: [encryption] per_tenant_keys = true")
    try:
        return open_entry(entry, sealer)
    except TenantForgotten as gone:
        pair = (gone.collection, gone.tenant)
        scan.forgotten[pair] = scan.forgotten.get(pair, 0) + 1
        return entry


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
