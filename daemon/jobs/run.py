"""``JobRun``: how a job records itself. A context manager around the job::

    with JobRun(repo.store, "restore", command=argv) as job:
        ...check the arguments, take what the job needs (a lease)...
        job.begin()          # from here on an error is a failure, not a refusal
        ...the work...
        job.count(bytes_read=..., records_written=...)

On exit it writes one record (``record.JobRecord``), create-only, whatever happened:

- no exception: ``succeeded``, unless the job said otherwise (``job.fail``: a validation that
  did not pass, a prune that could not delete everything);
- a ``VecwalError`` before ``begin()``, or ``LeaseHeld`` anywhere: ``refused``;
- any other exception (``KeyboardInterrupt`` included): ``failed``, with the error's class and
  message (URL passwords masked). The exception is never swallowed.

Writing the record is best effort: a store that refuses it costs a warning in the log, never
the job's own result or exit code. ``record_refused=False`` (the schedulers) records nothing
for a refused turn: a lease held by another daemon of the group is not a job run here.
``on_end`` is called with the record once written (the metrics of `vecwal run`)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import structlog

from daemon import __version__
from daemon.errors import VecwalError
from daemon.jobs.record import KINDS, JobRecord
from daemon.jobs.scrub import scrub_argv, scrub_text
from daemon.objectstore import ObjectStore

log = structlog.get_logger("vecwal.jobs")


def _iso(ms: int) -> str:
    from daemon.status import iso_ms

    return iso_ms(ms) or ""


class JobRun:
    def __init__(self, store: ObjectStore | None, kind: str, *,
                 command: Sequence[str] | None = None, trigger: str = "cli",
                 record_refused: bool = True,
                 on_end: Callable[[JobRecord], None] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        self.store, self.on_end, self.record_refused = store, on_end, record_refused
        started = int(time.time() * 1000)
        self._began = time.monotonic()
        self.working = False
        self.record = JobRecord(
            id=f"{started:013d}-{uuid.uuid4().hex[:8]}", kind=kind, started_at=_iso(started),
            started_at_ms=started, trigger=trigger, host=socket.gethostname(), pid=os.getpid(),
            vecwal_version=__version__,
            command=["vecwal", *scrub_argv(command)] if command is not None else [])
        self.written: str | None = None
        """The record's key once written."""

    def __enter__(self) -> JobRun:
        return self

    def begin(self) -> None:
        """The job's arguments are checked and what it needs is taken: its work begins."""
        self.working = True

    def scope(self, *, collections: Sequence[str] | None = None,
              tenants: Sequence[str] | None = None, target: str | None = None,
              target_ms: int | None = None) -> None:
        self.record.scope = {"collections": None if collections is None else sorted(collections),
                             "tenants": None if tenants is None else sorted(tenants),
                             "target": target, "target_ms": target_ms}

    def count(self, *, bytes_read: int | None = None, bytes_written: int | None = None,
              records_read: int | None = None, records_written: int | None = None) -> None:
        r = self.record
        if bytes_read is not None:
            r.bytes_read = bytes_read
        if bytes_written is not None:
            r.bytes_written = bytes_written
        if records_read is not None:
            r.records_read = records_read
        if records_written is not None:
            r.records_written = records_written

    def note(self, **details: Any) -> None:
        self.record.details.update(details)

    def fail(self, kind: str, message: str, hint: str = "") -> None:
        """The job ran to its end but did not succeed (a check failed)."""
        r = self.record
        r.result, r.error_kind, r.error_message = "failed", kind, scrub_text(message)
        r.error_hint = hint or None

    def exit_code(self, code: int) -> int:
        """Note the command's exit code and return it."""
        self.record.exit_code = code
        return code

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        from daemon.snapshot.lease import LeaseHeld

        r = self.record
        if exc is not None:
            refused = isinstance(exc, VecwalError) and (
                not self.working or isinstance(exc, LeaseHeld))
            r.result = "refused" if refused else "failed"
            r.error_kind = type(exc).__name__
            message = exc.message if isinstance(exc, VecwalError) else str(exc) or repr(exc)
            r.error_message = scrub_text(message)
            r.error_hint = scrub_text(exc.hint) if isinstance(exc, VecwalError) and exc.hint \
                else None
            if r.exit_code is None:
                r.exit_code = exc.exit_code if isinstance(exc, VecwalError) else \
                    130 if isinstance(exc, KeyboardInterrupt) else 1
            if r.result == "refused" and not self.record_refused:
                return
        ended = int(time.time() * 1000)
        r.ended_at_ms, r.ended_at = ended, _iso(ended)
        r.duration_seconds = round(time.monotonic() - self._began, 3)
        self.written = write_job(self.store, r)
        if self.written is not None and self.on_end is not None:
            try:
                self.on_end(r)
            except Exception as err:  # the metrics must not change the job's result
                log.warning("job metrics not updated", job=r.id, error=repr(err))


def write_job(store: ObjectStore | None, rec: JobRecord) -> str | None:
    """Put the record create-only; its key, or None (logged) when the store refused it."""
    if store is None:
        return None
    try:
        store.put(rec.key, rec.to_json(), create_only=True)
    except Exception as exc:  # never the job's result: a record lost is a warning
        log.warning("job record not written", job=rec.id, kind=rec.kind, result=rec.result,
                    error=repr(exc))
        return None
    return rec.key
