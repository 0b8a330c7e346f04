"""What prune leaves restorable: ``state/retention.json`` (mutable, never pruned), read by
restore, verify and list.

It says from which instant every time is restorable (the anchor snapshot's cut), the restore
points kept beyond it, and each partition's log floor (the first offset kept). Prune writes it
before it deletes anything, so a restore refused after a prune names the window it can have."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson

from daemon.changelog.repository import Repository
from daemon.errors import IntegrityError, ObjectNotFound

RETENTION_KEY = "state/retention.json"
RECORD_FORMAT = 1


@dataclass(frozen=True)
class RestorePoint:
    snapshot: str
    cut_time_ms: int
    why: list[str]


@dataclass(frozen=True)
class RetentionRecord:
    pruned_at_ms: int
    window_from_ms: int | None
    """Every instant from here to the valid-through time is restorable (None: from the start
    of the log, nothing was cut)."""
    points: list[RestorePoint] = field(default_factory=list)
    """Restore points older than ``window_from_ms``, oldest first: exactly their cut times."""
    log_floor: dict[str, dict[str, int]] = field(default_factory=dict)
    """topic -> partition (text) -> the first offset the log keeps."""
    format: int = RECORD_FORMAT

    def allows(self, time_ms: int) -> bool:
        return self.window_from_ms is None or time_ms >= self.window_from_ms or any(
            p.cut_time_ms == time_ms for p in self.points)

    def describe(self) -> str:
        from daemon.status import iso_ms

        start = "the start of the log" if self.window_from_ms is None else iso_ms(
            self.window_from_ms)
        text = f"every instant from {start} to now"
        if self.points:
            text += "; and exactly the restore points " + ", ".join(
                f"{iso_ms(p.cut_time_ms)} ({', '.join(p.why)})" for p in self.points)
        return text

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> RetentionRecord:
        try:
            raw = orjson.loads(data)
            return cls(raw["pruned_at_ms"], raw["window_from_ms"],
                       [RestorePoint(**p) for p in raw["points"]], raw["log_floor"],
                       raw["format"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{RETENTION_KEY} is not valid: {exc}",
                                 "run `vecwal prune --confirm` to write it again") from None


def read_retention(repo: Repository) -> RetentionRecord | None:
    try:
        return RetentionRecord.from_json(repo.store.get(RETENTION_KEY))
    except ObjectNotFound:
        return None


def write_retention(repo: Repository, record: RetentionRecord) -> None:
    repo.store.put(RETENTION_KEY, record.to_json())
