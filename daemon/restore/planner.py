"""The restore planner: a pure function from what the repository holds (snapshots, segment
listings, watermarks) and a target to a RestorePlan. ``gather`` does the I/O; ``make_plan``
does none, so ``restore --dry-run`` costs LIST calls and one manifest."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from daemon.changelog.repository import Repository
from daemon.changelog.watermark import Watermark
from daemon.changelog.window import (
    PartitionWindow,
    windows_after,
)
from daemon.errors import VecwalError
from daemon.restore.target import RestoreTarget
from daemon.snapshot.compactor import Skip, list_manifests, readable_manifests
from daemon.snapshot.manifest import Manifest
from daemon.snapshot.retention import RetentionRecord, read_retention


class RestoreRefused(VecwalError):
    """The plan cannot give a correct restore; nothing was written."""

    exit_code = 4


@dataclass(frozen=True)
class Scope:
    collections: frozenset[str] | None = None
    tenants: frozenset[str] | None = None
    embedding_model: tuple[str, str | None] | None = None
    """(name, version): only records produced by that model (any version when None)."""
    strict: bool = False
    """Refuse, before anything is written, collections the backup does not hold at the target
    and tenants that can have no record there (an operator's ``--collection``, ``--tenant``);
    a rollback's scope may name a collection not created yet."""

    def has_collection(self, name: str) -> bool:
        return self.collections is None or name in self.collections

    def has_model(self, rec: dict[str, Any]) -> bool:
        if self.embedding_model is None:
            return True
        model = rec.get("embedding_model")
        name, version = self.embedding_model
        return model is not None and model["name"] == name and (
            version is None or model.get("version") == version)


@dataclass(frozen=True)
class PlanInputs:
    snapshot: Manifest | None
    watermarks: list[Watermark]
    windows: list[PartitionWindow]
    """Each partition's contiguous segments from the snapshot's cut, and its first gap."""
    retention: RetentionRecord | None = None
    """What the last prune left restorable (None: nothing was ever pruned)."""


@dataclass
class RestorePlan:
    target: RestoreTarget
    scope: Scope
    snapshot: Manifest | None
    windows: list[PartitionWindow]
    valid_through_ms: int | None
    incomplete: bool
    until_ms: int | None
    """The time the replay stops after (``now`` means the valid-through time)."""
    expected: dict[str, Any] = field(default_factory=dict)
    """From the snapshot: records per collection and tenant before the log is replayed."""
    partition_valid: dict[str, int | None] = field(default_factory=dict)
    """"topic/partition" -> that partition's valid-through time."""
    skip: Skip | None = None
    """Events the replay leaves out, as if never written (a rollback's excluded events:
    ``rollback.filters.ExcludeFilter``); picklable, for the workers."""

    def resolution(self, logged_after: dict[str, int] | None = None) -> dict[str, Any]:
        """What the target resolved to and why, for people and tools. ``logged_after``
        (from the replay: ``offsets_after``) adds how much of the log lies beyond it."""
        t = self.target
        held_by = sorted(tp for tp, v in self.partition_valid.items()
                         if v is not None and v == self.valid_through_ms)
        if t.latest:
            rule = "latest"
            why = "every partition to its durable offset (not one consistent instant)"
        elif t.now:
            rule = "now"
            why = ("the repository's valid-through time: every partition has proven every "
                   "event stamped up to it durable" +
                   (f"; the earliest is {', '.join(held_by)}" if held_by else ""))
        elif t.offsets is not None:
            rule, why = "offsets", "the given offsets"
        else:
            rule, why = "time", "the given time"
        out: dict[str, Any] = {"rule": rule, "instant_ms": self.until_ms, "why": why,
                               "held_by": held_by if t.now else []}
        if logged_after is not None:
            total = sum(logged_after.values())
            out["logged_after"] = {k: v for k, v in sorted(logged_after.items()) if v}
            out["logged_after_total"] = total
            if total and t.now:
                out["why_after"] = (
                    "captured, but after the instant every partition has proven: events share "
                    "a partition's last millisecond, or arrived after capture last saw the "
                    "partition caught up; `--to latest` includes every captured event")
            elif total:
                out["why_after"] = "after the target"
        return out

    @property
    def snapshot_bytes(self) -> int:
        if self.snapshot is None:
            return 0
        return sum(f.bytes for name, c in self.snapshot.collections.items()
                   if self.scope.has_collection(name) for f in c.files)

    @property
    def log_bytes(self) -> int:
        return sum(w.bytes for w in self.windows)

    def to_dict(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "target": self.target.label, "target_time_ms": self.until_ms,
            "target_offsets": self.target.offsets,
            "scope": {"collections": sorted(self.scope.collections or []) or None,
                      "tenants": sorted(self.scope.tenants or []) or None,
                      "embedding_model": (None if self.scope.embedding_model is None else
                                          ":".join(filter(None, self.scope.embedding_model)))},
            "snapshot": None if s is None else {
                "id": s.id, "cut_time_ms": s.cut_time_ms, "records": s.records},
            "valid_through_ms": self.valid_through_ms, "incomplete": self.incomplete,
            "bytes_to_read": self.snapshot_bytes + self.log_bytes,
            "snapshot_bytes": self.snapshot_bytes, "log_bytes_at_most": self.log_bytes,
            "segments": [{"topic": w.topic, "partition": w.partition, "from_offset": w.start,
                          "durable_end": w.durable_end, "objects": [k.avro for k in w.segments],
                          "gap": w.gap} for w in self.windows],
            "expected_from_snapshot": self.expected,
            "resolved": self.resolution(),
        }



def gather(repo: Repository, topics: list[str], target: RestoreTarget) -> PlanInputs:
    """The I/O half: the newest snapshot at or before the target, watermarks, listings."""
    snapshot = None
    candidates = [sid for sid in reversed(list_manifests(repo))  # ids start with the cut time
                  if target.time_ms is None or int(sid.split("-")[0]) <= target.time_ms]
    for m in readable_manifests(repo, candidates):
        if target.offsets is not None and any(
                m.cut_of(t, int(p)) > off for t, parts in target.offsets.items()
                for p, off in parts.items()):
            continue
        snapshot = m
        break
    watermarks = [wm for t in topics for wm in repo.list_watermarks(t)]
    return PlanInputs(snapshot, watermarks, windows_after(repo, watermarks, snapshot),
                      read_retention(repo))


def check_retained(retention: RetentionRecord | None, target: RestoreTarget,
                   snapshot: Manifest | None) -> None:
    """Refuse a time target the last prune left outside the restorable window, naming it."""
    if retention is None or target.time_ms is None or target.now:
        return
    t = target.time_ms
    if retention.allows(t) or (snapshot is not None and snapshot.cut_time_ms == t):
        return
    raise RestoreRefused(
        f"target {target.label} is outside the restorable window: retention kept "
        f"{retention.describe()}",
        "choose a time in the window or one of the restore points; `vecwal list` shows them")


def make_plan(inputs: PlanInputs, target: RestoreTarget, scope: Scope,
              allow_incomplete: bool = False) -> RestorePlan:
    """The pure half: choose windows, check coverage and completeness."""
    marks = inputs.watermarks
    check_retained(inputs.retention, target, inputs.snapshot)
    if not marks and inputs.snapshot is None:
        raise RestoreRefused("the repository holds nothing to restore",
                             "check storage.url and [kafka] topics; run capture first")
    valids = [wm.valid_through_ms for wm in marks]
    valid = None if not valids or any(v is None for v in valids) else min(
        v for v in valids if v is not None)
    incomplete = False
    if target.time_ms is not None and not target.now and (valid is None or target.time_ms > valid):
        incomplete = True
        if not allow_incomplete:
            raise RestoreRefused(
                f"target {target.label} is after the repository's valid-through time "
                f"({valid} ms): events up to the target may not all be durable yet",
                "choose an earlier target, wait for capture, or pass --allow-incomplete")
    if target.offsets is not None:
        for wm in marks:
            want = target.offsets.get(wm.topic, {}).get(str(wm.partition))
            if want is not None and want > wm.captured_through:
                incomplete = True
                if not allow_incomplete:
                    raise RestoreRefused(
                        f"{wm.topic}/{wm.partition} is durable to offset {wm.captured_through}, "
                        f"the target asks for {want - 1}",
                        "choose earlier offsets, wait for capture, or pass --allow-incomplete")
    if target.offsets is not None and not target.latest:
        captured = {(wm.topic, str(wm.partition)) for wm in marks}
        unknown = sorted(f"{t}/{p}" for t, parts in target.offsets.items() for p in parts
                         if (t, p) not in captured)
        if unknown:
            raise RestoreRefused(
                f"--to names {', '.join(unknown)}, which this repository has not captured",
                "captured: " + ", ".join(f"{t}/{p}" for t, p in sorted(captured)[:12])
                + (" ..." if len(captured) > 12 else "")
                + "; check the topic and partition numbers")
    if target.latest:  # every partition to its durable offset
        offsets: dict[str, dict[str, int]] = {}
        for wm in marks:
            offsets.setdefault(wm.topic, {})[str(wm.partition)] = wm.captured_through
        target = replace(target, offsets=offsets)
    until_ms = valid if target.now else target.time_ms
    windows = inputs.windows
    for w in windows:  # refuse a target that needs offsets no segment holds
        w.check_reach(until_ms, None if target.offsets is None else
                      target.offsets.get(w.topic, {}).get(str(w.partition)))
    expected: dict[str, Any] = {}
    if inputs.snapshot is not None:
        for name, c in inputs.snapshot.collections.items():
            if scope.has_collection(name):
                tenants = {t: n for t, n in c.tenants.items()
                           if scope.tenants is None or t in scope.tenants}
                expected[name] = {"records": sum(tenants.values()), "tenants": tenants}
    return RestorePlan(target, scope, inputs.snapshot, windows, valid, incomplete, until_ms,
                       expected, {f"{wm.topic}/{wm.partition}": wm.valid_through_ms
                                  for wm in marks})
