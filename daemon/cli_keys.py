"""CLI commands for encryption keys: ``keys generate``, ``keys list`` and ``keys rotate``.
Like cli.py, the only place that prints."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

import orjson

from daemon.atomic import create_exclusive
from daemon.config import Config, EncryptionConfig, load_config
from daemon.errors import ConfigError


def add_commands(sub: Any) -> None:
    """Registers ``keys`` and its subcommands."""
    k = sub.add_parser("keys", help="encryption keys: generate a key file, list, rotate the KEK",
                       description="The repository's keys ([encryption]): its keyring under "
                                   "keys/, each key wrapped by the key-encryption key (KEK).")
    ks = k.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)

    g = ks.add_parser("generate", help="write a new random 256-bit key file (mode 0600)")
    g.add_argument("--out", required=True, type=Path, help="the key file to create (never "
                                                           "overwritten)")
    g.set_defaults(handler=_cmd_generate)

    ls = ks.add_parser("list", help="the repository keys and the KEKs wrapping them")
    ls.add_argument("--config", required=True)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_cmd_list)

    r = ks.add_parser("rotate", help="switch to a new KEK: a new repository key for new "
                                     "objects, every key re-wrapped, no data re-encrypted",
                      description="Run with the current kek in the config and the new one as "
                                  "--new-kek; then put the new kek in the config and restart "
                                  "every vecwal process. Rerun it if it was interrupted.")
    r.add_argument("--config", required=True)
    r.add_argument("--new-kek", required=True, metavar="SPEC",
                   help="keyfile:/path, env:VAR or aws-kms:KEY_ID_OR_ARN")
    r.add_argument("--json", action="store_true")
    r.set_defaults(handler=_cmd_rotate)


def _cmd_generate(args: argparse.Namespace) -> int:
    path: Path = args.out
    if not create_exclusive(path, os.urandom(32).hex().encode() + b"\n"):
        raise ConfigError(f"{path} already exists; a key file is never overwritten",
                          "choose another --out path (an overwritten KEK loses the repository)")
    print(f"wrote a new 256-bit key to {path} (mode 0600)")
    print(f'use it with [encryption] enabled = true, kek = "keyfile:{path.resolve()}"; keep a '
          "copy apart from the repository: without it nothing in it can be read")
    return 0


def _encrypted(config: Config) -> None:
    if not config.encryption.enabled:
        raise ConfigError(f"{config.source}: [encryption] is not enabled",
                          "set [encryption] enabled = true and kek")


def _keyring(config: Config, *also: Any) -> Any:
    from daemon.cli import store_opener
    from daemon.keys import open_kek
    from daemon.keys.keyring import Keyring

    _encrypted(config)
    e = config.encryption
    raw = store_opener(dataclasses.replace(config, encryption=EncryptionConfig()))()
    kek = open_kek(e.kek, kms_endpoint_url=e.kms_endpoint_url, kms_region=e.kms_region)
    return Keyring.open(raw, kek, create=False, also=also)


def _cmd_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ring = _keyring(config)
    current = ring.current()[0]
    rows = [{"id": r.id, "created_at_ms": r.created_at_ms, "current": r.id == current,
             "wrapped_by": [kek for kek, _ in r.wrappings]}
            for r in sorted(ring.records.values(), key=lambda r: (r.created_at_ms, r.id))]
    if args.json:
        print(orjson.dumps({"repository": ring.repository_id, "kek": ring.kek.name,
                            "keys": rows}).decode())
        return 0
    print(f"repository {ring.repository_id}, key-encryption key {ring.kek.name}")
    for row in rows:
        mark = " (current)" if row["current"] else ""
        print(f"  {row['id']}  created {_iso(row['created_at_ms'])}  wrapped by "
              f"{', '.join(row['wrapped_by'])}{mark}")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    from daemon.keys import open_kek
    from daemon.keys.keyring import rotate

    config = load_config(args.config)
    _encrypted(config)
    e = config.encryption
    new_kek = open_kek(args.new_kek, kms_endpoint_url=e.kms_endpoint_url, kms_region=e.kms_region)
    ring = _keyring(config, new_kek)
    if new_kek.name == ring.kek.name:
        raise ConfigError(f"--new-kek is the configured kek ({new_kek.name})",
                          "generate a new key (`vecwal keys generate`) or name another KMS key")
    from daemon.keys.tenants import TenantKeys

    old_kek = ring.kek
    report = rotate(ring, new_kek)
    # then the tenant keys (per_tenant_keys), in the same order: each gains the new wrapping,
    # then loses the old; running it again (with the old kek configured) finishes it
    tenants = TenantKeys(ring.store, old_kek, ring.repository_id).rewrap(new_kek)
    if args.json:
        print(orjson.dumps({"new_key": report.new_key, "rewrapped": report.rewrapped,
                            "tenant_keys_rewrapped": len(tenants),
                            "old_kek": report.old_kek, "new_kek": report.new_kek}).decode())
        return 0
    print(f"rotated {ring.store.url}: {len(report.rewrapped)} keys re-wrapped from "
          f"{report.old_kek} to {report.new_kek}; new objects use key {report.new_key}"
          + (f"; {len(tenants)} tenant keys re-wrapped" if tenants else ""))
    print(f"next: set [encryption] kek = {args.new_kek!r} in {config.source} and restart every "
          "vecwal process of this repository (they still hold the old keyring)")
    return 0


def _iso(ms: int) -> str:
    from daemon.status import iso_ms

    return iso_ms(ms) or str(ms)


def add_forget_command(sub: Any) -> None:
    f = sub.add_parser(
        "forget", help="erase a tenant's content from every backup (destroys its keys)",
        description="Crypto-shredding ([encryption] per_tenant_keys): destroy every key of the "
                    "tenant, in each collection or only --collection. Afterwards no restore, "
                    "drill, history or export yields its content, from objects of any age, "
                    "under Object Lock or not; other tenants are unaffected. Irreversible. "
                    "Stop ingesting the tenant first: a running capture notices within "
                    "30 s, and what it sealed meanwhile is erased too.")
    f.add_argument("--config", required=True)
    f.add_argument("--tenant", required=True)
    f.add_argument("--collection", help="only in this collection (default: every collection)")
    f.add_argument("--reason", required=True, help="why (recorded with the erasure)")
    f.add_argument("--who", help="who asks (default: the OS user @ host)")
    f.add_argument("--yes", action="store_true", help="confirm: this cannot be undone")
    f.add_argument("--json", action="store_true")
    f.set_defaults(handler=_cmd_forget)


def _cmd_forget(args: argparse.Namespace) -> int:
    from daemon.cli import store_opener
    from daemon.keys.tenants import TenantKeys

    config = load_config(args.config)
    if not config.encryption.per_tenant_keys:
        raise ConfigError(f"{config.source}: [encryption] per_tenant_keys is not set: tenants "
                          "have no keys of their own to destroy",
                          "per-tenant keys are chosen when a repository is created")
    if not args.reason.strip():
        raise ConfigError("--reason is empty", "say why, for the record (a ticket, a request)")
    keys = TenantKeys.of(store_opener(config)())
    known = keys.tenants()
    targets = sorted({c for c, t, _ in known if t == args.tenant
                      and (args.collection is None or c == args.collection)})
    if not targets:
        names = sorted({f"{t} ({c})" for c, t, _ in known})[:20]
        raise ConfigError(f"tenant {args.tenant!r} has no keys"
                          + (f" in {args.collection!r}" if args.collection else ""),
                          "check the name; tenants with keys: " + (", ".join(names) or "none"))
    if not args.yes:
        raise ConfigError(f"forgetting {args.tenant!r} in {', '.join(targets)} cannot be undone",
                          "add --yes to confirm")
    done = [keys.forget(c, args.tenant, args.reason, args.who or "") for c in targets]
    if args.json:
        print(orjson.dumps([e.__dict__ for e in done]).decode())
        return 0
    for e in done:
        print(f"forgot tenant {e.tenant!r} of {e.collection!r}: {e.keys_destroyed} keys "
              f"destroyed at {_iso(e.at_ms)} by {e.who} ({e.reason})")
    return 0
