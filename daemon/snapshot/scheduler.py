"""Scheduled compaction inside `vecwal run`: every ``compaction.interval_s`` a background
thread folds the log onto a new snapshot. Several daemons in one group all schedule it; the
lease lets one at a time work, the others log that it is held and wait for the next turn.
After a compaction the same thread indexes the segments written since the last turn (the id
filter index history uses, daemon/audit/idfilter.py); a failure there only costs speed."""

from __future__ import annotations

import time

import structlog

from daemon.changelog.repository import Repository
from daemon.config import Config
from daemon.errors import VecwalError
from daemon.metrics import Metrics
from daemon.periodic import Periodic
from daemon.snapshot.compactor import Compactor
from daemon.snapshot.lease import LeaseHeld

log = structlog.get_logger("vecwal.compact")


class CompactionScheduler(Periodic):
    def __init__(self, config: Config, repo: Repository, metrics: Metrics) -> None:
        super().__init__(config.compaction.interval_s, "vecwal-compaction")
        self.metrics = metrics
        self.repo, self.topics = repo, config.kafka.topics
        self.compactor = Compactor.from_config(repo, config)

    def run_once(self) -> None:
        began = time.monotonic()
        try:
            manifest = self.compactor.compact()
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
        from daemon.audit.idfilter import update_index

        try:
            updates = update_index(self.repo, self.topics)
        except Exception as exc:  # the index only saves work: never let it stop capture
            log.warning("id filter index update failed, history reads sidecars meanwhile",
                        error=repr(exc))
            return
        log.info("id filter index updated",
                 segments_indexed=sum(u.indexed_now for u in updates))
