"""``[reconcile]`` in `vecwal run`: every ``interval_s`` a background thread compares the live
engine with the backup's state at valid-through (``daemon.audit.reconcile.reconcile``, what
``vecwal reconcile`` runs) and exports the drift per collection and kind as
``vecwal_reconcile_drift_records`` (the alert VecwalReconcileDrift, deploy/prometheus). A
reconcile that cannot run is logged and counted in ``vecwal_errors_total{kind="reconcile"}``;
the gauges then keep the last values. It never stops capture."""

from __future__ import annotations

import time

import structlog

from daemon.audit.reconcile import KINDS, Reconciliation, reconcile
from daemon.changelog.repository import Repository
from daemon.config import Config
from daemon.metrics import Metrics
from daemon.periodic import Periodic
from daemon.restore.planner import Scope

log = structlog.get_logger("vecwal.reconcile")


class ReconcileScheduler(Periodic):
    def __init__(self, config: Config, repo: Repository, metrics: Metrics) -> None:
        super().__init__(config.reconcile.interval_s, "vecwal-reconcile")
        self.config, self.repo, self.metrics = config, repo, metrics

    def run_once(self) -> Reconciliation | None:
        from daemon.keys.opener import store_opener
        from daemon.restore.sinks.open import open_engine

        rc = self.config.reconcile
        scope = Scope(frozenset(rc.collections), frozenset(rc.tenants) if rc.tenants else None)
        opener = store_opener(self.config) if self.config.encryption.per_tenant_keys else None
        try:
            engine = open_engine(rc.engine)
            try:
                result = reconcile(self.repo, self.config.kafka.topics, engine, scope,
                                   open_store=opener)
            finally:
                engine.close()
        except Exception as exc:  # an engine or store hiccup must not kill capture
            self.metrics.errors.labels("reconcile").inc()
            log.warning("reconcile could not run", error=repr(exc))
            return None
        publish(self.metrics, result)
        level = log.warning if result.drift else log.info
        level("reconcile", engine=result.engine, drift=result.drift, **result.totals(),
              seconds=round(result.seconds, 3))
        return result


def publish(metrics: Metrics, result: Reconciliation) -> None:
    for name, c in result.collections.items():
        for kind in KINDS:
            metrics.reconcile_drift.labels(name, kind).set(c.counts[kind])
    metrics.last_reconcile_time.set(time.time())
