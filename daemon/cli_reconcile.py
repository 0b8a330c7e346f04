"""``vecwal reconcile`` and ``vecwal restore --preview``: argv and printing for
daemon/audit/reconcile.py. Like cli.py, the only place that prints.

Exit codes of ``reconcile``: 0 the engine holds exactly the backup's state at valid-through
(in the scope asked), 6 drift found (``DRIFT_EXIT``), 1 an error (the engine or repository
could not be read), 2 a configuration mistake, 4 the repository cannot give the state (as a
restore would refuse). ``restore --preview`` exits 0 whatever it finds: it is a question, not
a check."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.audit.reconcile import Reconciliation
from daemon.cli_restore import emit_json, load_cli_config
from daemon.config import Config
from daemon.errors import VecwalError

DRIFT_EXIT = 6
"""``reconcile`` found drift (verify's 3 is an integrity error of the repository itself)."""
PREVIEW_ENGINES = ("qdrant", "milvus", "pgvector", "chroma", "lancedb")
RECONCILE_LABELS = {"extra": "extra", "missing": "missing", "changed": "changed"}
PREVIEW_LABELS = {"extra": "removed", "missing": "added", "changed": "changed"}
"""What a restore does to each kind: an engine record the state lacks is removed, ..."""


def add_command(sub: Any, open_repository: Any) -> None:
    r = sub.add_parser("reconcile", help="compare a live vector database with the backup's "
                                         "state at valid-through; exit 6 on drift")
    r.add_argument("--config", required=True)
    r.add_argument("--engine", required=True,
                   help="qdrant:URL_OR_PATH, milvus:URI, pgvector:postgresql://..., "
                        "chroma:URL_OR_PATH or lancedb:PATH")
    r.add_argument("--collection", action="append", required=True,
                   help="collection to compare (repeatable)")
    r.add_argument("--tenant", action="append", help="only this tenant (repeatable)")
    r.add_argument("--rename", action="append", metavar="OLD:NEW",
                   help="the engine holds collection OLD under the name NEW (repeatable)")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.set_defaults(handler=lambda a: _cmd_reconcile(a, open_repository))


def open_store_of(config: Config) -> Any:
    """What the comparison opens tenant-sealed records with (None: no per-tenant keys)."""
    if not config.encryption.per_tenant_keys:
        return None
    from daemon.keys.opener import store_opener

    return store_opener(config)


def _cmd_reconcile(args: argparse.Namespace, open_repository: Any) -> int:
    from daemon.audit.reconcile import reconcile
    from daemon.restore.planner import Scope
    from daemon.restore.sinks.open import open_engine, parse_rename

    config = load_cli_config(args.config)
    repo = open_repository(config)
    rename = parse_rename(args.rename)
    scope = Scope(frozenset(args.collection), frozenset(args.tenant) if args.tenant else None)
    engine = open_engine(args.engine)
    try:
        result = reconcile(repo, config.kafka.topics, engine, scope, rename,
                           open_store=open_store_of(config), pause_gc=True)
    finally:
        engine.close()
    code = DRIFT_EXIT if result.drift else 0
    if args.json:
        emit_json({**result.to_dict(), "exit_code": code})
    else:
        print_comparison(result, RECONCILE_LABELS, "drift from the backup")
    return code


def preview(args: argparse.Namespace, config: Config, repo: Any, plan: Any,
            command: str = "restore") -> int:
    """``restore --preview`` (and ``rollback --preview``, ``command``): what the restore of
    ``plan`` would change in the engine of ``args.into``, written nowhere."""
    from daemon.audit.reconcile import against_plan
    from daemon.restore.sinks.open import open_engine, parse_rename

    kind = args.into.partition(":")[0]
    if kind not in PREVIEW_ENGINES:
        raise VecwalError(f"--preview compares with a vector database; {args.into!r} is not one",
                          "preview into qdrant: or milvus: (or pgvector:, chroma:, lancedb:); "
                          "for dir: and kafka: use --dry-run")
    engine = open_engine(args.into)
    try:
        result = against_plan(repo, plan, engine, parse_rename(getattr(args, "rename", None)),
                              open_store=open_store_of(config), pause_gc=True)
    finally:
        engine.close()
    if args.json:
        out = result.to_dict()
        out["labels"] = PREVIEW_LABELS
        emit_json(out)
    else:
        print_comparison(result, PREVIEW_LABELS, f"the {command} would change")
    return 0


def print_comparison(result: Reconciliation, labels: dict[str, str], what: str) -> None:
    from daemon.status import iso_ms

    print(f"{result.engine} against the backup at {result.plan.target.label} "
          f"({iso_ms(result.plan.until_ms) or '-'}): {what}: {result.drift:,} records")
    for name, c in sorted(result.collections.items()):
        counts = ", ".join(f"{labels[k]} {n:,}" for k, n in c.counts.items())
        print(f"  {name} (engine {c.target}): engine {c.engine_records:,}, backup "
              f"{c.state_records:,} records; {counts}")
        if c.counts["changed"]:
            print("    changed parts: " + ", ".join(f"{p} {n:,}" for p, n in c.parts.items()
                                                    if n))
        for tenant, per in sorted(c.tenants.items()):
            if any(per.values()):
                print(f"    tenant {tenant!r}: " + ", ".join(
                    f"{labels[k]} {n:,}" for k, n in per.items() if n))
        for kind, sample in c.samples.items():
            if sample:
                shown = ", ".join(f"{s['tenant']}/{s['id']}"
                                  + (f" ({'+'.join(s['parts'])})" if "parts" in s else "")
                                  for s in sample)
                more = c.counts[kind] - len(sample)
                print(f"    {labels[kind]}: {shown}" + (f" and {more:,} more" if more else ""))
        if c.unkeyed:
            print(f"    {c.unkeyed:,} points without a tenant or id field (counted "
                  f"{labels['extra']})")
