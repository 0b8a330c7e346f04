"""Every Prometheus metric vecwal exports, defined in one place.

Each Metrics instance has its own registry, so several daemons can live in one process (tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

if TYPE_CHECKING:
    from daemon.config import Config


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events_captured = Counter(
            "vecwal_events_captured", "Events made durable in the change log (valid ones)",
            ["topic"], registry=r)
        self.bytes_captured = Counter(
            "vecwal_bytes_captured", "Kafka value bytes of events made durable", ["topic"],
            registry=r)
        self.segments_written = Counter(
            "vecwal_segments_written", "Change-log segments uploaded", ["topic"], registry=r)
        self.segment_bytes = Counter(
            "vecwal_segment_bytes_written", "Bytes of segments uploaded", ["topic"], registry=r)
        self.upload_seconds = Histogram(
            "vecwal_segment_upload_seconds",
            "Time to make one segment durable (segment, sidecar, watermark)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.quarantined = Counter(
            "vecwal_quarantined_events", "Bad events kept under quarantine/", ["topic", "reason"],
            registry=r)
        self.errors = Counter("vecwal_errors", "Errors by kind", ["kind"], registry=r)
        self.future_stamped = Counter(
            "vecwal_future_stamped_events",
            "Events stamped ahead of the time capture saw them by more than the clock margin",
            ["topic"], registry=r)
        self.consumer_lag = Gauge(
            "vecwal_consumer_lag_events", "High watermark minus durable offset",
            ["topic", "partition"], registry=r)
        self.rpo_seconds = Gauge(
            "vecwal_rpo_seconds", "Now minus the partition's valid-through time",
            ["topic", "partition"], registry=r)
        self.valid_through = Gauge(
            "vecwal_valid_through_timestamp_seconds",
            "Every event up to this time is durable", ["topic", "partition"], registry=r)
        self.buffered_bytes = Gauge(
            "vecwal_buffered_bytes", "Event bytes held in memory, not yet durable", registry=r)
        self.paused = Gauge(
            "vecwal_consumption_paused", "1 while consumption is paused (buffer full)", registry=r)
        self.store_up = Gauge(
            "vecwal_store_up", "0 while the object store is failing", registry=r)
        self.store_up.set(1)
        self.skipped = Counter(
            "vecwal_skipped_events",
            "Messages that carry no change (tombstones after Debezium deletes)",
            ["topic", "reason"], registry=r)
        self.held_partitions = Gauge(
            "vecwal_held_partitions",
            "Partitions held at an offset while their source (the schema registry) does not "
            "answer", registry=r)
        self.compaction_seconds = Histogram(
            "vecwal_compaction_seconds", "Time to write one snapshot",
            buckets=(1, 5, 15, 60, 300, 900, 3600), registry=r)
        self.last_snapshot_cut = Gauge(
            "vecwal_last_snapshot_cut_timestamp_seconds",
            "Cut time of the newest snapshot this process wrote", registry=r)
        self.last_drill_time = Gauge(
            "vecwal_last_drill_timestamp_seconds", "When the newest restore drill finished",
            registry=r)
        self.last_drill_ok = Gauge(
            "vecwal_last_drill_success", "1 if the newest restore drill validated, else 0",
            registry=r)
        self.last_drill_rto = Gauge(
            "vecwal_last_drill_rto_seconds",
            "RTO of the newest restore drill: plan, load and validation, wall time", registry=r)
        self.drills = Counter("vecwal_drills", "Restore drills run by this process", ["result"],
                              registry=r)
        self.reconcile_drift = Gauge(
            "vecwal_reconcile_drift_records",
            "Records in which the live engine differs from the backup at valid-through, at the "
            "last scheduled reconcile: kind extra (only in the engine), missing (only in the "
            "backup), changed", ["collection", "kind"], registry=r)
        self.last_reconcile_time = Gauge(
            "vecwal_last_reconcile_timestamp_seconds",
            "When the last scheduled reconcile finished", registry=r)
        self.repository_bytes = Gauge(
            "vecwal_repository_bytes", "Bytes the repository holds, by kind, at the last prune",
            ["kind"], registry=r)
        self.restorable_oldest = Gauge(
            "vecwal_restorable_oldest_timestamp_seconds",
            "Every instant from this time on is restorable (the last prune's window start)",
            registry=r)
        self.prune_last_success = Gauge(
            "vecwal_prune_last_success_timestamp_seconds", "When a prune last completed",
            registry=r)
        self.pruned_objects = Counter(
            "vecwal_pruned_objects", "Objects prune deleted", ["kind"], registry=r)
        self.pruned_bytes = Counter(
            "vecwal_pruned_bytes", "Bytes prune deleted", ["kind"], registry=r)
        self.prune_locked = Gauge(
            "vecwal_prune_locked_objects",
            "Objects the last prune could not delete: still under Object Lock retention",
            registry=r)
        self.job_last_success = Gauge(
            "vecwal_job_last_success_timestamp_seconds",
            "When the newest succeeded job of this kind ended (records under jobs/)", ["kind"],
            registry=r)
        self.job_last_failure = Gauge(
            "vecwal_job_last_failure_timestamp_seconds",
            "When the newest failed job of this kind ended (records under jobs/)", ["kind"],
            registry=r)
        self.job_duration = Histogram(
            "vecwal_job_duration_seconds",
            "Duration of the jobs that ended while this process ran (any process's, read from "
            "jobs/)", ["kind"],
            buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600), registry=r)
        self.repository_projected_bytes = Gauge(
            "vecwal_repository_projected_bytes",
            "The size the repository settles at under the retention policy, at the last prune "
            "(vecwal usage's projection); 0 until a prune with a window", registry=r)
        # The settings the alerts compare with (deploy/prometheus/alerts.yml): set_settings
        self.rpo_objective = Gauge(
            "vecwal_rpo_objective_seconds", "[metrics] rpo_objective_s: the RPO alerted above",
            registry=r)
        self.compaction_interval = Gauge(
            "vecwal_compaction_interval_seconds", "[compaction] interval_s (0: not scheduled)",
            registry=r)
        self.drill_interval = Gauge(
            "vecwal_drill_interval_seconds", "[drill] interval_s (0: not scheduled)", registry=r)
        self.retention_window = Gauge(
            "vecwal_retention_window_seconds", "[retention] window (0: keep everything)",
            registry=r)
        # process_start_time_seconds and the rest: an alert needs the daemon's uptime
        ProcessCollector(registry=r)

    def set_settings(self, config: Config) -> None:
        """Export the configured objectives and intervals (`vecwal run` calls this at start)."""
        from daemon.durations import parse_duration

        self.rpo_objective.set(config.metrics.rpo_objective_s)
        self.compaction_interval.set(config.compaction.interval_s)
        self.drill_interval.set(config.drill.interval_s)
        window = config.retention.window
        self.retention_window.set(parse_duration(window, "[retention] window") if window else 0)
