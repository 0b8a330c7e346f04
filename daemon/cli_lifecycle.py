"""CLI commands of the repository's lifecycle: ``prune`` (a dry run unless ``--confirm``).
argv and printing only; the work is daemon/lifecycle/."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from daemon.changelog.repository import Repository
from daemon.cli_progress import progress_bars
from daemon.cli_restore import emit_json, load_cli_config
from daemon.config import Config

OpenRepository = Callable[[Config], Repository]


def add_commands(sub: Any, open_repository: OpenRepository) -> None:
    p = sub.add_parser("prune", help="delete what the retention policy no longer needs "
                                     "(prints the plan only, unless --confirm)")
    p.add_argument("--config", required=True, help="TOML config file")
    p.add_argument("--confirm", action="store_true", help="delete (without it: the plan only)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--keys", action="store_true", help="list every key that goes (with --json)")
    p.set_defaults(handler=lambda a: _cmd_prune(a, open_repository))
    from daemon.cli_usage import add_command as add_usage_command

    add_usage_command(sub, open_repository)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def _cmd_prune(args: argparse.Namespace, open_repository: OpenRepository) -> int:
    from daemon.config_checks import lock_seconds
    from daemon.lifecycle.policy import Policy
    from daemon.lifecycle.prune import PruneResult, prune

    config = load_cli_config(args.config)
    policy = Policy.from_config(config.retention, config.jobs.keep_days)
    repo = open_repository(config)

    def run() -> PruneResult:
        with progress_bars(args.json) as shown:
            return prune(repo, policy, confirm=args.confirm,
                         lease_ttl_s=config.compaction.lease_ttl_s, progress=shown,
                         lock_ms=int(lock_seconds(config) * 1000) or None)

    if not args.confirm:  # a dry run plans: not a job, no record
        result = run()
    else:
        from daemon.cli_jobs import job_run
        from daemon.jobs.notes import note_prune

        with job_run(args, repo, "prune") as job:
            job.begin()  # the lease is taken inside: a held one is still a refusal
            result = run()
            note_prune(job, result)
            job.exit_code(1 if result.failed else 0)
    out = result.to_dict(keys=args.keys)
    if args.json:
        emit_json(out)
        return 1 if result.failed else 0
    _print_prune(out, config)
    return 1 if result.failed else 0


def _window_text(w: dict[str, Any]) -> str:
    start = w["from"] or "the start of the log"
    text = f"every instant from {start}"
    if w["points"]:
        text += f", plus {len(w['points'])} restore points: " + ", ".join(
            f"{p['cut_time']} ({', '.join(p['why'])})" for p in w["points"])
    return text


def _print_prune(out: dict[str, Any], config: Config) -> None:
    r = config.retention
    policy = (f"window {r.window or 'none (keep everything)'}, grace {r.grace}, keep daily "
              f"{r.keep_daily} weekly {r.keep_weekly} monthly {r.keep_monthly} yearly "
              f"{r.keep_yearly}")
    print(("PRUNED" if out["executed"] else "PLAN (dry run: nothing deleted; --confirm acts)") +
          f"  at {out['now']}")
    print(f"policy      {policy}")
    print(f"{'kind':12s}{'objects':>10s}{'bytes':>14s}")
    for kind, c in out["delete"].items():
        if c["objects"]:
            print(f"{kind:12s}{c['objects']:>10,}{human_bytes(c['bytes']):>14s}")
    total = out["delete_total"]
    what = ("repository" if out["repository_bytes_include_kept_log"] else
            "repository without the log it keeps (`vecwal usage` counts all)")
    print(f"{'total':12s}{total['objects']:>10,}{human_bytes(total['bytes']):>14s}  "
          f"({what} {human_bytes(out['repository_bytes'])} -> "
          f"{human_bytes(out['repository_bytes_after'])})")
    for kind, c in out["waiting_for_grace"].items():
        print(f"waiting     {c['objects']:,} {kind} objects ({human_bytes(c['bytes'])}) are "
              f"unreferenced and go after grace {r.grace}")
    print(f"restorable before  {_window_text(out['restorable_before'])}")
    print(f"restorable after   {_window_text(out['restorable_after'])}")
    if out.get("locked"):
        until = max((x["retain_until_ms"] or 0) for x in out["locked"])
        print(f"locked      {len(out['locked']):,} objects are still under Object Lock "
              f"retention (the last until {_iso(until)}): the next prune after that deletes them")
    for f in out.get("failed", []):
        print(f"FAILED      {f['key']}: {f['error']}")
    for note in out["notes"]:
        print(f"note        {note}")


def _iso(ms: int) -> str:
    from daemon.status import iso_ms

    return iso_ms(ms) or "-"
