"""``vecwal jobs``: the job records under ``jobs/`` (daemon/jobs/), newest first, as a table
or as JSON; and ``job_run``, how every job command opens its record. Like cli.py, the only
place that prints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from daemon.changelog.repository import Repository
from daemon.jobs.record import KINDS, JobKey, JobRecord, list_job_keys, read_job
from daemon.jobs.run import JobRun

READ_THREADS = 8


def job_run(args: argparse.Namespace, repo: Repository, kind: str) -> JobRun:
    """The record of the command ``args`` runs on ``repo`` (its argv scrubbed)."""
    return JobRun(repo.store, kind, command=getattr(args, "argv", None))


def job_unless_dry_run(args: argparse.Namespace, repo: Repository, kind: str,
                       run: Callable[[JobRun | None], int]) -> int:
    """``run`` with the command's job record, or with None for ``--dry-run`` and
    ``--preview`` (a plan or a comparison, not a job: no record); the exit code."""
    if args.dry_run or getattr(args, "preview", False):
        return run(None)
    with job_run(args, repo, kind) as job:
        return job.exit_code(run(job))


def add_command(sub: Any, open_repository: Any) -> None:
    j = sub.add_parser("jobs", help="the records of compaction, prune, restore, rollback, "
                                    "drill, verify and index runs, newest first")
    j.add_argument("--config", required=True)
    j.add_argument("--kind", action="append", choices=KINDS, help="only this kind (repeatable)")
    j.add_argument("--since", default=None,
                   help="only jobs started at or after: RFC 3339 time or epoch ms")
    j.add_argument("--failed", action="store_true", help="only jobs that failed or were refused")
    j.add_argument("--limit", type=int, default=50,
                   help="the newest N that match (default 50; 0: all)")
    j.add_argument("--json", nargs="?", const="document", choices=("document", "lines"),
                   help="a JSON document (default), or one JSON line per job with "
                        "--json lines")
    j.set_defaults(handler=lambda a: _cmd_jobs(a, open_repository))


def select_jobs(repo: Repository, kinds: list[str] | None, since_ms: int | None,
                failed: bool, limit: int) -> list[JobRecord]:
    """The matching records, newest start first. Kind, time and result are read from the
    keys; only the records shown are fetched."""
    keys: list[JobKey] = [k for kind in (kinds or KINDS)
                          for k in list_job_keys(repo.store, kind, since_ms)
                          if not failed or k.result != "succeeded"]
    keys.sort(key=lambda k: k.id, reverse=True)
    if limit > 0:
        keys = keys[:limit]
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="vecwal-jobs-read") as pool:
        return list(pool.map(lambda k: read_job(repo.store, k.key), keys))


def _cmd_jobs(args: argparse.Namespace, open_repository: Any) -> int:
    from daemon.cli_audit import _time
    from daemon.cli_restore import emit_json, load_cli_config

    config = load_cli_config(args.config)
    repo: Repository = open_repository(config)
    records = select_jobs(repo, args.kind, _time(args.since, "--since"), args.failed,
                          args.limit)
    if args.json == "lines":
        for rec in records:
            sys.stdout.write(orjson.dumps(rec.to_dict()).decode() + "\n")
    elif args.json:
        emit_json({"repository": repo.store.url, "jobs": [r.to_dict() for r in records]})
    else:
        print_jobs(records)
    return 0


def job_summary(rec: JobRecord | dict[str, Any]) -> list[str]:
    """A record as the table's cells: start, kind, result, duration, scope, sizes, error."""
    d = rec.to_dict() if isinstance(rec, JobRecord) else rec
    scope = d.get("scope") or {}
    parts = []
    if scope.get("collections"):
        parts.append("collections " + ",".join(scope["collections"]))
    if scope.get("tenants"):
        parts.append("tenants " + ",".join(scope["tenants"]))
    if scope.get("target"):
        parts.append(f"to {scope['target']}")
    sizes = []
    for what, unit in (("records", "rec"), ("bytes", "B")):
        r, w = d.get(f"{what}_read"), d.get(f"{what}_written")
        if r is not None or w is not None:
            sizes.append(f"{_n(r)}/{_n(w)} {unit}")
    error = f"{d['error_kind']}: {d['error_message']}" if d.get("error_kind") else ""
    return [d["started_at"], d["kind"], d["result"].upper() if d["result"] != "succeeded"
            else "ok", f"{d['duration_seconds']:.1f}s", " ".join(parts) or "-",
            " ".join(sizes) or "-", error[:100]]


def _n(v: int | None) -> str:
    if v is None:
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= size:
            return f"{v / size:.1f}{unit}"
    return str(v)


HEADERS = ["started", "kind", "result", "took", "scope", "read/written", "error"]


def print_jobs(records: list[JobRecord] | list[dict[str, Any]], indent: str = "") -> None:
    if not records:
        print(f"{indent}(no job recorded)")
        return
    rows = [job_summary(r) for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(HEADERS)]
    print(indent + "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip())
    for row in rows:
        print(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
