"""What the repository costs, and what it will cost: a pure function from a Listing (one LIST,
``listing.gather_listing``), the policy, the time and the partitions' watermarks to a Usage.
No I/O here: ``vecwal usage`` (cli_usage.py) gathers and prints; ``publish_usage`` sets the
``vecwal_repository_bytes`` gauges from a Usage (for the scheduled prune).

A Usage holds:
- objects and bytes by kind (``KINDS``: every object of the listing is in exactly one kind), by
  collection (snapshot files under ``data/<collection>/``, and what of them the newest snapshot
  references), and the log by topic (segments, sidecars and the id index: what prune cuts at
  the log floor);
- growth per UTC day over the last ``GROWTH_DAYS`` days, of the log and of snapshot data.
  Segment keys carry offsets, not times: per partition, every snapshot's cut (its cut time and
  the partition's cut offset) and the watermark (``captured_through`` at ``valid_through_ms``)
  are points (offset, time); a segment counts at the time of its end offset, interpolated
  linearly between the points around it (``OffsetClock``). It is an estimate from those points:
  the log below a partition's oldest point has no time (``log_unplaced_bytes``). Snapshot data
  grows by the files each snapshot references that its predecessor did not, at its cut time;
  the oldest snapshot's files are the base (``data_base_bytes``), not growth;
- the steady-state projection under the policy (``Projection``; no window: none, the
  repository grows without bound)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daemon.changelog.watermark import Watermark
from daemon.lifecycle.listing import Listing
from daemon.lifecycle.plan import PrunePlan, plan_prune
from daemon.lifecycle.policy import DAY_MS, Policy

if TYPE_CHECKING:
    from daemon.metrics import Metrics

KINDS = ("segments", "sidecars", "index", "data", "manifests", "quarantine", "drills", "jobs",
         "protected", "unknown")
LOG_KINDS = ("segments", "sidecars", "index")
"""The log as prune sees it: everything cut at the log floor."""
GROWTH_DAYS = 7
MIN_SPAN_MS = 600_000
"""Points closer together than this give no rate (a few bytes over seconds is no daily rate)."""
REJECTED_LISTS = "(rejected lists)"

LOG_METHOD = ("estimate: segment keys carry offsets, not times; per partition each snapshot's "
              "cut (cut time, cut offset) and the watermark (captured_through at valid-through) "
              "are points, and a segment counts at the time of its end offset, interpolated "
              "linearly between them; the log below a partition's oldest point has no time")
DATA_METHOD = ("the files each snapshot references that its predecessor did not, at its cut "
               "time; the oldest snapshot's files are the base, not growth")
FORMULA = ("log/day x (window + grace) + snapshot files the prune plan keeps + new snapshot "
           "data/day x (window days + GFS points) + other objects the plan keeps")
ASSUMPTIONS = (
    "the growth of the last 7 UTC days goes on at the same rate",
    "the log is kept for window + grace (plus up to one compaction interval: it is kept from "
    "the newest snapshot at or before that)",
    "the snapshot files the current prune plan keeps (neither deleted now nor waiting for "
    "grace) stay: the collections' current contents",
    "each day in the window and each GFS restore point beyond it holds about one day of new "
    "snapshot data of its own; GFS points: keep_daily + keep_weekly + keep_monthly + "
    "keep_yearly, at most (one snapshot can be several), so an upper estimate; once the "
    "repository is older than the window, the kept files already hold part of this",
    "manifests, quarantine, records, protected and unknown objects stay as the plan keeps them",
)


@dataclass
class Tally:
    objects: int = 0
    bytes: int = 0

    def add(self, size: int, objects: int = 1) -> None:
        self.objects += objects
        self.bytes += size

    def to_dict(self) -> dict[str, int]:
        return {"objects": self.objects, "bytes": self.bytes}


@dataclass
class CollectionUsage(Tally):
    newest_snapshot_bytes: int = 0
    """Bytes of its files the newest snapshot references: the collection as it is now."""

    def to_dict(self) -> dict[str, int]:
        return {**super().to_dict(), "newest_snapshot_bytes": self.newest_snapshot_bytes}


@dataclass(frozen=True)
class DayGrowth:
    day: str
    """UTC, YYYY-MM-DD."""
    log_bytes: int
    data_bytes: int


@dataclass
class Growth:
    days: list[DayGrowth]
    """The last GROWTH_DAYS UTC days, oldest first, today (partial) last."""
    log_per_day: float | None
    """Summed over the partitions whose points span at least MIN_SPAN_MS of those days; None
    when none does."""
    data_per_day: float | None
    log_unplaced_bytes: int = 0
    data_base_bytes: int = 0
    log_points: int = 0
    partitions_without_rate: list[str] = field(default_factory=list)
    """topic/partition of the log whose growth is unknown (fewer than two points, or points too
    close together within the days)."""

    def to_dict(self) -> dict[str, Any]:
        return {"days": [{"day": d.day, "log_bytes": d.log_bytes, "data_bytes": d.data_bytes}
                         for d in self.days],
                "log_bytes_per_day": _round(self.log_per_day),
                "data_bytes_per_day": _round(self.data_per_day),
                "log_unplaced_bytes": self.log_unplaced_bytes,
                "data_base_bytes": self.data_base_bytes, "log_points": self.log_points,
                "partitions_without_rate": self.partitions_without_rate,
                "log_method": LOG_METHOD, "data_method": DATA_METHOD}


@dataclass(frozen=True)
class Projection:
    """The size the repository settles at under the policy (``FORMULA``, ``ASSUMPTIONS``)."""

    log: int
    """log/day x (window + grace)."""
    kept_data: int
    new_data: int
    """new snapshot data/day x (window days + GFS points)."""
    other: int
    window_days: float
    grace_days: float
    gfs_points: int

    @property
    def bytes(self) -> int:
        return self.log + self.kept_data + self.new_data + self.other

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "formula": FORMULA, "assumptions": list(ASSUMPTIONS),
                "terms": {"log": self.log, "kept_data": self.kept_data,
                          "new_data": self.new_data, "other": self.other},
                "window_days": self.window_days, "grace_days": self.grace_days,
                "gfs_points": self.gfs_points}


@dataclass
class Usage:
    now_ms: int
    kinds: dict[str, Tally]
    """Every kind of KINDS, in that order."""
    protected: dict[str, Tally]
    """By root (vecwal.json, state/, locks/, pins/)."""
    collections: dict[str, CollectionUsage]
    rejected_lists: Tally
    """snapshots/<id>/rejected.json: snapshot files of no one collection (kind data)."""
    log_topics: dict[str, dict[str, Tally]]
    """topic -> kind of LOG_KINDS -> tally."""
    snapshots: int
    growth: Growth
    projection: Projection | None
    """None: no window, nothing is pruned."""
    reclaimable: Tally
    """What a prune would delete now."""
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> Tally:
        return Tally(sum(t.objects for t in self.kinds.values()),
                     sum(t.bytes for t in self.kinds.values()))

    def to_dict(self) -> dict[str, Any]:
        from daemon.status import iso_ms

        g = self.growth
        growth_per_day = (None if g.log_per_day is None and g.data_per_day is None else
                          round((g.log_per_day or 0.0) + (g.data_per_day or 0.0)))
        projection: dict[str, Any] = (
            self.projection.to_dict() if self.projection is not None else
            {"bytes": None, "unbounded": True, "growth_bytes_per_day": growth_per_day,
             "note": "no [retention] window: nothing is pruned and the repository grows "
                     "without bound"})
        return {
            "now": iso_ms(self.now_ms), "now_ms": self.now_ms,
            "total": self.total.to_dict(),
            "kinds": {k: t.to_dict() for k, t in self.kinds.items()},
            "protected": {k: t.to_dict() for k, t in self.protected.items()},
            "collections": {k: c.to_dict() for k, c in self.collections.items()},
            "rejected_lists": self.rejected_lists.to_dict(),
            "log_topics": {topic: {**{k: t.to_dict() for k, t in kinds.items()},
                                   "bytes": sum(t.bytes for t in kinds.values())}
                           for topic, kinds in self.log_topics.items()},
            "snapshots": self.snapshots,
            "growth": g.to_dict(),
            "projection": projection,
            "reclaimable": self.reclaimable.to_dict(),
            "notes": self.notes}


@dataclass(frozen=True)
class OffsetClock:
    """One partition's offsets mapped to times: ``time_of(o)`` is when every offset below ``o``
    was durable, interpolated linearly between the points (offset, time) around ``o``."""

    offsets: list[int]
    times: list[int]

    @classmethod
    def of(cls, points: Sequence[tuple[int, int]]) -> OffsetClock:
        """Sorted by offset, then time; a time earlier than a smaller offset's is raised to
        it (the clock never runs backwards)."""
        offsets: list[int] = []
        times: list[int] = []
        for offset, time_ms in sorted(set(points)):
            offsets.append(offset)
            times.append(max(time_ms, times[-1]) if times else time_ms)
        return cls(offsets, times)

    def time_of(self, offset: int) -> float | None:
        """None at or below the first point (when those offsets came is not known); the last
        point's time above the last point."""
        i = bisect_left(self.offsets, offset)
        if i == 0:
            return None
        if i == len(self.offsets):
            return float(self.times[-1])
        # offsets[i - 1] < offset <= offsets[i]: from the last moment the partition stood at
        # offsets[i - 1] to the first it stood at offsets[i].
        o0, o1, t0, t1 = self.offsets[i - 1], self.offsets[i], self.times[i - 1], self.times[i]
        return t0 + (t1 - t0) * (offset - o0) / (o1 - o0)


def usage_of(listing: Listing, policy: Policy, now_ms: int,
             watermarks: Sequence[Watermark] = ()) -> Usage:
    """The usage at ``now_ms``; ``watermarks``: one per partition (their points date the log's
    newest segments; without them growth comes from snapshot cuts alone)."""
    kinds = _kinds(listing)
    collections, rejected = _collections(listing)
    log_topics: dict[str, dict[str, Tally]] = {}
    for (topic, _p), segs in listing.segments.items():
        _topic_kind(log_topics, topic, "segments").add(sum(b for _, b in segs), len(segs))
    for (topic, _p), sides in listing.sidecars.items():
        _topic_kind(log_topics, topic, "sidecars").add(sum(b for _, b in sides), len(sides))
    for idx in listing.index:
        _topic_kind(log_topics, idx.topic, "index").add(idx.size)
    plan = plan_prune(listing, policy, now_ms)
    notes: list[str] = []
    growth = _growth(listing, now_ms, watermarks)
    if growth.partitions_without_rate:
        notes.append(f"log growth unknown for {len(growth.partitions_without_rate)} partitions "
                     "(fewer than two points among the snapshot cuts and the watermark, or "
                     "points too close together): counted as 0")
    if growth.data_per_day is None:
        notes.append("snapshot data growth unknown (fewer than two snapshots, or too close "
                     "together): counted as 0")
    if listing.unknown:
        notes.append(f"objects vecwal does not know (kept, never pruned): "
                     f"{len(listing.unknown)}, first {listing.unknown[0][0]}")
    projection = None if policy.window_ms is None else _project(kinds, plan, policy, growth)
    deleted_n, deleted_b = plan.total
    return Usage(now_ms, kinds,
                 {root: Tally(n, b) for root, (n, b) in sorted(listing.protected.items())},
                 collections, rejected, dict(sorted(log_topics.items())), len(listing.snapshots),
                 growth, projection, Tally(deleted_n, deleted_b), notes)


def _kinds(listing: Listing) -> dict[str, Tally]:
    k = {kind: Tally() for kind in KINDS}
    for segs in listing.segments.values():
        k["segments"].add(sum(b for _, b in segs), len(segs))
    for sides in listing.sidecars.values():
        k["sidecars"].add(sum(b for _, b in sides), len(sides))
    for idx in listing.index:
        k["index"].add(idx.size)
    k["data"].add(sum(listing.data.values()), len(listing.data))
    for s in listing.snapshots.values():
        k["manifests"].add(s.manifest_bytes)
    for _, size in listing.quarantine:
        k["quarantine"].add(size)
    for _key, kind, _at, size in listing.records:
        k[kind].add(size)
    for n, b in listing.protected.values():
        k["protected"].add(b, n)
    for _, size in listing.unknown:
        k["unknown"].add(size)
    return k


def _collections(listing: Listing) -> tuple[dict[str, CollectionUsage], Tally]:
    newest = max((s for s in listing.snapshots.values() if s.readable),
                  key=lambda s: (s.cut_time_ms, s.id), default=None)
    live = newest.files if newest is not None else frozenset()
    out: dict[str, CollectionUsage] = {}
    rejected = Tally()
    for key, size in sorted(listing.data.items()):
        if not key.startswith("data/"):
            rejected.add(size)
            continue
        c = out.setdefault(key.split("/")[1], CollectionUsage())
        c.add(size)
        if key in live:
            c.newest_snapshot_bytes += size
    return out, rejected


def _topic_kind(log_topics: dict[str, dict[str, Tally]], topic: str, kind: str) -> Tally:
    return log_topics.setdefault(topic, {k: Tally() for k in LOG_KINDS})[kind]


def _days(now_ms: int) -> tuple[int, list[str]]:
    """The first instant of the oldest of the last GROWTH_DAYS UTC days, and their names."""
    first = (now_ms // DAY_MS - (GROWTH_DAYS - 1)) * DAY_MS
    return first, [datetime.fromtimestamp((first + i * DAY_MS) / 1000, UTC).strftime("%Y-%m-%d")
                   for i in range(GROWTH_DAYS)]


def _growth(listing: Listing, now_ms: int, watermarks: Sequence[Watermark]) -> Growth:
    first, names = _days(now_ms)
    log_days = [0.0] * GROWTH_DAYS
    data_days = [0] * GROWTH_DAYS

    def day_of(t: float) -> int | None:
        i = int((t - first) // DAY_MS)
        return None if i < 0 else min(i, GROWTH_DAYS - 1)  # stamped ahead of now: today

    points: dict[tuple[str, int], list[tuple[int, int]]] = {}
    readable = sorted((s for s in listing.snapshots.values() if s.readable),
                      key=lambda s: (s.cut_time_ms, s.id))
    for s in readable:
        for topic, parts in s.cut.items():
            for p, offset in parts.items():
                points.setdefault((topic, int(p)), []).append((offset, s.cut_time_ms))
    for w in watermarks:
        if w.valid_through_ms is not None:
            points.setdefault((w.topic, w.partition), []).append(
                (w.captured_through, w.valid_through_ms))
    sized: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for part, segs in listing.segments.items():
        sized.setdefault(part, []).extend((k.end, b) for k, b in segs)
    for part, sides in listing.sidecars.items():
        sized.setdefault(part, []).extend((k.end, b) for k, b in sides)
    for idx in listing.index:
        sized.setdefault((idx.topic, idx.partition), []).append((idx.end, idx.size))

    log_rate: float | None = None
    unplaced = 0
    without: list[str] = []
    for part in sorted(set(sized) | set(points)):
        clock = OffsetClock.of(points.get(part, []))
        in_days = 0.0
        for end, size in sized.get(part, []):
            t = clock.time_of(end)
            if t is None:
                unplaced += size
                continue
            d = day_of(t)
            if d is not None:
                log_days[d] += size
                in_days += size
        span = _span(clock.times, first, now_ms)
        if span is None:
            if sized.get(part):
                without.append(f"{part[0]}/{part[1]}")
        else:
            log_rate = (log_rate or 0.0) + in_days * DAY_MS / span

    base = 0
    data_in_days = 0
    for i, s in enumerate(readable):
        if i == 0:
            base = sum(listing.data.get(k, 0) for k in s.files)
            continue
        added = sum(listing.data.get(k, 0) for k in s.files - readable[i - 1].files)
        d = day_of(s.cut_time_ms)
        if d is not None:
            data_days[d] += added
            data_in_days += added
    span = _span([s.cut_time_ms for s in readable], first, now_ms)
    data_rate = None if span is None else data_in_days * DAY_MS / span
    days = [DayGrowth(names[i], round(log_days[i]), data_days[i]) for i in range(GROWTH_DAYS)]
    return Growth(days, log_rate, data_rate, unplaced, base,
                  sum(len(v) for v in points.values()), without)


def _span(times: Sequence[int], first: int, now_ms: int) -> int | None:
    """The time the points cover within [first, now], or None for no rate: fewer than two
    points, or less than MIN_SPAN_MS covered. Points all before ``first`` cover the days with
    no growth: the span is the whole days then."""
    if len(times) < 2 or max(times) - min(times) < MIN_SPAN_MS:
        return None
    start, end = max(first, min(times)), min(now_ms, max(times))
    if max(times) < first:
        start, end = first, now_ms
    return end - start if end - start >= MIN_SPAN_MS else None


def _project(kinds: dict[str, Tally], plan: PrunePlan, policy: Policy,
             growth: Growth) -> Projection:
    assert policy.window_ms is not None
    deleted = {k: c["bytes"] for k, c in plan.counts().items()}
    waiting = plan.waiting.get("data", (0, 0))[1]
    kept_data = kinds["data"].bytes - deleted.get("data", 0) - waiting
    other = sum(t.bytes - deleted.get(k, 0) for k, t in kinds.items()
                if k not in LOG_KINDS and k != "data")
    window_days = policy.window_ms / DAY_MS
    grace_days = policy.grace_ms / DAY_MS
    gfs = policy.keep_daily + policy.keep_weekly + policy.keep_monthly + policy.keep_yearly
    return Projection(round((growth.log_per_day or 0.0) * (window_days + grace_days)),
                      max(kept_data, 0),
                      round((growth.data_per_day or 0.0) * (window_days + gfs)),
                      other, window_days, grace_days, gfs)


def publish_usage(metrics: Metrics, usage: Usage) -> None:
    """Sets ``vecwal_repository_bytes{kind}`` for every kind, and
    ``vecwal_repository_projected_bytes`` when there is a projection (the scheduled prune calls
    this after each run)."""
    for kind, tally in usage.kinds.items():
        metrics.repository_bytes.labels(kind=kind).set(tally.bytes)
    if usage.projection is not None:
        metrics.repository_projected_bytes.set(usage.projection.bytes)


def _round(value: float | None) -> int | None:
    return None if value is None else round(value)
