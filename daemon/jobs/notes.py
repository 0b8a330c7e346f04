"""What each kind of job writes into its record from its own result: the sizes read and
written and the kind's details. Shared by the commands and the schedulers of `vecwal run`, so
a compaction records the same fields however it ran."""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.jobs.run import JobRun

if TYPE_CHECKING:
    from daemon.audit.idfilter import IndexUpdate
    from daemon.drill import DrillRecord
    from daemon.lifecycle.prune import PruneResult
    from daemon.restore.executor import RestoreResult
    from daemon.snapshot.compactor import Compactor
    from daemon.snapshot.manifest import Manifest
    from daemon.verify import VerifyReport


def note_compaction(job: JobRun, compactor: Compactor, m: Manifest) -> None:
    events, size = compactor.log_read
    job.count(records_read=events, bytes_read=size, bytes_written=compactor.written,
              records_written=m.records)
    job.record.scope.setdefault("target_ms", m.cut_time_ms)
    job.record.scope["collections"] = sorted(m.collections)
    job.note(snapshot=m.id, parent=m.parent, cut_time_ms=m.cut_time_ms,
             snapshot_bytes=m.total_bytes)


def note_restore(job: JobRun, result: RestoreResult, snapshot: str | None) -> None:
    job.count(bytes_read=result.bytes_read, records_read=result.events_replayed,
              records_written=result.records)
    job.note(sink=result.sink, snapshot=snapshot, rto_seconds=round(result.seconds, 3),
             collections={c: w.records for c, w in result.collections.items()})


def note_verify(job: JobRun, report: VerifyReport) -> None:
    errors = sum(1 for f in report.findings if f.severity == "error")
    job.count(bytes_read=report.bytes_read,
              records_read=report.manifests + report.data_files + report.segments)
    job.note(deep=report.deep, manifests=report.manifests, data_files=report.data_files,
             segments=report.segments, errors=errors, warnings=len(report.findings) - errors)
    if not report.ok:
        first = next(f for f in report.findings if f.severity == "error")
        job.fail("IntegrityError", f"{errors} errors; first: {first.object}: {first.problem}",
                 first.hint)


def note_prune(job: JobRun, result: PruneResult) -> None:
    """What prune deleted counts as its records and bytes written."""
    deleted = result.deleted
    job.count(records_written=sum(n for n, _ in deleted.values()),
              bytes_written=sum(b for _, b in deleted.values()))
    job.note(deleted={k: {"objects": n, "bytes": b} for k, (n, b) in deleted.items() if n},
             locked=len(result.locked), failed=len(result.failed))
    if result.failed:
        key, error = result.failed[0]
        job.fail("StoreError", f"{len(result.failed)} objects not deleted; first: {key}: "
                 f"{error}")


def note_index(job: JobRun, updates: list[IndexUpdate]) -> None:
    job.count(records_read=sum(u.indexed_now for u in updates),
              records_written=sum(len(u.objects_written) for u in updates))
    job.note(partitions=len(updates), segments_indexed=sum(u.indexed_now for u in updates))


def note_drill(job: JobRun, rec: DrillRecord) -> None:
    job.scope(collections=job.record.scope.get("collections"), target=rec.target,
              target_ms=rec.until_ms)
    job.count(records_written=rec.records)
    job.note(drill=rec.id, into=rec.into, snapshot=rec.snapshot, rto_seconds=rec.rto_seconds,
             checks=rec.checks, cleaned_up=rec.cleaned_up)
    if rec.error is not None:
        job.fail("DrillError", rec.error)
    elif not rec.ok:
        names = ", ".join(c["name"] for c in rec.failed_checks[:5])
        job.fail("validation", f"{len(rec.failed_checks)} checks failed: {names}")
