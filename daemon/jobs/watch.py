"""The job metrics of `vecwal run`, from the records in the store (the store is the truth, so
jobs run by other processes, a cron'd `vecwal verify` or a restore, count too):

- at start (``seed``): ``vecwal_job_last_success_timestamp_seconds{kind}`` and
  ``vecwal_job_last_failure_timestamp_seconds{kind}`` from the newest succeeded and failed
  record of each kind (found by LIST: the result is in the key; two GETs per kind at most);
- every ``interval`` (``poll``): the records that appeared since, each observed once in
  ``vecwal_job_duration_seconds{kind}`` and moving the gauges forward. Only the records that
  started in the last ``lookback`` are listed, so a poll costs one short LIST per kind;
- ``publish``: a scheduled job of this process, as soon as it ends (the poll skips it later).

The histogram counts the jobs that ended while this process ran: records older than its
start are not observed, or every restart would count them again. Refused runs move neither
gauge (a bad argument or a held lease is not a failure of the backup)."""

from __future__ import annotations

import threading
import time

import structlog

from daemon.jobs.record import KINDS, JobKey, JobRecord, list_job_keys, read_job
from daemon.metrics import Metrics
from daemon.objectstore import ObjectStore
from daemon.periodic import Periodic

log = structlog.get_logger("vecwal.jobs")
POLL_S = 60.0
LOOKBACK_MS = 7 * 86_400_000
"""A job that runs longer than this is not seen by the poll (the next start seeds it)."""


class JobWatch(Periodic):
    def __init__(self, store: ObjectStore, metrics: Metrics, interval: float = POLL_S,
                 lookback_ms: int = LOOKBACK_MS) -> None:
        super().__init__(interval, "vecwal-jobs")
        self.store, self.metrics, self.lookback_ms = store, metrics, lookback_ms
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        """key -> start ms of the records already published (within the lookback)."""
        self._last: dict[tuple[str, str], float] = {}
        """(kind, result) -> the gauge's value."""

    def before_first(self) -> None:
        try:
            self.seed()
        except Exception as exc:  # only metrics: capture goes on
            log.warning("job metrics not seeded from the store", error=repr(exc))

    def run_once(self) -> None:
        try:
            self.poll()
        except Exception as exc:
            log.warning("job records not read", error=repr(exc))

    def seed(self, now_ms: int | None = None) -> None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        for kind in KINDS:
            newest: dict[str, JobKey] = {}
            for k in list_job_keys(self.store, kind):
                newest[k.result] = k
                if k.started_at_ms >= now_ms - self.lookback_ms:
                    self._seen[k.key] = k.started_at_ms
            for result in ("succeeded", "failed"):
                if result in newest:
                    self._gauge(read_job(self.store, newest[result].key))

    def poll(self, now_ms: int | None = None) -> list[JobRecord]:
        """Publish the records that appeared since the last look; returns them."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        floor = now_ms - self.lookback_ms
        new = [k for k in list_job_keys(self.store, since_ms=floor) if k.key not in self._seen]
        out = []
        for k in new:
            rec = read_job(self.store, k.key)
            self.publish(rec)
            out.append(rec)
        with self._lock:
            self._seen = {key: ms for key, ms in self._seen.items() if ms >= floor}
        return out

    def publish(self, rec: JobRecord) -> None:
        """One finished job: its duration observed once, the gauges moved forward."""
        with self._lock:
            if rec.key in self._seen:
                return
            self._seen[rec.key] = rec.started_at_ms
        if rec.result != "refused":
            self.metrics.job_duration.labels(rec.kind).observe(rec.duration_seconds)
        self._gauge(rec)

    def _gauge(self, rec: JobRecord) -> None:
        gauge = {"succeeded": self.metrics.job_last_success,
                 "failed": self.metrics.job_last_failure}.get(rec.result)
        if gauge is None:
            return
        at = (rec.ended_at_ms or rec.started_at_ms) / 1000
        with self._lock:
            if at <= self._last.get((rec.kind, rec.result), 0.0):
                return  # records may be found out of order: the gauge only moves forward
            self._last[(rec.kind, rec.result)] = at
        gauge.labels(rec.kind).set(at)
