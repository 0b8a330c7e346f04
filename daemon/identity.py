"""The repository's identity: ``vecwal.json`` at its root, written once (create-only), plain
even in an encrypted repository, where it names the key scheme so that any vecwal opening the
repository knows how it is sealed before reading anything else.

    {"format": 1, "id": "<uuid>", "created_at_ms": ...,
     "encryption": {"scheme": "VWS1", "cipher": "AES-256-GCM", "keyring": "keys/"}}

``encryption`` is absent in a repository written in the clear. A repository is encrypted or
not from its creation on: opening one with the other setting is refused, naming the fix.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import orjson

from daemon.errors import ConfigError, ObjectExists, ObjectNotFound, VecwalError
from daemon.objectstore import ObjectStore

REPOSITORY_FILE = "vecwal.json"
REPOSITORY_FORMAT = 1
ENCRYPTION = {"scheme": "VWS1", "cipher": "AES-256-GCM", "keyring": "keys/"}


def read_identity(store: ObjectStore) -> dict[str, Any]:
    """The repository's identity; :class:`ObjectNotFound` when it is new."""
    ident = orjson.loads(store.get(REPOSITORY_FILE))
    if not isinstance(ident, dict) or ident.get("format") != REPOSITORY_FORMAT:
        found = ident.get("format") if isinstance(ident, dict) else None
        raise VecwalError(
            f"{store.url} holds a repository of format {found!r}; "
            f"this vecwal reads format {REPOSITORY_FORMAT}",
            "use the vecwal version that wrote it, or point storage.url elsewhere",
        )
    return ident


def ensure_identity(store: ObjectStore, *, encrypted: bool,
                    per_tenant_keys: bool | None = None) -> dict[str, Any]:
    """The identity, created first if the repository is new; refused when the repository's
    encryption differs from ``encrypted`` (or its per-tenant keys from ``per_tenant_keys``,
    unless None)."""
    try:
        ident = read_identity(store)
    except ObjectNotFound:
        new: dict[str, Any] = {"format": REPOSITORY_FORMAT, "id": str(uuid.uuid4()),
                               "created_at_ms": int(time.time() * 1000)}
        if encrypted:
            new["encryption"] = {**ENCRYPTION, "per_tenant_keys": bool(per_tenant_keys)}
        with contextlib.suppress(ObjectExists):  # another process initialized it first
            store.put(REPOSITORY_FILE, orjson.dumps(new), create_only=True)
        ident = read_identity(store)
    check_encryption(store.url, ident, encrypted=encrypted, per_tenant_keys=per_tenant_keys)
    return ident


def check_encryption(url: str, ident: dict[str, Any], *, encrypted: bool,
                     per_tenant_keys: bool | None = None) -> None:
    sealed = ident.get("encryption")
    if sealed and not encrypted:
        raise ConfigError(
            f"{url} is an encrypted repository ({sealed.get('scheme')}, "
            f"{sealed.get('cipher')}); this configuration reads it in the clear",
            "set [encryption] enabled = true and the kek that wrapped its keyring",
        )
    if encrypted and not sealed:
        raise ConfigError(
            f"{url} was created without encryption; vecwal does not encrypt an existing "
            "repository in place",
            "point storage.url at a new repository to start it encrypted (and keep this "
            "one until its retention ends), or remove [encryption] enabled",
        )
    if sealed and per_tenant_keys is not None and \
            bool(sealed.get("per_tenant_keys")) != per_tenant_keys:
        has = "has" if sealed.get("per_tenant_keys") else "has no"
        raise ConfigError(
            f"{url} {has} per-tenant keys; this configuration says per_tenant_keys = "
            f"{str(per_tenant_keys).lower()}",
            "per_tenant_keys is chosen when a repository is created: set it as the repository "
            "has it, or start a new repository (storage.url)")
