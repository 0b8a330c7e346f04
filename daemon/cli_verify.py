"""``vecwal verify``: argv and printing for daemon/verify.py. The report goes to stdout (text,
or JSON with ``--json``); progress of a deep check is a bar on stderr (``cli_progress``). Exit 0
when nothing a restore needs is wrong, 3 (integrity error) otherwise."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli_jobs import job_run
from daemon.cli_progress import progress_bars
from daemon.cli_restore import emit_json, load_cli_config
from daemon.jobs.notes import note_verify


def add_command(sub: Any, open_repository: Any) -> None:
    v = sub.add_parser("verify", help="check that every snapshot and the log can be restored")
    v.add_argument("--config", required=True)
    v.add_argument("--deep", action="store_true",
                   help="re-read every object: sha256, Avro framing, every record's hash")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(handler=lambda a: _cmd_verify(a, open_repository))


def _cmd_verify(args: argparse.Namespace, open_repository: Any) -> int:
    from daemon.verify import verify

    config = load_cli_config(args.config)
    repo = open_repository(config)
    with job_run(args, repo, "verify") as job:
        job.note(deep=args.deep)
        job.begin()
        with progress_bars(args.json or not args.deep) as shown:
            report = verify(repo, config.kafka.topics, deep=args.deep, progress=shown)
        note_verify(job, report)
        job.exit_code(0 if report.ok else 3)
    if args.json:
        emit_json(report.to_dict())
        return 0 if report.ok else 3
    mode = "deep" if report.deep else "quick"
    print(f"repository  {report.repository}  ({mode} check)")
    print(f"checked     {report.manifests} manifests, {report.data_files} data files, "
          f"{report.segments} segments, {report.quarantine_objects} quarantine objects"
          + (f", {report.bytes_read / 1e6:,.1f} MB read" if report.deep else ""))
    print(f"restorable  {report.restorable_from or '-'}  ..  {report.restorable_to or '-'}")
    if report.permissions is not None:
        p = report.permissions
        print(f"permissions {'private' if p.ok else 'OPEN to other users'} (file_mode "
              f"{p.file_mode}; {p.readable_count:,} paths others can read, "
              f"{p.writable_count:,} they can write)")
        for kind, paths, count in (("writable", p.writable, p.writable_count),
                                   ("readable", p.readable, p.readable_count)):
            for e in paths:
                print(f"  {kind}  {e.mode} {e.owner:10s} {e.path}")
            if count > len(paths):
                print(f"  {kind}  ... and {count - len(paths):,} more")
    for f in report.findings:
        print(f"\n{f.severity.upper():8s}{f.object}\n        {f.problem}\n        hint: {f.hint}")
    errors = sum(1 for f in report.findings if f.severity == "error")
    print(f"\n{'OK' if report.ok else 'DAMAGED'}: {errors} errors, "
          f"{len(report.findings) - errors} warnings")
    return 0 if report.ok else 3
