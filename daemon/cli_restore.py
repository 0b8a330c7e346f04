"""The `compact`, `restore` and `list` commands. Like cli.py, the only place that prints."""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import orjson

from daemon.changelog.repository import Repository
from daemon.cli_jobs import job_run, job_unless_dry_run
from daemon.cli_progress import progress_bars
from daemon.config import Config, load_config
from daemon.errors import ConfigError, VecwalError
from daemon.jobs.notes import note_compaction, note_restore
from daemon.jobs.run import JobRun
from daemon.restore.sinks import Sink
from daemon.status import iso_ms

if TYPE_CHECKING:
    from daemon.restore.executor import RestoreResult
    from daemon.restore.planner import RestorePlan
    from daemon.restore.validate import ValidationReport
    from daemon.restore.workers import Workers


def add_commands(sub: Any, open_repository: Any) -> None:
    """Register the subcommands on cli.py's parser."""
    c = sub.add_parser("compact", help="fold the log onto a new base snapshot")
    c.add_argument("--config", required=True)
    c.add_argument("--to", default=None,
                   help="cut time (RFC 3339 or epoch ms); default: the valid-through time")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=lambda a: _cmd_compact(a, open_repository))

    r = sub.add_parser("restore", help="restore to a point in time into a sink")
    r.add_argument("--config", required=True)
    r.add_argument("--to", required=True,
                   help="RFC 3339 time, epoch ms, now (the valid-through instant), latest "
                        "(every captured event), or topic/partition=offset[,...]")
    r.add_argument("--into", required=True,
                   help="dir:PATH, kafka:TOPIC, qdrant:URL_OR_PATH, milvus:URI, "
                        "chroma:http://HOST:PORT or chroma:PATH, "
                        "pgvector:postgresql://USER:PASSWORD@HOST:PORT/DB, or lancedb:PATH")
    r.add_argument("--collection", action="append", help="restore only this collection "
                   "(repeatable)")
    r.add_argument("--tenant", action="append", help="restore only this tenant (repeatable)")
    r.add_argument("--embedding-model", metavar="NAME[:VERSION]",
                   help="restore only records produced by this embedding model (version)")
    r.add_argument("--replace", action="store_true",
                   help="qdrant:/milvus: drop and recreate target collections that exist")
    r.add_argument("--rename", action="append", metavar="OLD:NEW",
                   help="qdrant:/milvus: restore collection OLD as NEW, beside the original "
                        "(repeatable; its aliases are not moved)")
    r.add_argument("--exclusive", action="store_true", help="leave out events at the target")
    r.add_argument("--allow-incomplete", action="store_true",
                   help="restore past the valid-through time")
    r.add_argument("--dry-run", action="store_true", help="print the plan, move no data")
    r.add_argument("--preview", action="store_true",
                   help="qdrant:/milvus:: compare the engine with the state to restore and "
                        "print what would be added, removed and changed; write nothing")
    r.add_argument("--no-validate", action="store_true")
    r.add_argument("--no-space-check", action="store_true",
                   help="dir:: write even when the file system has less free space than the "
                        "snapshot's size")
    r.add_argument("--workers", type=int, default=0,
                   help="processes writing buckets into a dir: sink (default: one per CPU "
                   "when the snapshot to read is large)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=lambda a: _cmd_restore(a, open_repository))

    ls = sub.add_parser("list", help="snapshots, segments per partition, restorable window")
    ls.add_argument("--config", required=True)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=lambda a: _cmd_list(a, open_repository))


def load_cli_config(path: str) -> Config:
    from daemon.logs import configure_logging

    config = load_config(path)
    configure_logging(config.log.level, config.log.format)  # logs to stderr, figures to stdout
    return config


def emit_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


def _cmd_compact(args: argparse.Namespace, open_repository: Any) -> int:
    config = load_cli_config(args.config)
    repo: Repository = open_repository(config)
    with job_run(args, repo, "compaction") as job:
        return job.exit_code(_compact(args, config, repo, job))


def _compact(args: argparse.Namespace, config: Config, repo: Repository, job: JobRun) -> int:
    from daemon.restore.target import parse_target
    from daemon.snapshot.compactor import Compactor

    cut = None
    if args.to is not None:
        target = parse_target(args.to, int(time.time() * 1000))
        if target.time_ms is None:
            raise VecwalError("compact --to takes a time", "give RFC 3339 or epoch ms")
        cut = target.time_ms
    job.scope(target=args.to, target_ms=cut)
    compactor = Compactor.from_config(repo, config)
    job.begin()
    with progress_bars(args.json) as shown:
        compactor.progress = shown
        m = compactor.compact(cut)
    note_compaction(job, compactor, m)
    counts = {c: s.records for c, s in m.collections.items()}
    summary: dict[str, Any] = {"snapshot": m.id, "parent": m.parent,
                               "cut_time": iso_ms(m.cut_time_ms), "records": m.records,
                               "bytes": m.total_bytes, "bytes_written": compactor.written,
                               "collections": counts, "cut": compactor.cut_report or None,
                               "left_out": m.rejected.get("count", 0),
                               "left_out_now": [asdict(r) for r in compactor.rejected[:100]]}
    if args.json:
        emit_json(summary)
    else:
        print(f"snapshot {m.id} at {summary['cut_time']}: {m.records:,} records, "
              f"{m.total_bytes / 1e6:.1f} MB, {compactor.written / 1e6:.1f} MB written "
              f"(parent {m.parent or '-'})")
        for c, n in counts.items():
            print(f"  {c:24s} {n:>12,}")
        report = compactor.cut_report
        if report:  # empty when the newest snapshot was already current
            why = (f"the valid-through time, the earliest is {', '.join(report['held_by'])}"
                   if report["held_by"] else "the time given with --to")
            print(f"  cut at {iso_ms(report['instant_ms'])}: {why}")
            if report["logged_after_total"]:
                where = ", ".join(f"{tp}: {n:,}" for tp, n in report["logged_after"].items())
                print(f"  {report['logged_after_total']:,} logged events are newer ({where}): "
                      "the next compaction takes them once capture proves them durable")
        if summary["left_out"]:
            print(f"  left out: {summary['left_out']:,} records whose dimension is not their "
                  f"collection's ({len(compactor.rejected):,} found now); `vecwal verify` "
                  "names them")
    return 0


def make_sink(spec: str, config: Config, **options: Any) -> Sink:
    from daemon.restore.sinks.open import open_sink

    return open_sink(spec, config, **options)


def _cmd_restore(args: argparse.Namespace, open_repository: Any) -> int:
    config = load_cli_config(args.config)
    repo: Repository = open_repository(config)
    return job_unless_dry_run(args, repo, "restore",
                              lambda job: _restore(args, config, repo, job))


def _restore(args: argparse.Namespace, config: Config, repo: Repository,
             job: JobRun | None) -> int:
    from daemon.restore.executor import execute
    from daemon.restore.planner import Scope, gather, make_plan
    from daemon.restore.sinks.open import parse_model, parse_rename
    from daemon.restore.target import parse_target
    from daemon.restore.validate import validate

    target = parse_target(args.to, int(time.time() * 1000), exclusive=args.exclusive)
    scope = Scope(frozenset(args.collection) if args.collection else None,
                  frozenset(args.tenant) if args.tenant else None,
                  parse_model(args.embedding_model), strict=True)
    if job is not None:
        job.scope(collections=args.collection, tenants=args.tenant, target=args.to,
                  target_ms=target.time_ms)
    workers = restore_workers(args.workers, config)
    if args.preview:
        from daemon.cli_reconcile import preview

        plan = make_plan(gather(repo, config.kafka.topics, target), target, scope,
                         allow_incomplete=args.allow_incomplete)
        return preview(args, config, repo, plan)
    bars = ExitStack()  # closed before the report is printed
    shown = bars.enter_context(progress_bars(args.json or args.dry_run))
    try:
        sink = make_sink(args.into, config, replace=args.replace,
                         rename=parse_rename(args.rename),
                         progress=None if shown is None else shown.loads(),
                         workers=workers.count, parallel_min_bytes=workers.min_bytes)
    except BaseException:
        bars.close()
        raise
    try:
        if job is not None:
            job.begin()
        plan = make_plan(gather(repo, config.kafka.topics, target), target, scope,
                         allow_incomplete=args.allow_incomplete)
        if args.dry_run:
            if args.json:
                emit_json(plan.to_dict())
            else:
                _print_plan(plan.to_dict())
            return 0
        check_room = getattr(sink, "check_room", None)
        if check_room is not None and not args.no_space_check:  # dir:, before any write
            check_room(plan.snapshot_bytes)
        result = execute(repo, plan, sink, workers, progress=shown)
        began = time.monotonic()
        report = None if args.no_validate else validate(result, sink)
        validation_s = time.monotonic() - began
    finally:
        bars.close()
        close = getattr(sink, "close", None)
        if close is not None:
            close()
    if job is not None:
        record_restore(job, result, plan, report)
    engine_s = getattr(sink, "load_seconds", None)
    notes: list[str] = list(getattr(sink, "notes", []))
    forgotten = _forgotten(repo, config, scope)
    notes += [f"tenant {e['tenant']!r} of {e['collection']!r} left out: forgotten "
              f"{iso_ms(e['at_ms'])} ({e['reason']})" for e in forgotten]
    restored_tenants = {t for w in result.collections.values() for t, n in w.tenants.items() if n}
    gone = {e["tenant"] for e in forgotten}
    notes += [f"tenant {t!r} restored no record: it has none in these collections at the target"
              for t in sorted(set(scope.tenants or ()) - restored_tenants - gone)]
    out = {
        "sink": result.sink, "target": plan.target.label, "until_ms": plan.until_ms,
        "snapshot": plan.snapshot.id if plan.snapshot else None,
        "rto_seconds": round(result.seconds, 3), "records": result.records,
        "records_per_s": round(result.records_per_s), "bytes_read": result.bytes_read,
        "events_replayed": result.events_replayed, "workers": result.extra.get("workers", 1),
        "collections": {c: {"records": w.records, "digest": w.digest, "tenants": w.tenants}
                        for c, w in result.collections.items()},
        "validation": None if report is None else report.to_dict(),
        "validation_seconds": None if report is None else round(validation_s, 3),
        "engine_load_seconds": None if engine_s is None else round(engine_s, 3),
        "notes": notes,
        "resolved": plan.resolution(result.logged_after),
        "left_out": len(result.rejected),
        "left_out_records": [asdict(r) for r in result.rejected[:100]],
        "forgotten": [{k: e[k] for k in ("collection", "tenant", "at_ms", "reason")}
                      for e in forgotten],
    }
    if args.json:
        emit_json(out)
    else:
        print(f"restored {result.records:,} records to {plan.target.label} into {result.sink}")
        _print_resolution(out["resolved"])
        print(f"  snapshot {out['snapshot'] or '-'}, {result.events_replayed:,} log events "
              f"replayed, {result.bytes_read / 1e6:.1f} MB read")
        print(f"  RTO {result.seconds:.2f}s, {result.records_per_s:,.0f} records/s"
              + ("" if engine_s is None else f" ({engine_s:.2f}s inside the engine's load)"))
        for note in notes:
            print(f"  note: {note}")
        for c, w in result.collections.items():
            print(f"  {c:24s} {w.records:>10,} records  tenants {w.tenants}")
        if result.rejected:
            print(f"  left out: {len(result.rejected):,} records whose dimension is not their "
                  "collection's (first: "
                  f"{', '.join(r.describe() for r in result.rejected[:3])})")
        if report is not None:
            print(f"validation: {'PASSED' if report.ok else 'FAILED'} in {validation_s:.2f}s")
            for chk in report.checks:
                print(f"  [{'ok' if chk.ok else 'FAIL'}] {chk.name}: {chk.detail}")
    return 0 if report is None or report.ok else 5


def restore_workers(count: int, config: Config) -> Workers:
    """``--workers N`` as given; by default (0) one per CPU, for large restores only."""
    from daemon.cli import store_opener
    from daemon.restore.workers import Workers

    if count < 0:
        raise ConfigError(f"--workers {count} is not a number of processes",
                          "give 1 or more, or 0 (the default: one per CPU for large restores)")
    return Workers(count, store_opener(config), min_bytes=0) if count > 0 \
        else Workers(os.cpu_count() or 1, store_opener(config))


def record_restore(job: JobRun, result: RestoreResult, plan: RestorePlan,
                   report: ValidationReport | None) -> None:
    """What a restore (or a rollback into a restore sink) writes into its job record."""
    note_restore(job, result, plan.snapshot.id if plan.snapshot else None)
    job.record.scope["target_ms"] = plan.until_ms
    if report is not None and not report.ok:
        failed = [c.name for c in report.checks if not c.ok]
        job.fail("validation", f"{len(failed)} checks failed: {', '.join(failed[:5])}")


def _forgotten(repo: Repository, config: Any, scope: Any) -> list[dict[str, Any]]:
    """The erased tenants (``vecwal forget``) this restore's scope left out."""
    if not config.encryption.per_tenant_keys:
        return []
    from daemon.restore.sinks.opening import forgotten_in_scope

    return forgotten_in_scope(repo.store, scope.collections, scope.tenants)


def _print_resolution(res: dict[str, Any]) -> None:
    """The instant a target resolved to, why, and how much of the log lies beyond it."""
    if res["rule"] not in ("now", "latest"):
        return
    instant = iso_ms(res["instant_ms"]) if res["instant_ms"] is not None else "-"
    print(f"  {res['rule']} = {instant}: {res['why']}")
    total = res.get("logged_after_total")
    if total:
        where = ", ".join(f"{tp}: {n:,}" for tp, n in res["logged_after"].items())
        print(f"  {total:,} logged events are newer ({where}): {res['why_after']}")


def _print_plan(plan: dict[str, Any]) -> None:
    snap = plan["snapshot"]
    print(f"restore plan to {plan['target']} (until {iso_ms(plan['target_time_ms']) or '-'})")
    _print_resolution(plan["resolved"])
    print(f"  snapshot   {snap['id'] + ' at ' + str(iso_ms(snap['cut_time_ms'])) if snap else '-'}")
    print(f"  bytes      {plan['bytes_to_read'] / 1e6:.1f} MB at most "
          f"(snapshot {plan['snapshot_bytes'] / 1e6:.1f}, log {plan['log_bytes_at_most'] / 1e6:.1f})")
    for seg in plan["segments"]:
        print(f"  log        {seg['topic']}/{seg['partition']} from offset {seg['from_offset']}: "
              f"{len(seg['objects'])} segments (durable to {seg['durable_end']})")
    for c, e in plan["expected_from_snapshot"].items():
        print(f"  expected   {c}: {e['records']:,} records in the snapshot, before the log")
    if plan["incomplete"]:
        print("  WARNING    the target is past the valid-through time: the result may lack events")


def _print_pin(p: dict[str, Any], of: str = "") -> None:
    until = f"until {p['until']}" if p["until"] else "for ever"
    state = "" if p["active"] else " (expired)"
    print(f"      pin {p['id']}{of}  {until}{state}  by {p['who']}: {p['reason']}")


def _cmd_list(args: argparse.Namespace, open_repository: Any) -> int:
    from daemon.inventory import collect_inventory

    config = load_cli_config(args.config)
    inv = collect_inventory(open_repository(config), config.kafka.topics)
    if args.json:
        emit_json(inv.to_dict())
        return 0
    print(f"repository  {inv.repository}")
    print(f"restorable  {inv.restorable_from or '-'}  ..  {inv.restorable_to or '-'}"
          + (f"  (every instant; pruned {inv.pruned_at})" if inv.pruned_at else ""))
    for point in inv.restore_points:
        print(f"  and at    {point['cut_time']}  ({', '.join(point['why'])})")
    print(f"\nsnapshots ({len(inv.snapshots)})")
    for s in inv.snapshots:
        pinned = sum(pin["active"] for pin in s.pins)
        print(f"  {s.id}  cut {s.cut_time}  {s.records:>12,} records  {s.bytes / 1e6:9.1f} MB"
              + (f"  PINNED ({pinned})" if pinned else ""))
        for pin in s.pins:
            _print_pin(pin)
    if inv.unknown_pins:
        print(f"\npins of snapshots not listed above ({len(inv.unknown_pins)})")
        for pin in inv.unknown_pins:
            _print_pin(pin, f" of {pin['snapshot']}")
    print(f"\nlog ({len(inv.partitions)} partitions)")
    for p in inv.partitions:
        gaps = f"  GAPS {p.gaps}" if p.gaps else ""
        print(f"  {p.topic}/{p.partition}  offsets {p.from_offset}..{p.to_offset}  "
              f"{p.segments} segments  {p.bytes / 1e6:.1f} MB{gaps}")
    return 0
