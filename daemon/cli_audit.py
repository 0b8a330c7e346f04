"""The `history`, `diff`, `index` and `quarantine` commands. Like cli.py, the only place that prints.

Figures and rows go to stdout; a one-line summary of the work done goes to stderr, so that
``--format json`` and ``--format csv`` output loads as it is."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from daemon.changelog.repository import Repository
from daemon.cli_progress import progress_bars
from daemon.cli_restore import load_cli_config
from daemon.errors import VecwalError
from daemon.progress import Progress
from daemon.restore.target import RestoreTarget

if TYPE_CHECKING:
    from daemon.audit.diff import Diff
    from daemon.keys.sealing import TenantSealer
    from daemon.restore.planner import Scope

FORMATS = ("table", "json", "csv")


def add_commands(sub: Any, open_repository: Any) -> None:
    """Register the subcommands on cli.py's parser."""
    h = sub.add_parser("history", help="every event of one record, oldest first")
    h.add_argument("--config", required=True)
    h.add_argument("--collection", required=True)
    h.add_argument("--id", required=True, dest="record_id")
    h.add_argument("--tenant", default=None, help="only this tenant's record (default: every "
                   "tenant's record of that id; the default tenant is \"\")")
    h.add_argument("--since", default=None, help="RFC 3339 time or epoch ms (inclusive)")
    h.add_argument("--until", default=None, help="RFC 3339 time or epoch ms (inclusive)")
    h.add_argument("--format", choices=FORMATS, default="table")
    h.add_argument("--method", choices=("index", "sidecar", "scan"), default="index",
                   help="how segments are ruled out: id filter index (default), sidecars "
                        "only, or none (read every segment)")
    h.set_defaults(handler=lambda a: _cmd_history(a, open_repository))

    d = sub.add_parser("diff", help="records and catalog entries that differ between two "
                       "moments")
    d.add_argument("--config", required=True)
    d.add_argument("--from", required=True, dest="from_", metavar="FROM",
                   help="RFC 3339 time, epoch ms, or topic/partition=offset[,...]")
    d.add_argument("--to", required=True, help="RFC 3339 time, epoch ms, now, or offsets")
    d.add_argument("--collection", action="append", help="only this collection (repeatable)")
    d.add_argument("--tenant", action="append", help="only this tenant (repeatable)")
    d.add_argument("--format", choices=FORMATS, default="table")
    d.add_argument("--allow-incomplete", action="store_true",
                   help="accept moments past the valid-through time")
    d.add_argument("--method", choices=("auto", "buckets", "log"), default="auto",
                   help="compare the two states bucket by bucket, or along the log between "
                        "them where that applies (default: whichever reads less)")
    d.set_defaults(handler=lambda a: _cmd_diff(a, open_repository))

    ix = sub.add_parser("index", help="build the id filter index history uses (idempotent; "
                        "`vecwal run` does it after each compaction)")
    ix.add_argument("--config", required=True)
    ix.add_argument("--json", action="store_true")
    ix.set_defaults(handler=lambda a: _cmd_index(a, open_repository))

    q = sub.add_parser("quarantine", help="the rejected events kept under quarantine/, one "
                       "JSON line each, raw bytes in base64")
    q.add_argument("--config", required=True)
    q.add_argument("--topic", action="append", help="only this topic (repeatable)")
    q.add_argument("--partition", action="append", type=int,
                   help="only this partition (repeatable)")
    q.add_argument("--reason", action="append", help="only this reason (repeatable)")
    q.add_argument("--since", default=None, help="RFC 3339 time or epoch ms (inclusive)")
    q.add_argument("--until", default=None, help="RFC 3339 time or epoch ms (inclusive)")
    q.set_defaults(handler=lambda a: _cmd_quarantine(a, open_repository))


def _time(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    from daemon.restore.target import parse_target

    target = parse_target(text, int(time.time() * 1000))
    if target.time_ms is None:
        raise VecwalError(f"{flag} {text!r} is not a time", "give RFC 3339 or epoch ms")
    return target.time_ms


def _write(lines: Iterable[str]) -> None:
    out = sys.stdout
    for line in lines:
        out.write(line)
        out.write("\n")


def _cmd_history(args: argparse.Namespace, open_repository: Any) -> int:
    from daemon.audit.history import COLUMNS, HistoryQuery, history
    from daemon.audit.render import HISTORY_TABLE, csv_lines, json_lines, table_lines
    from daemon.sources import sources_for

    config = load_cli_config(args.config)
    repo: Repository = open_repository(config)
    query = HistoryQuery(args.collection, args.record_id, args.tenant,
                         _time(args.since, "--since"), _time(args.until, "--until"))
    began = time.monotonic()
    sealer = _tenant_sealer(config, repo)
    with progress_bars(args.format == "json") as shown:
        result = history(repo, config.kafka.topics, query, method=args.method,
                         sources=sources_for(config.kafka), sealer=sealer, progress=shown)
    seconds = time.monotonic() - began
    if args.format == "json":
        _write(json_lines(result.events, COLUMNS))
    elif args.format == "csv":
        _write(csv_lines(result.events, COLUMNS))
    elif result.events:
        _write(table_lines(result.events, HISTORY_TABLE))
    else:
        print(f"no event of {args.collection}/{args.record_id} in the retained log")
    s = result.stats
    print(f"{len(result.events)} events; opened {s.segments_opened} of {s.segments} segments "
          f"({s.bytes_opened / 1e6:.1f} MB), {s.index_objects} index objects, "
          f"{s.sidecars_read} sidecars, {s.quarantine_entries} quarantine entries in "
          f"{s.quarantine_objects} objects; "
          f"{seconds:.2f}s", file=sys.stderr)
    for gap in s.gaps:
        print(f"warning: the log lacks offsets {gap} (no segment covers them): events there "
              "are not shown; `vecwal list` shows every gap", file=sys.stderr)
    _warn_unreadable(s.unreadable_quarantine, "shown")
    return 0


def _tenant_sealer(config: Any, repo: Repository) -> TenantSealer | None:
    """The repository's per-tenant keys, when it has them."""
    if not config.encryption.per_tenant_keys:
        return None
    from daemon.keys.sealing import TenantSealer
    from daemon.keys.tenants import TenantKeys

    return TenantSealer(TenantKeys.of(repo.store))


def _warn_unreadable(keys: Iterable[str], done: str) -> None:
    for key in keys:
        print(f"warning: quarantine object {key} is unreadable: its rejected events are not "
              f"{done}; `vecwal verify --deep` names every damaged object", file=sys.stderr)


def _target(text: str, flag: str) -> RestoreTarget:
    from daemon.restore.target import parse_target

    target = parse_target(text, int(time.time() * 1000))
    if target.now and flag == "--from":
        raise VecwalError("--from now leaves nothing to compare", "give an earlier time")
    return target


def _cmd_diff(args: argparse.Namespace, open_repository: Any) -> int:
    from daemon.restore.planner import Scope

    config = load_cli_config(args.config)
    repo: Repository = open_repository(config)
    scope = Scope(frozenset(args.collection) if args.collection else None,
                  frozenset(args.tenant) if args.tenant else None)
    with progress_bars(args.format == "json") as shown:
        d = _diff(args, repo, config.kafka.topics, scope, shown)
    t = d.total
    rate = max(t.records_from, t.records_to) / d.seconds if d.seconds else 0.0
    print(f"diff: {t.added:,} added, {t.updated:,} updated, {t.deleted:,} deleted, "
          f"{t.unchanged:,} unchanged; compared by {d.method}, {t.buckets_skipped} of "
          f"{t.buckets} buckets skipped unread; {d.seconds:.2f}s ({rate:,.0f} records/s)",
          file=sys.stderr)
    return 0


def _diff(args: argparse.Namespace, repo: Repository, topics: list[str], scope: Scope,
          progress: Progress | None) -> Diff:
    """The diff, its rows printed as they are read (the bars run meanwhile)."""
    from daemon.audit.diff import COLUMNS, diff
    from daemon.audit.render import (
        DIFF_TABLE,
        csv_lines,
        diff_totals_lines,
        json_lines,
        table_lines,
    )

    d = diff(repo, topics, _target(args.from_, "--from"), _target(args.to, "--to"),
             scope, allow_incomplete=args.allow_incomplete, method=args.method,
             progress=progress)
    if args.format == "json":
        _write(json_lines(d.rows, COLUMNS))
        _write(json_lines(d.total_rows(), COLUMNS))
    elif args.format == "csv":
        _write(csv_lines(d.rows, COLUMNS))
        _write(list(csv_lines(d.total_rows(), COLUMNS))[1:])
    else:
        from daemon.status import iso_ms

        for label, side in (("from", d.old), ("to", d.new)):
            snap = side.plan.snapshot
            base = f"snapshot {snap.id if snap else '-'}"
            if label == "to" and d.method == "log":
                base = "the state at --from"
            print(f"{label:4s} {side.plan.target.label} (state at "
                  f"{iso_ms(side.plan.until_ms) or 'the given offsets'}: {base} + "
                  f"{side.folded.events:,} log events)")
        print()
        any_row = False
        for line in table_lines(d.rows, DIFF_TABLE):
            any_row = True
            print(line)
        if not any_row:
            print("(no difference)")
        _write(diff_totals_lines(d.total_rows()))
    return d


def _cmd_index(args: argparse.Namespace, open_repository: Any) -> int:
    from daemon.audit.idfilter import update_index
    from daemon.cli_jobs import job_run
    from daemon.jobs.notes import note_index

    config = load_cli_config(args.config)
    repo = open_repository(config)
    with job_run(args, repo, "index") as job:
        job.begin()
        updates = update_index(repo, config.kafka.topics)
        note_index(job, updates)
        job.exit_code(0)
    if args.json:
        import orjson

        sys.stdout.write(orjson.dumps([u.__dict__ for u in updates],
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    for u in updates:
        print(f"{u.topic}/{u.partition}: {u.segments} segments, {u.covered_before} indexed "
              f"before, {u.indexed_now} indexed now ({len(u.objects_written)} objects written)")
    if not updates:
        print("nothing to index: no partition has a watermark yet")
    return 0


def _cmd_quarantine(args: argparse.Namespace, open_repository: Any) -> int:
    import base64
    from collections import Counter

    import orjson

    from daemon.audit.rejected import QuarantineScan, rejected_events
    from daemon.status import iso_ms

    config = load_cli_config(args.config)
    repo: Repository = open_repository(config)
    lo, hi = _time(args.since, "--since"), _time(args.until, "--until")
    partitions = set(args.partition) if args.partition else None
    scan, reasons = QuarantineScan(), Counter[str]()
    sealer = _tenant_sealer(config, repo)
    out = sys.stdout
    for topic in args.topic or config.kafka.topics:
        for e in rejected_events(repo, topic, scan, partitions, sealer):
            if (args.reason and e.reason not in args.reason) or (lo is not None and
                    e.timestamp < lo) or (hi is not None and e.timestamp > hi):
                continue
            reasons[e.reason] += 1
            forgotten = e.sealed is not None  # its tenant's key is destroyed: no content
            out.write(orjson.dumps({
                "topic": e.topic, "partition": e.partition, "offset": e.offset,
                "timestamp_ms": e.timestamp, "time": iso_ms(e.timestamp), "reason": e.reason,
                "detail": None if forgotten else e.detail,
                "key_b64": None if e.key is None else base64.b64encode(e.key).decode(),
                "value_b64": None if e.value is None else base64.b64encode(e.value).decode(),
                "collection": e.collection, "tenant": e.tenant, "forgotten": forgotten,
            }).decode() + "\n")
    by_reason = ", ".join(f"{r} {n:,}" for r, n in sorted(reasons.items())) or "none"
    gone = sum(scan.forgotten.values())
    erased = "" if not gone else (
        f"; {gone:,} of forgotten tenants listed without their content ("
        + ", ".join(f"{c}/{t}" for c, t in sorted(scan.forgotten)) + ")")
    print(f"{sum(reasons.values()):,} rejected events ({by_reason}) from {scan.objects:,} "
          f"quarantine objects{erased}", file=sys.stderr)
    _warn_unreadable(scan.unreadable, "listed")
    return 0
