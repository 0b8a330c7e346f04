"""Scheduled prune inside `vecwal run`: every ``retention.interval_s`` a background thread
carries out the retention policy (``prune.prune`` with confirm). Several daemons of one group
all schedule it; the repository lease lets one prune (or compact) at a time, the others log
that it is held and try at their next turn."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from daemon.changelog.repository import Repository
from daemon.config import Config
from daemon.config_checks import lock_seconds
from daemon.errors import VecwalError
from daemon.jobs.notes import note_prune
from daemon.jobs.record import JobRecord
from daemon.jobs.run import JobRun
from daemon.lifecycle.listing import gather_listing
from daemon.lifecycle.policy import Policy
from daemon.lifecycle.prune import PruneResult, prune
from daemon.lifecycle.usage import publish_usage, usage_of
from daemon.metrics import Metrics
from daemon.periodic import Periodic
from daemon.snapshot.lease import LeaseHeld

log = structlog.get_logger("vecwal.prune")


class PruneScheduler(Periodic):
    """Each turn writes a job record of kind ``prune`` (daemon/jobs/), but not for a turn the
    lease refused; ``on_job`` gets each record."""

    def __init__(self, config: Config, repo: Repository, metrics: Metrics,
                 on_job: Callable[[JobRecord], None] | None = None) -> None:
        super().__init__(config.retention.interval_s, "vecwal-prune")
        self.repo, self.metrics, self.on_job = repo, metrics, on_job
        self.policy = Policy.from_config(config.retention, config.jobs.keep_days)
        self.lease_ttl_s = config.compaction.lease_ttl_s
        self.lock_ms = int(lock_seconds(config) * 1000) or None

    def run_once(self) -> PruneResult | None:
        try:
            with JobRun(self.repo.store, "prune", trigger="schedule", record_refused=False,
                        on_end=self.on_job) as job:
                job.begin()
                result = prune(self.repo, self.policy, confirm=True,
                               lease_ttl_s=self.lease_ttl_s, lock_ms=self.lock_ms)
                note_prune(job, result)
        except LeaseHeld as held:
            log.info("prune skipped: lease held elsewhere", detail=held.message)
            return None
        except VecwalError as exc:
            self.metrics.errors.labels("prune").inc()
            log.warning("prune failed, will retry next interval", error=str(exc), hint=exc.hint)
            return None
        except Exception as exc:  # a store hiccup must not kill the capture process
            self.metrics.errors.labels("prune").inc()
            log.warning("prune failed, will retry next interval", error=repr(exc))
            return None
        publish_prune(self.metrics, result)
        try:  # what the repository holds now, by kind: one more LIST, once an interval
            now = result.plans[-1].now_ms
            publish_usage(self.metrics, usage_of(gather_listing(self.repo, now), self.policy, now))
        except Exception as exc:  # only a gauge: never let it fail the prune
            log.warning("repository usage not published", error=repr(exc))
        return result


def publish_prune(metrics: Metrics, result: PruneResult) -> None:
    for kind, (objects, size) in result.deleted.items():
        metrics.pruned_objects.labels(kind).inc(objects)
        metrics.pruned_bytes.labels(kind).inc(size)
    metrics.prune_locked.set(len(result.locked))
    last = result.plans[-1]
    if last.record.window_from_ms is not None:
        metrics.restorable_oldest.set(last.record.window_from_ms / 1000)
    if not result.failed:
        metrics.prune_last_success.set(last.now_ms / 1000)
    log.info("prune done", deleted_objects=sum(n for n, _ in result.deleted.values()),
             deleted_bytes=sum(b for _, b in result.deleted.values()),
             locked=len(result.locked), failed=len(result.failed),
             window_from_ms=last.record.window_from_ms, seconds=round(result.seconds, 3))
