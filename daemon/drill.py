"""Restore drills: prove the backup by restoring it. A drill plans a restore (default: to the
valid-through time), writes it into a scratch target, validates it there (in the engine for
``qdrant:``/``milvus:``/``pgvector:``), measures the RTO (plan + load + validation, wall
time), removes what it wrote, and records the result in the repository under ``drills/``
(create-only, one object per drill; a URL's password is recorded as ``***``). ``vecwal
status`` and the metrics show the newest one.

Scratch targets: in a vector database every collection is restored under
``vecwal_drill_<id>_<name>`` (aliases are not created: they are global to the engine) and
dropped afterwards; ``dir:PATH`` gets a subdirectory ``PATH/<drill id>`` that is removed;
``kafka:`` is refused (a topic cannot be cleaned up). ``qdrant::memory:`` needs no cleanup.

In ``vecwal run`` the DrillScheduler runs one every ``[drill] interval_s`` (0, the default,
disables), beside compaction (``daemon/compaction_scheduler.py``)."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from daemon.changelog.repository import Repository, writer_identity
from daemon.config import Config
from daemon.errors import VecwalError
from daemon.metrics import Metrics
from daemon.periodic import Periodic
from daemon.progress import Progress
from daemon.restore.planner import Scope
from daemon.restore.sinks import Sink

if TYPE_CHECKING:
    from daemon.jobs.record import JobRecord

log = structlog.get_logger("vecwal.drill")

DRILLS_ROOT = "drills/"
SinkFactory = Callable[..., Sink]
"""open_sink(spec, config, prefix=...) or a test double."""


class DrillFailed(VecwalError):
    """The drill ran and its validation failed."""

    exit_code = 5


@dataclass
class DrillRecord:
    id: str
    started_at_ms: int
    finished_at_ms: int
    ok: bool
    into: str
    target: str
    until_ms: int | None = None
    snapshot: str | None = None
    records: int = 0
    rto_seconds: float = 0.0
    """Wall time from planning to a validated restore."""
    restore_seconds: float = 0.0
    validation_seconds: float = 0.0
    engine_load_seconds: float | None = None
    checks: int = 0
    failed_checks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    """Why the drill could not restore at all (refused plan, unreachable engine, ...)."""
    cleaned_up: bool = False
    writer: str = ""

    @property
    def key(self) -> str:
        return f"{DRILLS_ROOT}{self.id}.json"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: bytes) -> DrillRecord:
        raw = orjson.loads(data)
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in names})


def run_drill(config: Config, repo: Repository, into: str, *, to: str = "now",
              scope: Scope | None = None, open_sink: SinkFactory | None = None,
              now_ms: int | None = None, progress: Progress | None = None) -> DrillRecord:
    """Restore into a scratch target, validate, clean up. Never raises for a failed
    restore: the failure is the drill's result (``ok`` false, ``error`` or
    ``failed_checks``). ``progress``: the restore's, as ``restore.executor.execute`` reports it."""
    from daemon.restore.executor import execute
    from daemon.restore.planner import gather, make_plan
    from daemon.restore.sinks.open import ENGINES, shown_spec
    from daemon.restore.sinks.open import open_sink as default_open
    from daemon.restore.target import parse_target
    from daemon.restore.validate import validate

    started = int(time.time() * 1000) if now_ms is None else now_ms
    drill_id = f"{started:013d}-{uuid.uuid4().hex[:8]}"
    rec = DrillRecord(drill_id, started, started, False, shown_spec(into), to,
                      writer=writer_identity())
    kind, _, where = into.partition(":")
    if kind == "kafka":
        raise VecwalError("a drill cannot restore into kafka: (a topic cannot be cleaned up)",
                          "drill into qdrant::memory:, qdrant:PATH, milvus:PATH.db, chroma:URL, "
                          "pgvector:postgresql://..., lancedb:PATH or dir:PATH")
    spec, scratch_dir = into, None
    if kind == "dir":
        scratch_dir = Path(where) / drill_id
        spec = f"dir:{scratch_dir}"
    began = time.monotonic()
    sink: Sink | None = None
    try:
        target = parse_target(to, started)
        plan = make_plan(gather(repo, config.kafka.topics, target), target, scope or Scope())
        rec.until_ms, rec.target = plan.until_ms, target.label
        rec.snapshot = plan.snapshot.id if plan.snapshot else None
        factory = open_sink or default_open
        if kind in ENGINES:
            sink = factory(spec, config, prefix=f"vecwal_drill_{drill_id.split('-')[1]}_")
        else:
            sink = factory(spec, config)
        result = execute(repo, plan, sink, progress=progress)
        rec.restore_seconds = round(time.monotonic() - began, 3)
        rec.records = result.records
        v_began = time.monotonic()
        report = validate(result, sink)
        rec.validation_seconds = round(time.monotonic() - v_began, 3)
        rec.checks = len(report.checks)
        rec.failed_checks = [asdict(c) for c in report.checks if not c.ok]
        rec.ok = report.ok
        load = getattr(sink, "load_seconds", None)
        rec.engine_load_seconds = None if load is None else round(load, 3)
    except VecwalError as exc:
        rec.error = f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
    except Exception as exc:  # an engine's own error: the drill failed, say how
        rec.error = repr(exc)
    finally:
        rec.rto_seconds = round(time.monotonic() - began, 3)
        rec.cleaned_up = _clean(sink, scratch_dir)
        rec.finished_at_ms = int(time.time() * 1000)
    return rec


def _clean(sink: Sink | None, scratch_dir: Path | None) -> bool:
    ok = True
    if sink is not None:
        for step in ("cleanup", "close"):
            fn = getattr(sink, step, None)
            if fn is None:
                continue
            try:
                fn()
            except Exception as exc:
                ok = False
                log.warning("drill clean-up step failed", step=step, error=repr(exc))
    if scratch_dir is not None and scratch_dir.exists():
        shutil.rmtree(scratch_dir, ignore_errors=True)
        ok = ok and not scratch_dir.exists()
    return ok


def record_drill(repo: Repository, rec: DrillRecord) -> str:
    repo.store.put(rec.key, orjson.dumps(rec.to_dict(), option=orjson.OPT_INDENT_2),
                   create_only=True)
    return rec.key


def latest_drill(repo: Repository) -> DrillRecord | None:
    newest = None
    for info in repo.store.list(DRILLS_ROOT):
        if info.key.endswith(".json") and (newest is None or info.key > newest):
            newest = info.key
    return None if newest is None else DrillRecord.from_json(repo.store.get(newest))


def publish(metrics: Metrics, rec: DrillRecord) -> None:
    metrics.last_drill_time.set(rec.finished_at_ms / 1000)
    metrics.last_drill_ok.set(1 if rec.ok else 0)
    metrics.last_drill_rto.set(rec.rto_seconds)
    metrics.drills.labels("ok" if rec.ok else "failed").inc()


class DrillScheduler(Periodic):
    """Every ``[drill] interval_s`` inside `vecwal run`, a background thread runs a drill and
    records it. A failing drill is logged and counted; it never stops capture."""

    def __init__(self, config: Config, repo: Repository, metrics: Metrics,
                 on_job: Callable[[JobRecord], None] | None = None) -> None:
        super().__init__(config.drill.interval_s, "vecwal-drill")
        self.config = config
        self.repo = repo
        self.metrics = metrics
        self.on_job = on_job
        """Gets the job record (kind ``drill``, daemon/jobs/) each drill also writes."""

    def run_once(self) -> DrillRecord | None:
        from daemon.jobs.notes import note_drill
        from daemon.jobs.run import JobRun

        d = self.config.drill
        scope = Scope(frozenset(d.collections) if d.collections else None, strict=True)
        try:
            with JobRun(self.repo.store, "drill", trigger="schedule", record_refused=False,
                        on_end=self.on_job) as job:
                job.scope(collections=d.collections or None, target=d.to)
                job.begin()
                rec = run_drill(self.config, self.repo, d.into, to=d.to, scope=scope)
                record_drill(self.repo, rec)
                note_drill(job, rec)
        except Exception as exc:  # a store hiccup must not kill the capture process
            self.metrics.errors.labels("drill").inc()
            log.warning("drill could not run or be recorded", error=repr(exc))
            return None
        publish(self.metrics, rec)
        if rec.ok:
            log.info("drill passed", drill=rec.id, records=rec.records, rto_s=rec.rto_seconds)
        else:
            log.warning("drill FAILED", drill=rec.id, error=rec.error,
                        failed=[c["name"] for c in rec.failed_checks][:10])
        return rec

    def before_first(self) -> None:
        try:
            last = latest_drill(self.repo)
            if last is not None:
                self.metrics.last_drill_time.set(last.finished_at_ms / 1000)
                self.metrics.last_drill_ok.set(1 if last.ok else 0)
                self.metrics.last_drill_rto.set(last.rto_seconds)
        except Exception as exc:
            log.warning("cannot read the last drill", error=repr(exc))
