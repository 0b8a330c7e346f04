"""The base of a rollback: the newest snapshot that holds no excluded event.

A snapshot's rows already contain whatever it folded, so a snapshot that folded an excluded
event cannot be rolled back from: the rollback starts from an older one (or from the start of
the log) and replays the log after it. Which snapshots are safe is known from the filter
alone, without reading the log (``choose_base``, pure):

- ``--between T1 T2``: a snapshot cut at a time before T1 (compaction folds no event stamped
  after its cut time);
- ``--offsets topic/partition=FROM-TO``: a snapshot whose cut of each such partition is at or
  before FROM (the cut is the first offset it did not fold);
- any other filter alone (headers, model, source, event ids) bounds nothing: the rollback
  starts from the start of the log. Adding ``--between`` or ``--offsets`` lets it start from
  a snapshot.

Criteria combine with AND, so either bound alone makes a snapshot safe. The log after the base
must still be held: when prune removed it, ``find_base`` refuses, naming what is restorable."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from daemon.changelog.repository import Repository
from daemon.changelog.watermark import Watermark
from daemon.changelog.window import PartitionWindow, windows_after
from daemon.errors import VecwalError
from daemon.rollback.filters import ExcludeFilter
from daemon.snapshot.compactor import list_manifests, readable_manifests
from daemon.snapshot.manifest import Manifest
from daemon.snapshot.retention import RetentionRecord, read_retention


class RollbackRefused(VecwalError):
    """The rollback cannot be computed correctly; nothing was written."""

    exit_code = 4


@dataclass
class RollbackBase:
    snapshot: Manifest | None
    watermarks: list[Watermark]
    windows: list[PartitionWindow]
    retention: RetentionRecord | None


def is_safe(snapshot: Manifest, filt: ExcludeFilter) -> bool:
    """Whether ``snapshot`` surely folded no event ``filt`` excludes (see the module)."""
    if filt.since_ms is not None and snapshot.cut_time_ms < filt.since_ms:
        return True
    return bool(filt.offsets) and all(snapshot.cut_of(r.topic, r.partition) <= r.first
                                      for r in filt.offsets)


def choose_base(newest_first: Iterable[Manifest], filt: ExcludeFilter, until_ms: int | None,
                until_offsets: dict[str, dict[str, int]] | None = None) -> Manifest | None:
    """The first (newest) snapshot that is safe and does not pass the target: cut at or
    before ``until_ms``, and no partition's cut past ``until_offsets`` (topic -> partition
    -> first offset not wanted, as ``RestoreTarget.offsets``) (pure)."""
    for m in newest_first:
        if until_ms is not None and m.cut_time_ms > until_ms:
            continue
        if until_offsets is not None and any(
                m.cut_of(t, int(p)) > off for t, parts in until_offsets.items()
                for p, off in parts.items()):
            continue
        if is_safe(m, filt):
            return m
    return None


def find_base(repo: Repository, topics: list[str], filt: ExcludeFilter, until_ms: int | None,
              until_offsets: dict[str, dict[str, int]] | None = None) -> RollbackBase:
    """The I/O half: list snapshots, choose the base, list the log after it. Raises
    RollbackRefused when the log after the base is no longer held."""
    ids = list_manifests(repo)
    if filt.since_ms is not None:  # ids start with the cut time: skip what cannot be safe
        ids = [i for i in ids if int(i.split("-")[0]) < filt.since_ms or filt.offsets]
    snapshot = None
    if filt.since_ms is not None or filt.offsets:
        snapshot = choose_base(readable_manifests(repo, reversed(ids)), filt, until_ms,
                               until_offsets)
    watermarks = [wm for t in topics for wm in repo.list_watermarks(t)]
    windows = windows_after(repo, watermarks, snapshot)
    retention = read_retention(repo)
    for w in windows:
        if w.gap is not None and w.gap[0] == w.start and w.gap[0] < w.durable_end:
            since = "the start of the log" if snapshot is None else f"snapshot {snapshot.id}"
            held = retention.describe() if retention is not None else \
                f"from offset {w.gap[1]} of {w.topic}/{w.partition}"
            raise RollbackRefused(
                f"the log the rollback needs (from {since}: {w.topic}/{w.partition} offsets "
                f"[{w.gap[0]}, {w.gap[1]})) is no longer held; restorable: {held}",
                "bound the excluded events with --between or --offsets so that a later "
                "snapshot can be the base; events folded into the oldest kept snapshot can "
                "no longer be undone")
    return RollbackBase(snapshot, watermarks, windows, retention)
