"""``JobRecord``: what one job run leaves in the repository, and where.

The key is ``jobs/<kind>/<start ms, 13 digits>-<8 hex>.<result>.json``: LIST order is start
order within a kind, and the result is in the key, so the newest success or failure of a kind,
``vecwal jobs --failed`` and the metrics need a LIST and no GET of the records they skip. A
record is written once, create-only, when its job has ended (``run.JobRun``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from daemon.objectstore import ObjectStore

JOBS_ROOT = "jobs/"
KINDS = ("compaction", "prune", "restore", "drill", "verify", "index", "rollback")
RESULTS = ("succeeded", "failed", "refused")
"""succeeded; failed: the job began its work and did not finish it (or its check failed);
refused: a VecwalError before the job began its work (a bad argument, a lease held by another
process): nothing was read from the log nor written."""
_KEY_RE = re.compile(r"^jobs/(?P<kind>[a-z]+)/(?P<id>(?P<ms>\d{13})-[0-9a-f]{8})"
                     r"\.(?P<result>succeeded|failed|refused)\.json$")


@dataclass(frozen=True)
class JobKey:
    """What a record's key says, without reading it."""

    key: str
    kind: str
    id: str
    started_at_ms: int
    result: str

    @classmethod
    def parse(cls, key: str) -> JobKey | None:
        m = _KEY_RE.match(key)
        if m is None or m["kind"] not in KINDS:
            return None
        return cls(key, m["kind"], m["id"], int(m["ms"]), m["result"])


def job_key(kind: str, job_id: str, result: str) -> str:
    return f"{JOBS_ROOT}{kind}/{job_id}.{result}.json"


@dataclass
class JobRecord:
    id: str
    """``<start ms, 13 digits>-<8 hex>``: unique, and sorting by it sorts by start."""
    kind: str
    started_at: str
    started_at_ms: int
    result: str = "succeeded"
    ended_at: str | None = None
    ended_at_ms: int | None = None
    duration_seconds: float = 0.0
    trigger: str = "cli"
    """``cli`` (a command) or ``schedule`` (a scheduler inside `vecwal run`)."""
    scope: dict[str, Any] = field(default_factory=dict)
    """collections and tenants (None: all), target (as given) and target_ms (the instant it
    resolved to), where the kind has them."""
    bytes_read: int | None = None
    bytes_written: int | None = None
    records_read: int | None = None
    records_written: int | None = None
    """None: not measured by this kind of job."""
    error_kind: str | None = None
    """The error's class (``BadTarget``, ``LeaseHeld``, ``IntegrityError``...) or what failed
    (``validation``)."""
    error_message: str | None = None
    error_hint: str | None = None
    exit_code: int | None = None
    """The command's exit code (CLI jobs)."""
    details: dict[str, Any] = field(default_factory=dict)
    """What the kind adds: the snapshot written or read, the sink, the drill's id..."""
    host: str = ""
    pid: int = 0
    vecwal_version: str = ""
    command: list[str] = field(default_factory=list)
    """The command line with secrets removed (``scrub.scrub_argv``); empty when scheduled."""

    @property
    def key(self) -> str:
        return job_key(self.kind, self.id, self.result)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes) -> JobRecord:
        raw = orjson.loads(data)
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in names})


def list_job_keys(store: ObjectStore, kind: str | None = None, since_ms: int | None = None
                  ) -> Iterator[JobKey]:
    """The records' keys, per kind in start order (kinds in KINDS order); ``since_ms`` skips
    the records that started before it without listing them."""
    for k in KINDS if kind is None else (kind,):
        prefix = f"{JOBS_ROOT}{k}/"
        after = "" if since_ms is None else f"{prefix}{max(since_ms - 1, 0):013d}-~"
        for info in store.list(prefix, start_after=after):
            parsed = JobKey.parse(info.key)
            if parsed is not None:
                yield parsed


def read_job(store: ObjectStore, key: str) -> JobRecord:
    return JobRecord.from_json(store.get(key))


def latest_jobs(store: ObjectStore) -> dict[str, JobRecord]:
    """The newest record of each kind that has one (by start), one LIST per kind."""
    out: dict[str, JobRecord] = {}
    for kind in KINDS:
        newest = None
        for k in list_job_keys(store, kind):
            newest = k
        if newest is not None:
            out[kind] = read_job(store, newest.key)
    return out
