"""The `rollback` command: undo only the bad events (daemon/rollback/). Like cli.py, the only
place that prints."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from daemon.changelog.repository import Repository
from daemon.cli_jobs import job_unless_dry_run
from daemon.cli_progress import progress_bars
from daemon.cli_restore import (
    emit_json,
    load_cli_config,
    make_sink,
    record_restore,
    restore_workers,
)
from daemon.config import Config
from daemon.errors import VecwalError
from daemon.jobs.run import JobRun

if TYPE_CHECKING:
    from daemon.keys.sealing import TenantSealer
    from daemon.restore.planner import RestorePlan, Scope
    from daemon.restore.target import RestoreTarget
    from daemon.rollback.corrections import Corrections
    from daemon.rollback.filters import ExcludeFilter

ROLLBACK_HEADER = "vecwal-rollback"

DESCRIPTION = """\
Undo only the bad events: the state every record would have if the excluded events had never
been written and every other event had. A record created only by excluded events does not
exist; one updated by an excluded event keeps its previous version, or its later good one.
Excluded catalog events (collection, tenant, alias puts and drops) are not applied either.

An event is excluded when it matches EVERY criterion given (AND); at least one is needed.
--exclude may precede them for readability; it changes nothing.

Into kafka:TOPIC only the corrective events are written (an upsert of the right version or a
delete, per record whose state changes, keyed as the ingestion stream keyed it, each with the
header vecwal-rollback: <job id>). Into any other sink (dir:, qdrant:, milvus:, ...) the full
rolled-back state is restored and validated as a restore is. --dry-run prints what would
change per collection and tenant and writes nothing."""


def add_commands(sub: Any, open_repository: Any) -> None:
    r = sub.add_parser("rollback", help="undo only the bad events (excluded by a filter)",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--config", required=True)
    g = r.add_argument_group("exclude: an event is excluded when it matches EVERY criterion "
                             "given (AND)")
    g.add_argument("--exclude", action="store_true",
                   help="optional marker before the criteria (reads: --exclude --header b=42)")
    g.add_argument("--between", nargs=2, metavar=("T1", "T2"),
                   help="event time (change-log timestamp) from T1 to T2, both included; "
                        "RFC 3339 or epoch ms, as restore --to")
    g.add_argument("--header", action="append", metavar="NAME=VALUE",
                   help="a Kafka header of the ingested message (repeatable: all must match)")
    g.add_argument("--embedding-model", metavar="NAME[:VERSION]",
                   help="records produced by this embedding model (any version without one)")
    g.add_argument("--source-prefix", metavar="URI", help="records whose source uri starts so")
    g.add_argument("--offsets", action="append", metavar="TOPIC/PARTITION=FROM-TO",
                   help="change-log offsets, both ends included (repeatable: any range)")
    g.add_argument("--event-ids", metavar="FILE", help="a file of event ids, one a line")
    r.add_argument("--collection", action="append", help="only this collection (repeatable)")
    r.add_argument("--tenant", action="append", help="only this tenant (repeatable)")
    r.add_argument("--to", default="now",
                   help="the state rolled back is the one at this time (as restore --to; "
                        "default now, the valid-through instant)")
    r.add_argument("--into", help="kafka:TOPIC (corrective events only) or a restore sink "
                                  "(the full rolled-back state); not needed with --dry-run")
    r.add_argument("--dry-run", action="store_true",
                   help="print what would change, write nothing")
    r.add_argument("--preview", action="store_true",
                   help="compare the engine of --into (qdrant:, milvus:, ...) with the "
                        "rolled-back state: added, removed, changed per collection and "
                        "tenant; write nothing")
    r.add_argument("--allow-incomplete", action="store_true",
                   help="roll back to a --to past the valid-through time")
    r.add_argument("--no-validate", action="store_true")
    r.add_argument("--workers", type=int, default=0,
                   help="processes for a dir: sink, as restore --workers")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=lambda a: _cmd_rollback(a, open_repository))


class NoSink(VecwalError):
    exit_code = 2  # bad usage, as argparse's


def _cmd_rollback(args: argparse.Namespace, open_repository: Any) -> int:
    if not args.dry_run and not args.into:
        raise NoSink("rollback needs --into SINK (with --preview too), or --dry-run",
                          "kafka:TOPIC for corrective events, or dir:/qdrant:/milvus:... for "
                          "the full rolled-back state")
    config = load_cli_config(args.config)
    repo: Repository = open_repository(config)
    return job_unless_dry_run(args, repo, "rollback",
                              lambda job: _rollback(args, config, repo, job))


def _plan(args: argparse.Namespace, config: Config, repo: Repository) -> Any:
    """The filter, the base and the restore plan over it (excluded events skipped)."""
    from daemon.restore.planner import Scope
    from daemon.restore.target import parse_target
    from daemon.rollback.filters import BadFilter, ExcludeFilter

    now = int(time.time() * 1000)

    def time_ms(text: str) -> int:
        t = parse_target(text, now)
        if t.time_ms is None:
            raise BadFilter(f"--between {text!r} is not a time",
                            "give RFC 3339 or epoch ms, as restore --to takes")
        return t.time_ms

    if args.source_prefix and config.encryption.per_tenant_keys:
        raise BadFilter("--source-prefix cannot match: with per-tenant keys a record's source "
                        "is sealed in the change log",
                        "name the batch by --header, --between, --offsets, --embedding-model "
                        "or --event-ids instead")
    filt = ExcludeFilter.parse(between=args.between, headers=args.header,
                               embedding_model=args.embedding_model,
                               source_prefix=args.source_prefix, offsets=args.offsets,
                               event_ids=args.event_ids, time_ms=time_ms)
    target = parse_target(args.to, now)
    scope = Scope(frozenset(args.collection) if args.collection else None,
                  frozenset(args.tenant) if args.tenant else None)
    return filt, rollback_plan(repo, config.kafka.topics, filt, target, scope,
                               args.allow_incomplete)


def rollback_plan(repo: Repository, topics: list[str], filt: ExcludeFilter,
                  target: RestoreTarget, scope: Scope, allow_incomplete: bool = False
                  ) -> RestorePlan:
    """The restore plan of a rollback: from its base (``rollback.base``), the excluded
    events skipped where the log is folded."""
    from daemon.restore.planner import PlanInputs, make_plan
    from daemon.rollback.base import find_base

    base = find_base(repo, topics, filt, target.time_ms, target.offsets)
    plan = make_plan(PlanInputs(base.snapshot, base.watermarks, base.windows, base.retention),
                     target, scope, allow_incomplete=allow_incomplete)
    return replace(plan, skip=filt)


def _rollback(args: argparse.Namespace, config: Config, repo: Repository,
              job: JobRun | None) -> int:
    from daemon.rollback.corrections import resolve
    from daemon.rollback.fold import fold_rollback
    from daemon.snapshot.compactor import stop_offset

    filt, plan = _plan(args, config, repo)
    if args.preview:  # the full rolled-back state compared with the engine, written nowhere
        from daemon.cli_reconcile import preview

        return preview(args, config, repo, plan, command="rollback")
    if job is not None:
        job.scope(collections=args.collection, tenants=args.tenant, target=args.to,
                  target_ms=plan.until_ms)
        job.begin()
    colls = set(args.collection) if args.collection else None
    tenants = set(args.tenant) if args.tenant else None
    began = time.monotonic()
    with progress_bars(args.json or args.dry_run) as shown:
        fold = fold_rollback(repo, plan.snapshot, plan.windows, plan.until_ms,
                             [stop_offset(w, plan.target.offsets) for w in plan.windows],
                             filt, colls, tenants, progress=shown)
        corrections = resolve(repo.store, plan.snapshot, fold, colls, tenants)
    corrections.report.exclude = filt.describe()
    seconds = time.monotonic() - began
    out: dict[str, Any] = {"report": corrections.report.to_dict(), "until_ms": plan.until_ms,
                           "seconds": round(seconds, 3)}
    code = 0
    if not args.dry_run:
        if job is not None:
            job.count(records_read=fold.events, bytes_read=fold.bytes_read)
            job.note(affected=corrections.report.total("affected"),
                     changed=corrections.report.changed,
                     base_snapshot=corrections.report.base, exclude=filt.describe())
        if args.into.startswith("kafka:"):
            out["emitted"] = _emit(args, config, repo, corrections, job)
        else:
            out["restore"], code = _restore(args, config, repo, plan, job)
    if args.json:
        emit_json(out)
    else:
        for line in corrections.report.lines():
            print(line)
        if "emitted" in out:
            e = out["emitted"]
            print(f"emitted {e['records']:,} corrective record events and {e['catalog']} "
                  f"catalog events into {args.into} (header {ROLLBACK_HEADER}: {e['id']})")
        if "restore" in out:
            r = out["restore"]
            print(f"restored {r['records']:,} records of the rolled-back state into "
                  f"{r['sink']} in {r['seconds']:.2f}s")
            if r["validation"] is not None:
                print(f"validation: {'PASSED' if r['validation']['ok'] else 'FAILED'}")
                for chk in r["validation"]["checks"]:
                    print(f"  [{'ok' if chk['ok'] else 'FAIL'}] {chk['name']}: {chk['detail']}")
    return code


def _emit(args: argparse.Namespace, config: Config, repo: Repository, corrections: Corrections,
          job: JobRun | None) -> dict[str, Any]:
    """The corrective events into the topic (the order is ``rollback.corrections``'s)."""
    from daemon.restore.sinks.kafka import KafkaSink

    topic = args.into.partition(":")[2]
    sink = KafkaSink(config.kafka.bootstrap_servers, topic, fmt=config.kafka.format_of(topic),
                     client=config.kafka.client, header=ROLLBACK_HEADER,
                     run_id=job.record.id if job is not None else None)
    sealer = None
    if config.encryption.per_tenant_keys:
        from daemon.keys.sealing import TenantSealer
        from daemon.keys.tenants import TenantKeys

        sealer = TenantSealer(TenantKeys.of(repo.store))
    forgotten: dict[tuple[str, str], int] = {}
    sink.begin()
    catalog = sink.write_events(catalog_events_of(corrections, sink.fmt), acknowledged=True)
    records = sink.write_events(record_events_of(corrections, sink.fmt, sealer, forgotten))
    sink.finish()
    if job is not None:
        job.count(records_written=records)
        job.note(sink=args.into)
    return {"records": records, "catalog": catalog, "id": sink.restore_id,
            "forgotten_left_out": sum(forgotten.values())}


def catalog_events_of(corrections: Corrections, fmt: str) -> list[tuple[bytes, dict[str, Any]]]:
    """The catalog corrections as (message key, change event): keyed by collection, as a
    restore into Kafka keys them."""
    from daemon.restore.sinks.kafka import control_event

    return [(ev["collection"].encode(), control_event(ev, fmt)) for ev in corrections.catalog]


def record_events_of(corrections: Corrections, fmt: str, sealer: TenantSealer | None = None,
                     forgotten: dict[tuple[str, str], int] | None = None
                     ) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """The record corrections as (message key, change event): an upsert of the rolled-back
    version or a delete, keyed as the stream keyed the record (by id when it had no key).
    With per-tenant keys (``sealer``) each upsert is opened first; a forgotten tenant's
    upserts are left out (counted in ``forgotten``): erased content is never re-emitted."""
    from daemon.keys.tenants import TenantForgotten
    from daemon.restore.sinks.kafka import delete_event, upsert_event

    for c in corrections.records:
        key = c.key if c.key is not None else c.id.encode()
        if c.row is None:
            yield key, delete_event(c.collection, c.tenant, c.id)
            continue
        rec = c.row.record()
        if sealer is not None:
            try:
                rec = sealer.open(dict(rec))
            except TenantForgotten:
                if forgotten is not None:
                    pair = (c.collection, c.tenant)
                    forgotten[pair] = forgotten.get(pair, 0) + 1
                continue
        yield key, upsert_event(rec, fmt)


def _restore(args: argparse.Namespace, config: Config, repo: Repository, plan: RestorePlan,
             job: JobRun | None) -> tuple[dict[str, Any], int]:
    """The full rolled-back state into a restore sink: the restore executor over the base,
    the excluded events skipped where the log is folded (``RestorePlan.skip``)."""
    from daemon.restore.executor import execute
    from daemon.restore.validate import validate

    workers = restore_workers(args.workers, config)
    bars = ExitStack()
    shown = bars.enter_context(progress_bars(args.json))
    try:
        sink = make_sink(args.into, config, progress=None if shown is None else shown.loads(),
                         workers=workers.count, parallel_min_bytes=workers.min_bytes)
        try:
            result = execute(repo, plan, sink, workers, progress=shown)
            report = None if args.no_validate else validate(result, sink)
        finally:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
    finally:
        bars.close()
    if job is not None:
        record_restore(job, result, plan, report)
    return ({"sink": result.sink, "records": result.records,
             "seconds": round(result.seconds, 3),
             "collections": {c: {"records": w.records, "digest": w.digest, "tenants": w.tenants}
                             for c, w in result.collections.items()},
             "validation": None if report is None else report.to_dict()},
            0 if report is None or report.ok else 5)
