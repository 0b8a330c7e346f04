"""`vecwal keys rotate` re-wraps the tenant keys too (``TenantKeys.rewrap``): afterwards the
new KEK alone opens every tenant's content and the old one none; a second run changes
nothing; a key left with both wrappings by an interrupted run is finished."""

from __future__ import annotations

import base64
import os
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.errors import EncryptionKeyError
from daemon.keys import open_kek
from daemon.keys.opener import open_encrypted
from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import TENANT_KEYS, TenantKeys, _decode


def key_file(path: Path) -> str:
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)
    return f"keyfile:{path}"


def record(tenant: str) -> dict[str, Any]:
    return {"op": "upsert", "collection": "docs", "tenant": tenant, "id": "a1",
            "vector": b"\x01" * 16, "document": f"secret of {tenant}", "acl": ["g"]}


def repository(tmp_path: Path) -> tuple[Any, TenantKeys, str]:
    from daemon.objectstore import open_store

    old = key_file(tmp_path / "old.key")
    store = open_encrypted(partial(open_store, f"file://{tmp_path / 'repo'}"), old,
                           per_tenant_keys=True)
    return store, TenantKeys.of(store), old


def kek_names(store: Any) -> list[list[str]]:
    return [[w["kek"] for w in orjson.loads(store.get(i.key))["wrappings"]]
            for i in store.list(TENANT_KEYS)]


def test_rotation_rewraps_every_tenant_key(tmp_path: Path) -> None:
    store, keys, old = repository(tmp_path)
    sealed = {t: TenantSealer(keys).seal(record(t)) for t in ("acme", "globex")}
    new_kek = open_kek(key_file(tmp_path / "new.key"))
    ids = sorted(i.key.rsplit("/", 1)[1][:-5] for i in store.list(TENANT_KEYS))

    assert sorted(keys.rewrap(new_kek)) == ids and len(ids) == 2
    assert kek_names(store) == [[new_kek.name]] * 2
    after = TenantSealer(TenantKeys(store, new_kek, keys.repository_id))
    for tenant, rec in sealed.items():
        assert after.open(dict(rec))["document"] == f"secret of {tenant}"
    with pytest.raises(EncryptionKeyError, match="vecwal keys rotate"):
        TenantSealer(TenantKeys(store, open_kek(old), keys.repository_id)).open(
            dict(sealed["acme"]))
    assert sorted(keys.rewrap(new_kek)) == ids  # again: nothing left to change
    assert kek_names(store) == [[new_kek.name]] * 2


def test_an_interrupted_rotation_is_finished(tmp_path: Path) -> None:
    store, keys, _old = repository(tmp_path)
    rec = TenantSealer(keys).seal(record("acme"))
    new_kek = open_kek(key_file(tmp_path / "new.key"))
    (info,) = store.list(TENANT_KEYS)
    digest = info.key.split("/")[2]
    body = orjson.loads(store.get(info.key))  # as a run leaves it after its first pass
    plain = keys._unwrap(digest, _decode(info.key, store.get(info.key)))
    context = {"vecwal:repository": keys.repository_id, "vecwal:tenant": digest,
               "vecwal:key": body["id"]}
    body["wrappings"].append({"kek": new_kek.name,
                              "wrapped": base64.b64encode(new_kek.wrap(plain, context)).decode()})
    store.put(info.key, orjson.dumps(body))
    assert len(kek_names(store)[0]) == 2

    assert keys.rewrap(new_kek) == [body["id"]]
    assert kek_names(store) == [[new_kek.name]]
    reopened = TenantSealer(TenantKeys(store, new_kek, keys.repository_id))
    assert reopened.open(dict(rec))["document"] == "secret of acme"
