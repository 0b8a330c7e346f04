"""``vecwal usage``: what the repository holds and what it will hold, for people (a table) or
tools (``--json``). argv, the reads and printing only; the figures are
daemon/lifecycle/usage.py."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from typing import Any

from daemon.changelog.repository import Repository
from daemon.changelog.watermark import Watermark
from daemon.cli_restore import emit_json, load_cli_config
from daemon.config import Config, RetentionConfig
from daemon.lifecycle.listing import Listing

OpenRepository = Callable[[Config], Repository]


def add_command(sub: Any, open_repository: OpenRepository) -> None:
    p = sub.add_parser("usage", help="bytes by kind, collection and topic, growth per day, and "
                                     "the size the repository settles at under [retention]")
    p.add_argument("--config", required=True, help="TOML config file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=lambda a: _cmd_usage(a, open_repository))


def read_watermarks(repo: Repository, listing: Listing, topics: Iterable[str]) -> list[Watermark]:
    """The watermarks of ``topics`` and of every topic the listing has a segment or cut of."""
    every = set(topics) | {t for t, _ in listing.segments}
    every |= {t for s in listing.snapshots.values() for t in s.cut}
    return [w for t in sorted(every) for w in repo.list_watermarks(t)]


def _cmd_usage(args: argparse.Namespace, open_repository: OpenRepository) -> int:
    from daemon.lifecycle.listing import gather_listing
    from daemon.lifecycle.policy import Policy
    from daemon.lifecycle.usage import usage_of

    config = load_cli_config(args.config)
    repo = open_repository(config)
    now = int(time.time() * 1000)
    listing = gather_listing(repo, now)
    usage = usage_of(listing, Policy.from_config(config.retention, config.jobs.keep_days), now,
                     read_watermarks(repo, listing, config.kafka.topics))
    out = usage.to_dict()
    if args.json:
        emit_json(out)
    else:
        print_usage(out, repo.store.url, config.retention)
    return 0


def print_usage(out: dict[str, Any], url: str, r: RetentionConfig) -> None:
    from daemon.cli_lifecycle import human_bytes as hb

    def row(name: str, t: dict[str, int], extra: str = "") -> None:
        print(f"  {name:18s}{t['objects']:>10,}{hb(t['bytes']):>13s}{extra}")

    print(f"USAGE  {url}  at {out['now']}")
    print(f"  {'kind':18s}{'objects':>10s}{'bytes':>13s}")
    for kind, t in out["kinds"].items():
        if t["objects"]:
            row(kind, t)
    row("total", out["total"])
    if out["collections"] or out["rejected_lists"]["objects"]:
        print(f"\n  {'collection':18s}{'objects':>10s}{'bytes':>13s}{'newest snapshot':>18s}")
        for name, c in out["collections"].items():
            row(name, c, f"{hb(c['newest_snapshot_bytes']):>18s}")
        if out["rejected_lists"]["objects"]:
            row("(rejected lists)", out["rejected_lists"])
    if out["log_topics"]:
        print(f"\n  {'log topic':18s}{'segments':>13s}{'sidecars':>13s}{'index':>13s}"
              f"{'total':>13s}")
        for topic, t in out["log_topics"].items():
            print(f"  {topic:18s}" + "".join(f"{hb(t[k]['bytes']):>13s}"
                                             for k in ("segments", "sidecars", "index")) +
                  f"{hb(t['bytes']):>13s}")
    _print_growth(out["growth"], out["snapshots"])
    _print_projection(out, r)
    for note in out["notes"]:
        print(f"note  {note}")


def _per_day(value: int | None) -> str:
    from daemon.cli_lifecycle import human_bytes

    return "unknown" if value is None else f"{human_bytes(value)}/day"


def _print_growth(g: dict[str, Any], snapshots: int) -> None:
    from daemon.cli_lifecycle import human_bytes as hb

    print(f"\ngrowth per UTC day  (log: an estimate from {g['log_points']} points, the cuts of "
          f"{snapshots} snapshots and the watermarks, interpolated by offset)")
    print(f"  {'day':18s}{'log':>13s}{'snapshot data':>16s}")
    for d in g["days"]:
        print(f"  {d['day']:18s}{hb(d['log_bytes']):>13s}{hb(d['data_bytes']):>16s}")
    print(f"  {'rate':18s}{_per_day(g['log_bytes_per_day']):>13s}"
          f"{_per_day(g['data_bytes_per_day']):>16s}")
    if g["log_unplaced_bytes"]:
        print(f"  {hb(g['log_unplaced_bytes'])} of log lie below each partition's oldest point: "
              "when they came is not known")


def _print_projection(out: dict[str, Any], r: RetentionConfig) -> None:
    from daemon.cli_lifecycle import human_bytes as hb

    p = out["projection"]
    g = out["growth"]
    if p.get("unbounded"):
        print(f"\nprojection  none: {p['note']}, by about {_per_day(p['growth_bytes_per_day'])} "
              f"(log {_per_day(g['log_bytes_per_day'])}, snapshot data "
              f"{_per_day(g['data_bytes_per_day'])}); set [retention] window to bound it")
        return
    t = p["terms"]
    print(f"\nprojection  steady state under window {r.window}, grace {r.grace}, keep daily "
          f"{r.keep_daily} weekly {r.keep_weekly} monthly {r.keep_monthly} yearly "
          f"{r.keep_yearly}")
    print(f"  log             {_per_day(g['log_bytes_per_day'])} x ({p['window_days']:.4g} + "
          f"{p['grace_days']:.4g}) days = {hb(t['log'])}")
    print(f"  kept snapshots  files the prune plan keeps = {hb(t['kept_data'])}")
    print(f"  new snapshots   {_per_day(g['data_bytes_per_day'])} x ({p['window_days']:.4g} days "
          f"+ {p['gfs_points']} GFS points) = {hb(t['new_data'])}")
    print(f"  other           manifests, quarantine, records, protected, unknown = "
          f"{hb(t['other'])}")
    print(f"  = about {hb(p['bytes'])}   (now {hb(out['total']['bytes'])}; a prune now frees "
          f"{hb(out['reclaimable']['bytes'])})")
    print("  assumes:")
    for a in p["assumptions"]:
        print(f"    - {a}")
