"""Scheduled compaction inside `vecwal run`: every ``compaction.interval_s`` a background
thread folds the log onto a new snapshot. Several daemons in one group all schedule it; the
lease lets one at a time work, the others log that it is held and wait for the next turn.
After a compaction the same thread indexes the segments written since the last turn (the id
filter index history uses, daemon/audit/idfilter.py); a failure there only costs speed.
Above both snapshot and audit, as the other schedulers of `vecwal run` are."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from daemon.audit.idfilter import update_index
from daemon.changelog.repository import Repository
from daemon.config import Config
from daemon.errors import VecwalError
from daemon.jobs.notes import note_compaction, note_index
from daemon.jobs.record import JobRecord
from daemon.jobs.run import JobRun
from daemon.metrics import Metrics
from daemon.periodic import Periodic
from daemon.snapshot.compactor import Compactor
from daemon.snapshot.lease import LeaseHeld

log = structlog.get_logger("vecwal.compact")


class CompactionScheduler(Periodic):
    """Each turn writes a job record of kind ``compaction`` and one of kind ``index``
    (daemon/jobs/), but not for a turn the lease refused; ``on_job`` gets each record."""

    def __init__(self, config: Config, repo: Repository, metrics: Metrics,
                 on_job: Callable[[JobRecord], None] | None = None) -> None:
        super().__init__(config.compaction.interval_s, "vecwal-compaction")
        self.metrics = metrics
        self.repo, self.topics = repo, config.kafka.topics
        self.compactor = Compactor.from_config(repo, config)
        self.on_job = on_job

    def _job(self, kind: str) -> JobRun:
        return JobRun(self.repo.store, kind, trigger="schedule", record_refused=False,
                      on_end=self.on_job)

    def run_once(self) -> None:
        began = time.monotonic()
        try:
            with self._job("compaction") as job:
                job.begin()
                manifest = self.compactor.compact()
                note_compaction(job, self.compactor, manifest)
        except LeaseHeld as held:
            log.info("compaction skipped: lease held elsewhere", detail=held.message)
            return
        except VecwalError as exc:
            self.metrics.errors.labels("compaction").inc()
            log.warning("compaction failed, will retry next interval", error=str(exc),
                        hint=exc.hint)
            return
        except Exception as exc:  # a store hiccup must not kill the capture process
            self.metrics.errors.labels("compaction").inc()
            log.warning("compaction failed, will retry next interval", error=repr(exc))
            return
        self.metrics.compaction_seconds.observe(time.monotonic() - began)
        self.metrics.last_snapshot_cut.set(manifest.cut_time_ms / 1000)
        self.index_once()

    def index_once(self) -> None:
        try:
            with self._job("index") as job:
                job.begin()
                updates = update_index(self.repo, self.topics)
                note_index(job, updates)
        except Exception as exc:  # the index only saves work: never let it stop capture
            log.warning("id filter index update failed, history reads sidecars meanwhile",
                        error=repr(exc))
            return
        log.info("id filter index updated",
                 segments_indexed=sum(u.indexed_now for u in updates))
