"""The retention policy, and which restore points it keeps: pure, no I/O.

A policy promises two things. Every instant of the last ``window`` stays restorable: the log
is kept from the cut of the *anchor*, the newest snapshot at or before the window's start less
``grace`` (a restore that planned from the anchor of a moment ago still finds its log), and
every snapshot after the anchor is kept. Beyond the window, ``keep_daily`` ... ``keep_yearly``
keep grandfather-father-son restore points: the newest snapshot of each of the last N UTC days,
ISO weeks, months and years that have one, among the snapshots older than the anchor (as
restic's ``forget --keep-*``). A pin keeps its snapshot whatever the policy says."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from daemon.config import RetentionConfig
from daemon.durations import parse_duration

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Policy:
    window_ms: int | None
    """None: keep everything (no window configured)."""
    grace_ms: int
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    quarantine_ms: int | None = None
    """None: rejected events live as long as the log around them."""
    jobs_ms: int | None = None
    drills_ms: int | None = None

    @classmethod
    def from_config(cls, r: RetentionConfig, jobs_keep_days: int = 0) -> Policy:
        """``jobs_keep_days`` (``[jobs] keep_days``): how long job records stay when
        ``[retention] jobs`` is not set, raised to the window; 0 keeps them."""
        def ms(text: str, name: str) -> int | None:
            return None if not text else int(parse_duration(text, f"[retention] {name}") * 1000)

        window = ms(r.window, "window")
        jobs = ms(r.jobs, "jobs")
        if jobs is None and jobs_keep_days > 0:
            jobs = max(jobs_keep_days * DAY_MS, window or 0)
        return cls(window, ms(r.grace, "grace") or 0, r.keep_daily,
                   r.keep_weekly, r.keep_monthly, r.keep_yearly,
                   ms(r.quarantine, "quarantine"), jobs, ms(r.drills, "drills"))

    def horizon_ms(self, now_ms: int) -> int | None:
        """The anchor is the newest snapshot cut at or before this instant."""
        if self.window_ms is None:
            return None
        return now_ms - self.window_ms - self.grace_ms


@dataclass(frozen=True)
class SnapshotPoint:
    id: str
    cut_time_ms: int


@dataclass
class Keep:
    """Why each kept snapshot is kept (``reasons``), and the anchor."""

    reasons: dict[str, list[str]] = field(default_factory=dict)
    anchor: SnapshotPoint | None = None

    def add(self, snapshot_id: str, why: str) -> None:
        self.reasons.setdefault(snapshot_id, []).append(why)


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _week(ms: int) -> str:
    year, week, _ = datetime.fromtimestamp(ms / 1000, UTC).isocalendar()
    return f"{year}-W{week:02d}"


def _month(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m")


def _year(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y")


RULES: tuple[tuple[str, Callable[[int], str]], ...] = (
    ("daily", _day), ("weekly", _week), ("monthly", _month), ("yearly", _year))


def choose_kept(snapshots: Sequence[SnapshotPoint], policy: Policy, now_ms: int,
                pinned: dict[str, list[str]] | None = None) -> Keep:
    """Which snapshots the policy keeps at ``now_ms`` and why. ``pinned``: snapshot id -> the
    pins that hold it. The newest snapshot is always kept."""
    keep = Keep()
    ordered = sorted(snapshots, key=lambda s: (s.cut_time_ms, s.id))
    for sid, pins in (pinned or {}).items():
        for pin in pins:
            keep.add(sid, f"pin {pin}")
    if not ordered:
        return keep
    keep.add(ordered[-1].id, "newest")
    horizon = policy.horizon_ms(now_ms)
    if horizon is None:
        for s in ordered:
            keep.add(s.id, "no window: all kept")
        return keep
    older = [s for s in ordered if s.cut_time_ms <= horizon]
    for s in ordered:
        if s.cut_time_ms > horizon:
            keep.add(s.id, "window")
    if older:
        keep.anchor = older[-1]
        keep.add(older[-1].id, "window start")
        beyond = older[:-1]
        counts = {"daily": policy.keep_daily, "weekly": policy.keep_weekly,
                  "monthly": policy.keep_monthly, "yearly": policy.keep_yearly}
        for rule, bucket_of in RULES:
            wanted = counts[rule]
            seen: set[str] = set()
            for s in reversed(beyond):  # newest first: the newest of each bucket
                if len(seen) >= wanted:
                    break
                b = bucket_of(s.cut_time_ms)
                if b not in seen:
                    seen.add(b)
                    keep.add(s.id, f"{rule} {b}")
    return keep
