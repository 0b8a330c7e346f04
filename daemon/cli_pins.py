"""CLI commands for pins (legal holds): ``pin``, ``unpin`` and ``pins``. Like cli.py, the only
place that prints."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from typing import Any

from daemon.changelog.repository import Repository
from daemon.config import Config
from daemon.restore.target import BadTarget, parse_target
from daemon.status import iso_ms

OpenRepository = Callable[[Config], Repository]

_DURATION = re.compile(r"^\s*(\d+(\.\d+)?[smhdw])+\s*$")
_DATE = re.compile(r"^\s*\d{4}-\d{2}-\d{2}\s*$")


def add_commands(sub: Any, open_repository: OpenRepository) -> None:
    """Registers ``pin``, ``unpin`` and ``pins``."""
    p = sub.add_parser(
        "pin", help="keep a snapshot whatever retention says (a legal hold)",
        description="Pin a snapshot: prune never deletes it while the pin holds. --at pins an "
                    "instant, compacting to exactly it first when no snapshot has that cut. "
                    "Exit 2: a wrong request; 4: the instant cannot be rebuilt.")
    p.add_argument("--config", required=True)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--snapshot", metavar="ID", help="a snapshot id (`vecwal list`)")
    which.add_argument("--at", metavar="TIME",
                       help="RFC 3339 time, epoch ms, or now (the valid-through instant)")
    p.add_argument("--reason", required=True, help="why (recorded with the pin)")
    p.add_argument("--until", metavar="DATE",
                   help="the hold ends then: RFC 3339 time, epoch ms, a date (2027-06-01: "
                        "its start, UTC) or a duration from now (90d, 2w); default: for ever")
    p.add_argument("--who", help="who asks (default: the OS user @ host)")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                   help="wait this long for a running compaction or prune (default 60)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=lambda a: _cmd_pin(a, open_repository))

    u = sub.add_parser("unpin", help="remove a pin (by pin id, or every pin of a snapshot)")
    u.add_argument("--config", required=True)
    u.add_argument("pin", metavar="PIN_OR_SNAPSHOT")
    u.add_argument("--json", action="store_true")
    u.set_defaults(handler=lambda a: _cmd_unpin(a, open_repository))

    ls = sub.add_parser("pins", help="every pin: its snapshot, reason, who, until")
    ls.add_argument("--config", required=True)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=lambda a: _cmd_pins(a, open_repository))


def parse_time(option: str, text: str, now_ms: int) -> int | None:
    """Epoch ms of an RFC 3339 time or epoch ms; None for ``now``. BadTarget naming
    ``option`` otherwise."""
    try:
        target = parse_target(text, now_ms)
    except BadTarget as exc:
        raise BadTarget(exc.message.replace("--to", option, 1),
                        "use RFC 3339 (2026-11-25T14:05:00Z) or epoch milliseconds") from None
    if target.now:
        return None
    if target.time_ms is None:
        raise BadTarget(f"{option} takes a time, not {text!r}",
                        "use RFC 3339 (2026-11-25T14:05:00Z) or epoch milliseconds")
    return target.time_ms


def parse_until(text: str, now_ms: int) -> int:
    """``--until``: a time as ``parse_time`` takes it, a date (its first instant, UTC), or a
    duration from now."""
    if _DURATION.match(text):
        from daemon.durations import parse_duration

        return now_ms + int(parse_duration(text, "--until") * 1000)
    if _DATE.match(text):
        text = f"{text.strip()}T00:00:00Z"
    at = parse_time("--until", text, now_ms)
    return now_ms if at is None else at


def _cmd_pin(args: argparse.Namespace, open_repository: OpenRepository) -> int:
    from daemon.cli_restore import emit_json, load_cli_config
    from daemon.lifecycle.pins import add_pin, check_request, pin_at
    from daemon.snapshot.compactor import Compactor, read_manifest

    now = int(time.time() * 1000)
    until = None if args.until is None else parse_until(args.until, now)
    check_request(args.reason, until, now)  # before any I/O
    at = parse_time("--at", args.at, now) if args.at is not None else None
    config = load_cli_config(args.config)
    repo = open_repository(config)
    if args.snapshot is not None:
        pin = add_pin(repo, args.snapshot.strip(), args.reason, until, args.who,
                      lease_ttl_s=config.compaction.lease_ttl_s, wait_s=args.wait)
        manifest, made = read_manifest(repo, pin.snapshot), False
    else:
        label = "now" if at is None else args.at
        pin, manifest, made = pin_at(Compactor.from_config(repo, config), at, label,
                                     args.reason, until, args.who, wait_s=args.wait)
    out = {"pin": pin.to_dict(now), "created_snapshot": made,
           "snapshot": {"id": manifest.id, "cut_time": iso_ms(manifest.cut_time_ms),
                        "cut_time_ms": manifest.cut_time_ms, "records": manifest.records,
                        "parent": manifest.parent}}
    if args.json:
        emit_json(out)
        return 0
    print(f"pinned snapshot {manifest.id} (cut {iso_ms(manifest.cut_time_ms)}, "
          f"{manifest.records:,} records) as {pin.id}")
    if made:
        print(f"  snapshot made now: compacted to exactly {iso_ms(manifest.cut_time_ms)} "
              f"(parent {manifest.parent or '-'})")
    print(f"  reason  {pin.reason}")
    print(f"  who     {pin.who}")
    print(f"  until   {iso_ms(pin.until_ms) or 'for ever (until unpinned)'}")
    return 0


def _cmd_unpin(args: argparse.Namespace, open_repository: OpenRepository) -> int:
    from daemon.cli_restore import emit_json, load_cli_config
    from daemon.lifecycle.pins import remove_pin

    config = load_cli_config(args.config)
    removed = remove_pin(open_repository(config), args.pin)
    now = int(time.time() * 1000)
    if args.json:
        emit_json({"removed": [p.to_dict(now) for p in removed]})
        return 0
    for p in removed:
        print(f"removed pin {p.id} of snapshot {p.snapshot} ({p.reason}; by {p.who})")
    return 0


def _cmd_pins(args: argparse.Namespace, open_repository: OpenRepository) -> int:
    from daemon.cli_restore import emit_json, load_cli_config
    from daemon.lifecycle.pins import list_pins
    from daemon.snapshot.compactor import list_manifests

    config = load_cli_config(args.config)
    repo = open_repository(config)
    now = int(time.time() * 1000)
    snapshots = set(list_manifests(repo))
    pins = []
    for p in list_pins(repo):
        d = p.to_dict(now)
        head = p.snapshot.split("-")[0]
        d["snapshot_cut_time_ms"] = int(head) if head.isdigit() else None
        d["snapshot_cut_time"] = iso_ms(d["snapshot_cut_time_ms"])
        d["snapshot_exists"] = p.snapshot in snapshots
        pins.append(d)
    if args.json:
        emit_json({"repository": repo.store.url, "pins": pins})
        return 0
    if not pins:
        print("no pins (`vecwal pin --snapshot ID --reason TEXT` adds one)")
        return 0
    headers = ["pin", "snapshot", "cut", "until", "state", "who", "reason"]
    rows = [[d["id"], d["snapshot"], d["snapshot_cut_time"] or "-", d["until"] or "for ever",
             ("active" if d["active"] else "expired")
             + ("" if d["snapshot_exists"] else ", snapshot missing"),
             d["who"], d["reason"]] for d in pins]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
