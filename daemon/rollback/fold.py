"""One walk of the log window after the rollback's base: what every key touched by an
excluded event is now, and what it would be without the excluded events.

For each record key (collection, tenant, id) the walk keeps the winning event of all events
(``current``: greatest version, as restore folds). A key becomes *affected* at its first
excluded event; from then on it also keeps the winning event among the non-excluded ones
(``good``), starting from the winner so far, which no excluded event wrote. Events are kept
as scanned (no splice, no hash): only the affected keys' two winners become rows, at the end
(``winner_row``). Catalog events are decoded (as every fold does) and applied twice: to the
current catalog and, unless excluded, to the rolled-back one. An excluded drop (collection or
tenant) makes every record of what it dropped affected (``swept``): the base's rows of it
are read in full then (``corrections.resolve``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from daemon.changelog.repository import Repository
from daemon.changelog.scan import Event, ScannedEvent
from daemon.changelog.scan_loop import varint
from daemon.changelog.window import PartitionWindow, WindowReader
from daemon.events import RECORD_OPS
from daemon.progress import Progress
from daemon.rollback.filters import ExcludeFilter
from daemon.rows import Row, Version
from daemon.snapshot.manifest import Manifest
from daemon.snapshot.state import Catalog

RecordKey = tuple[str, str, str]
"""(collection, tenant, id)."""
Held = tuple[Version, Event, str, int]
"""An event kept as the winner of its key: its version, the event, its topic and partition."""


@dataclass
class RollbackFold:
    current: dict[RecordKey, Held] = field(default_factory=dict)
    """Every key the window wrote: its winning event."""
    good: dict[RecordKey, Held | None] = field(default_factory=dict)
    """Affected keys: the winning non-excluded event (None: none in the window)."""
    current_catalog: Catalog = field(default_factory=Catalog)
    good_catalog: Catalog = field(default_factory=Catalog)
    swept: set[tuple[str, str | None]] = field(default_factory=set)
    """(collection, tenant or None for all) an excluded drop touched."""
    excluded: int = 0
    excluded_catalog: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    bytes_read: int = 0
    cut: dict[str, dict[str, int]] = field(default_factory=dict)


def fold_rollback(repo: Repository, base: Manifest | None, windows: list[PartitionWindow],
                  until_ms: int | None, stops: list[int | None], filt: ExcludeFilter,
                  collections: set[str] | None = None, tenants: set[str] | None = None,
                  progress: Progress | None = None) -> RollbackFold:
    """Walk every window once (``stops``: each window's stop offset or None); ``progress``
    hears ("log partitions", walked, total) after each."""
    raw = base.catalog if base is not None else None
    out = RollbackFold(
        current_catalog=Catalog.from_json(copy.deepcopy(raw)) if raw else Catalog(),
        good_catalog=Catalog.from_json(copy.deepcopy(raw)) if raw else Catalog())
    current, good = out.current, out.good
    for n, (window, stop) in enumerate(zip(windows, stops, strict=True), 1):
        topic, partition = window.topic, window.partition
        reader = WindowReader(repo, window, until_ms=until_ms, until_offset=stop)
        for ev in reader:
            out.events += 1
            if ev.op not in RECORD_OPS:
                _catalog(out, ev, topic, partition, filt, collections)
                continue
            coll, tenant = ev.collection, ev.tenant
            if (collections is not None and coll not in collections) or (
                    tenants is not None and tenant not in tenants):
                continue
            key = (coll, tenant, ev.id or "")
            held = (ev.timestamp, topic, partition, ev.offset)
            old = current.get(key)
            if filt(ev, topic, partition):
                out.excluded += 1
                if key not in good:
                    good[key] = old  # nothing excluded wrote it before
            elif key in good:
                g = good[key]
                if g is None or held > g[0]:
                    good[key] = (held, ev, topic, partition)
            if old is None or held > old[0]:
                current[key] = (held, ev, topic, partition)
        out.bytes_read += reader.bytes_read
        out.cut.setdefault(topic, {})[str(partition)] = max(window.start, reader.stopped_at)
        if progress is not None:
            progress("log partitions", n, len(windows))
    for coll, dropped in out.swept:  # every key of what an excluded drop dropped
        for key, held_ev in current.items():
            if key[0] == coll and (dropped is None or key[1] == dropped) and key not in good:
                good[key] = held_ev
    return out


def _catalog(out: RollbackFold, ev: Event, topic: str, partition: int, filt: ExcludeFilter,
             collections: set[str] | None) -> None:
    rec = ev.event()
    out.current_catalog.apply(rec, topic, partition)
    if collections is not None and rec["collection"] not in collections:
        out.good_catalog.apply(rec, topic, partition)
        return
    if filt(ev, topic, partition):
        out.excluded += 1
        out.excluded_catalog.append(rec)
        if rec["op"] == "collection.drop":
            out.swept.add((rec["collection"], None))
        elif rec["op"] == "tenant.drop":
            out.swept.add((rec["collection"], rec["tenant"]))
        return
    out.good_catalog.apply(rec, topic, partition)


def winner_row(held: Held | None) -> Row | None:
    """The snapshot row of a kept winner (a tombstone for a delete)."""
    if held is None:
        return None
    _, ev, topic, partition = held
    return ev.row(topic, partition)


def message_key(held: Held) -> bytes | None:
    """The Kafka message key the ingestion stream gave this event (the change log's ``key``),
    read from its bytes without decoding the record."""
    ev = held[1]
    if not isinstance(ev, ScannedEvent):
        key: bytes | None = ev.event().get("key")
        return key
    view, at = ev.view, ev.version_end
    branch, at = varint(view, at)
    if branch == 0:
        return None
    n, at = varint(view, at)
    return bytes(view[at:at + n])
