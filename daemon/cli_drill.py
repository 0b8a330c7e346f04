"""The `drill` command. Like cli.py, the only place that prints."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from daemon.changelog.repository import Repository
from daemon.errors import VecwalError
from daemon.status import iso_ms


def add_command(sub: Any, open_repository: Any) -> None:
    d = sub.add_parser("drill", help="restore into a scratch target, validate, measure RTO, "
                                     "clean up, record the result under drills/")
    d.add_argument("--config", required=True)
    d.add_argument("--to", default=None, help="restore target (default: [drill] to, or now)")
    d.add_argument("--into", default=None,
                   help="scratch sink: qdrant::memory:, qdrant:PATH_OR_URL, milvus:PATH.db "
                        "or URI, pgvector:postgresql://USER:PASSWORD@HOST:PORT/DB, "
                        "chroma:http://HOST:PORT or chroma:PATH, dir:PATH "
                        "or lancedb:PATH (default: [drill] into)")
    d.add_argument("--collection", action="append", help="drill only this collection")
    d.add_argument("--json", action="store_true")
    d.set_defaults(handler=lambda a: _cmd_drill(a, open_repository))


def _cmd_drill(args: argparse.Namespace, open_repository: Any) -> int:
    from daemon.cli_jobs import job_run
    from daemon.cli_progress import progress_bars
    from daemon.cli_restore import load_cli_config
    from daemon.drill import record_drill, run_drill
    from daemon.jobs.notes import note_drill
    from daemon.restore.planner import Scope
    from daemon.restore.sinks.open import open_sink

    config = load_cli_config(args.config)
    repo: Repository = open_repository(config)
    into = args.into or config.drill.into
    to = args.to or config.drill.to
    cols = args.collection or config.drill.collections
    scope = Scope(frozenset(cols) if cols else None, strict=True)

    with job_run(args, repo, "drill") as job, progress_bars(args.json) as shown:
        def factory(spec: str, cfg: Any, **options: Any) -> Any:
            return open_sink(spec, cfg, progress=None if shown is None else shown.loads(),
                             **options)

        job.scope(collections=cols or None, target=to)
        job.begin()
        rec = run_drill(config, repo, into, to=to, scope=scope, open_sink=factory,
                        progress=shown)
        key = record_drill(repo, rec)
        note_drill(job, rec)
        job.exit_code(1 if rec.error is not None else 0 if rec.ok else 5)
    if args.json:
        sys.stdout.write(orjson.dumps({**rec.to_dict(), "recorded_as": key},
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_drill(rec.to_dict())
        print(f"  recorded as {key}")
    if rec.error is not None:
        raise VecwalError(f"drill {rec.id} could not restore: {rec.error}",
                          "the result is recorded; fix the cause and run the drill again")
    return 0 if rec.ok else 5


def print_drill(d: dict[str, Any], indent: str = "") -> None:
    state = "PASSED" if d["ok"] else "FAILED"
    print(f"{indent}drill {d['id']} {state} at {iso_ms(d['finished_at_ms'])} into {d['into']}")
    print(f"{indent}  target {d['target']} (until {iso_ms(d['until_ms']) or '-'}), snapshot "
          f"{d['snapshot'] or '-'}, {d['records']:,} records")
    load = d.get("engine_load_seconds")
    print(f"{indent}  RTO {d['rto_seconds']:.2f}s (restore {d['restore_seconds']:.2f}s"
          + ("" if load is None else f", of which {load:.2f}s in the engine's load")
          + f", validation {d['validation_seconds']:.2f}s), {d['checks']} checks, "
          f"cleaned up: {'yes' if d['cleaned_up'] else 'NO'}")
    if d.get("error"):
        print(f"{indent}  error: {d['error']}")
    for c in d["failed_checks"]:
        print(f"{indent}  [FAIL] {c['name']}: {c['detail']}")
