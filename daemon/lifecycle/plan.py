"""The prune planner: a pure function from a Listing (what the repository holds), the policy
and the time to a PrunePlan (what goes, why, how many bytes, and the restorable window before
and after). No I/O, so ``vecwal prune`` without ``--confirm`` is free.

What goes:
- manifests of snapshots no rule keeps (``policy.choose_kept``; a pin always keeps);
- log segments, their sidecars and id-index objects entirely below the *log floor*: the anchor
  snapshot's cut, per partition (nothing when there is no anchor);
- snapshot files (data files, rejected lists) no existing manifest references, once they have
  been unreferenced for ``grace``: the files of a snapshot whose manifest was removed, and the
  orphans of a compaction that died, alike. A manifest this plan deletes still protects its
  files in this run, and their grace starts now (``prune`` runs twice when grace is 0);
- quarantine objects below the log floor (or ``retention.quarantine`` old), and records of
  drills and jobs past their retention.
Never: vecwal.json, state/ (watermarks, these records), locks/, pins/, and keys vecwal does
not know. While a manifest of another format exists, no snapshot file is unreferenced (its
files cannot be known)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemon.lifecycle.listing import Listing
from daemon.lifecycle.policy import Keep, Policy, SnapshotPoint, choose_kept
from daemon.snapshot.manifest import manifest_key
from daemon.snapshot.retention import RestorePoint, RetentionRecord

KINDS = ("manifests", "data", "index", "segments", "sidecars", "quarantine", "drills", "jobs")
"""Deletion order: a manifest before the files it named; the log after the snapshots."""


@dataclass(frozen=True)
class Deletion:
    key: str
    kind: str
    bytes: int
    why: str


@dataclass
class PrunePlan:
    now_ms: int
    policy: Policy
    keep: Keep
    deletions: dict[str, list[Deletion]]
    """kind -> what goes, in KINDS order."""
    record: RetentionRecord
    """The restorable window once the plan is carried out."""
    before: RetentionRecord | None
    orphans_seen: dict[str, int]
    """The prune state after this run: unreferenced snapshot files still in their grace."""
    waiting: dict[str, tuple[int, int]] = field(default_factory=dict)
    """kind -> (objects, bytes) unreferenced but still within grace."""
    notes: list[str] = field(default_factory=list)
    repository_bytes: int = 0
    log_complete: bool = True
    """False: the log was listed only below the floor, so ``repository_bytes`` leaves out
    the log prune keeps."""
    extend: dict[str, int] = field(default_factory=dict)
    """Object Lock: key -> retain-until for the objects of restore points beyond the window
    and of pinned snapshots, whose lock from their write would end while they are kept."""

    @property
    def total(self) -> tuple[int, int]:
        return (sum(len(v) for v in self.deletions.values()),
                sum(d.bytes for v in self.deletions.values() for d in v))

    def counts(self) -> dict[str, dict[str, int]]:
        return {k: {"objects": len(v), "bytes": sum(d.bytes for d in v)}
                for k, v in self.deletions.items()}

    def to_dict(self, keys: bool = False) -> dict[str, Any]:
        from daemon.status import iso_ms

        def window(rec: RetentionRecord | None) -> dict[str, Any]:
            if rec is None:
                return {"from": None, "from_ms": None, "points": [], "note": "nothing pruned yet"}
            return {"from": iso_ms(rec.window_from_ms), "from_ms": rec.window_from_ms,
                    "points": [{"snapshot": p.snapshot, "cut_time": iso_ms(p.cut_time_ms),
                                "cut_time_ms": p.cut_time_ms, "why": p.why} for p in rec.points]}

        objects, size = self.total
        out: dict[str, Any] = {
            "now": iso_ms(self.now_ms), "now_ms": self.now_ms,
            "delete": self.counts(), "delete_total": {"objects": objects, "bytes": size},
            "waiting_for_grace": {k: {"objects": n, "bytes": b}
                                  for k, (n, b) in self.waiting.items()},
            "repository_bytes": self.repository_bytes,
            "repository_bytes_after": self.repository_bytes - size,
            "repository_bytes_include_kept_log": self.log_complete,
            "restorable_before": window(self.before), "restorable_after": window(self.record),
            "kept": {sid: why for sid, why in sorted(self.keep.reasons.items())},
            "anchor": None if self.keep.anchor is None else self.keep.anchor.id,
            "log_floor": self.record.log_floor, "notes": self.notes}
        if keys:
            out["keys"] = {k: [{"key": d.key, "bytes": d.bytes, "why": d.why} for d in v]
                           for k, v in self.deletions.items()}
        return out


def plan_prune(listing: Listing, policy: Policy, now_ms: int,
               before: RetentionRecord | None = None, lock_ms: int | None = None) -> PrunePlan:
    """``lock_ms``: the Object Lock period of the store, when it locks (restore points beyond
    the window then get their locks extended while they are kept)."""
    gone: dict[str, list[Deletion]] = {k: [] for k in KINDS}
    notes: list[str] = []
    snaps = listing.snapshots
    keep = choose_kept([SnapshotPoint(s.id, s.cut_time_ms) for s in snaps.values()], policy,
                       now_ms, {sid: pins for sid, pins in listing.pins.items() if sid in snaps})
    for s in snaps.values():
        if not s.readable:
            keep.add(s.id, "another format: kept, its files unknown")
    for sid in sorted(snaps):
        if sid not in keep.reasons:
            s = snaps[sid]
            gone["manifests"].append(Deletion(manifest_key(sid), "manifests", s.manifest_bytes,
                                              "kept by no rule"))
    orphans, waiting = _snapshot_files(listing, policy, now_ms, gone, notes)
    anchor = snaps[keep.anchor.id] if keep.anchor is not None else None
    floor = dict(anchor.cut) if anchor is not None and anchor.readable else {}
    _log(listing, floor, gone)
    _quarantine(listing, policy, now_ms, floor, gone)
    _records(listing, policy, now_ms, gone)
    window_from = anchor.cut_time_ms if anchor is not None else None
    points = [RestorePoint(sid, snaps[sid].cut_time_ms, why)
              for sid, why in sorted(keep.reasons.items(), key=lambda kv: snaps[kv[0]].cut_time_ms)
              if window_from is not None and snaps[sid].cut_time_ms < window_from]
    record = RetentionRecord(now_ms, window_from, points, floor)
    if before is not None and before.window_from_ms is not None and (
            window_from is None or window_from < before.window_from_ms):
        record = RetentionRecord(now_ms, before.window_from_ms, points, before.log_floor)
        notes.append("the anchor is older than the last prune's window start: the window start "
                     "stays where the log was already cut")
    repo_bytes = (sum(b for v in listing.segments.values() for _, b in v) +
                  sum(b for v in listing.sidecars.values() for _, b in v) +
                  sum(i.size for i in listing.index) + sum(listing.data.values()) +
                  sum(s.manifest_bytes for s in snaps.values()) +
                  sum(b for _, b in listing.quarantine) + sum(r[3] for r in listing.records) +
                  sum(b for _, b in listing.protected.values()) +
                  sum(b for _, b in listing.unknown))
    if listing.unknown:
        notes.append(f"{len(listing.unknown)} objects vecwal does not know are kept "
                     f"(first: {listing.unknown[0][0]})")
    extend: dict[str, int] = {}
    if lock_ms:
        held = {p.snapshot for p in points} | set(listing.pins)
        for sid in sorted(held & set(snaps)):
            for key in [manifest_key(sid), *sorted(snaps[sid].files)]:
                extend[key] = now_ms + lock_ms
    return PrunePlan(now_ms, policy, keep, gone, record, before, orphans, waiting, notes,
                     repo_bytes, listing.log_complete, extend)


def _snapshot_files(listing: Listing, policy: Policy, now_ms: int,
                    gone: dict[str, list[Deletion]], notes: list[str]
                    ) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Unreferenced snapshot files: seen for ``grace`` -> gone; else they wait. The files only
    the manifests deleted by this plan name still count as referenced now (a restore may be
    reading them) but start their grace now: the next prune after it deletes them."""
    snaps = listing.snapshots
    if any(not s.readable for s in snaps.values()):
        notes.append("a manifest of another format exists: no snapshot file is deleted as "
                     "unreferenced while it does")
        return dict(listing.state.orphans_seen), {}
    referenced: set[str] = set()
    for s in snaps.values():
        referenced |= s.files
    seen = listing.state.orphans_seen
    orphans: dict[str, int] = {}
    wait_n = wait_b = 0
    for key, size in sorted(listing.data.items()):
        if key in referenced:
            continue
        first = seen.get(key, now_ms)
        if now_ms - first >= policy.grace_ms:
            gone["data"].append(Deletion(key, "data", size, "no manifest references it"))
        else:
            orphans[key] = first
            wait_n, wait_b = wait_n + 1, wait_b + size
    retiring = {d.key.split("/")[1] for d in gone["manifests"]}
    if retiring:  # files only they name: grace starts now, as their manifests go in this run
        staying: set[str] = set()
        for s in snaps.values():
            if s.id not in retiring:
                staying |= s.files
        only = set().union(*(snaps[sid].files for sid in retiring)) - staying
        for key in sorted(only & listing.data.keys()):
            orphans[key] = seen.get(key, now_ms)
            wait_n, wait_b = wait_n + 1, wait_b + listing.data[key]
    return orphans, ({"data": (wait_n, wait_b)} if wait_n else {})


def _log(listing: Listing, floor: dict[str, dict[str, int]],
         gone: dict[str, list[Deletion]]) -> None:
    def below(topic: str, partition: int, end: int) -> bool:
        return end <= floor.get(topic, {}).get(str(partition), 0)

    for (topic, p), segs in sorted(listing.segments.items()):
        for key, size in segs:
            if below(topic, p, key.end):
                gone["segments"].append(Deletion(key.avro, "segments", size, "below log floor"))
    for (topic, p), sides in sorted(listing.sidecars.items()):
        for key, size in sides:
            if below(topic, p, key.end):
                gone["sidecars"].append(Deletion(key.sidecar, "sidecars", size, "below log floor"))
    for idx in listing.index:
        if below(idx.topic, idx.partition, idx.end):
            gone["index"].append(Deletion(idx.key, "index", idx.size, "below log floor"))


def _quarantine(listing: Listing, policy: Policy, now_ms: int, floor: dict[str, dict[str, int]],
                gone: dict[str, list[Deletion]]) -> None:
    """Rejected events go with the log around them, or after ``retention.quarantine``: below
    the cut of the newest snapshot at least that old (a cut maps offsets to a time)."""
    qfloor, why = floor, "below log floor"
    if policy.quarantine_ms is not None:
        older = [s for s in listing.snapshots.values()
                 if s.readable and s.cut_time_ms <= now_ms - policy.quarantine_ms]
        newest = max(older, key=lambda s: s.cut_time_ms, default=None)
        qfloor = newest.cut if newest is not None else {}
        why = "older than retention.quarantine"
    for q, size in listing.quarantine:
        if q.end <= qfloor.get(q.topic, {}).get(str(q.partition), 0):
            gone["quarantine"].append(Deletion(q.object_key, "quarantine", size, why))


def _records(listing: Listing, policy: Policy, now_ms: int,
             gone: dict[str, list[Deletion]]) -> None:
    limits = {"drills": policy.drills_ms, "jobs": policy.jobs_ms}
    for key, kind, at, size in listing.records:
        limit = limits[kind]
        if limit is not None and at is not None and now_ms - at > limit:
            gone[kind].append(Deletion(key, kind, size,
                                       f"older than its retention ({limit / 86_400_000:g}d)"))
