"""Per-tenant keys: each tenant's record content sealed under its own key, so that destroying
the key erases the content from every object that holds it, however old and however locked
(crypto-shredding). ``[encryption] per_tenant_keys = true``, set when the repository is
created (``vecwal.json`` says so).

How a record's content is sealed under its tenant's key is ``daemon.keys.sealing``.

Keys (plain JSON under ``keys/``, never under Object Lock)::

    keys/tenants/<digest>/<key id>.json     a tenant key wrapped by the KEK (KeyRecord format,
                                            plus "collection" and "tenant")
    keys/forgotten/<digest>.json            who erased the tenant, when, why

``digest`` is the first 32 hex of SHA-256(collection NUL tenant): names are not in key paths.
The wrapping's encryption context is ``vecwal:repository``, ``vecwal:tenant`` (the digest)
and ``vecwal:key``. ``vecwal forget`` deletes every key object of the tenant (every version
on a versioned bucket) and writes the erasure record; a value sealed under a missing key of
a forgotten tenant is then :class:`TenantForgotten`, and readers leave the record out.
Events of the tenant captured after forgetting get a new key.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from daemon.errors import EncryptionKeyError, IntegrityError, ObjectExists, ObjectNotFound
from daemon.keys import KeyEncryptionKey
from daemon.keys.keyring import KeyRecord
from daemon.objectstore import ObjectStore

TENANT_KEYS = "keys/tenants/"
FORGOTTEN = "keys/forgotten/"
_ID = 8
CURRENT_TTL_S = 30.0


class TenantForgotten(EncryptionKeyError):
    """The tenant's key was destroyed by ``vecwal forget``: its content is gone."""

    def __init__(self, collection: str, tenant: str) -> None:
        super().__init__(f"tenant {tenant!r} of {collection!r} was forgotten (its key is "
                         "destroyed)", "its records are left out; see `vecwal forget`")
        self.collection, self.tenant = collection, tenant


def tenant_digest(collection: str, tenant: str) -> str:
    return hashlib.sha256(f"{collection}\0{tenant}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TenantKey:
    """One tenant key, ready to use: its id, the AES-SIV key derived from it (512 bits, HKDF-
    SHA256 of the tenant's 256-bit key) and that key's cipher, and an AES-256-GCM cipher
    under another key derived from it (info ``vecwal tenant gcm``: rejected events, sealed
    with a random nonce where nothing needs equal bytes for equal content)."""

    id: bytes
    siv: bytes
    cipher: AESSIV
    gcm: AESGCM

    @classmethod
    def derive(cls, key_id: bytes, key: bytes) -> TenantKey:
        siv = HKDF(hashes.SHA256(), 64, None, b"vecwal tenant siv").derive(key)
        gcm = HKDF(hashes.SHA256(), 32, None, b"vecwal tenant gcm").derive(key)
        return cls(key_id, siv, AESSIV(siv), AESGCM(gcm))


@dataclass(frozen=True)
class Erasure:
    collection: str
    tenant: str
    at_ms: int
    who: str
    reason: str
    keys_destroyed: int


class TenantKeys:
    """The tenant keys of one repository: created on first use, cached, destroyed by
    :meth:`forget`. ``store`` may be the encrypted store (``keys/`` passes through plain)."""

    def __init__(self, store: ObjectStore, kek: KeyEncryptionKey, repository_id: str) -> None:
        self.store, self.kek, self.repository_id = store, kek, repository_id
        self._current: dict[tuple[str, str], tuple[TenantKey, float]] = {}
        self._by_id: dict[bytes, TenantKey | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, store: Any) -> TenantKeys:
        """The tenant keys of an encrypted store (``EncryptedStore`` over its keyring)."""
        keyring = getattr(store, "keys", None)
        if keyring is None or not hasattr(keyring, "kek"):
            raise EncryptionKeyError(f"{store.url}: per-tenant keys need [encryption] enabled",
                                     "set [encryption] enabled = true and a kek")
        return cls(store, keyring.kek, keyring.repository_id)

    def _context(self, digest: str, key_id: str) -> dict[str, str]:
        return {"vecwal:repository": self.repository_id, "vecwal:tenant": digest,
                "vecwal:key": key_id}

    # -- sealing ----------------------------------------------------------------------------
    def current(self, collection: str, tenant: str) -> TenantKey:
        """The key new content of the tenant is sealed under. Looked up again after
        ``CURRENT_TTL_S``: a running capture notices a ``vecwal forget`` that soon, and seals
        what follows under a new key."""
        with self._lock:
            cached = self._current.get((collection, tenant))
        if cached is not None and time.monotonic() - cached[1] < CURRENT_TTL_S:
            return cached[0]
        digest = tenant_digest(collection, tenant)
        records = self._records(digest)
        if not records:
            records = [self._create(collection, tenant, digest)]
        newest = max(records, key=lambda r: (r.created_at_ms, r.id))
        key = self._derive(digest, newest)
        with self._lock:
            self._current[(collection, tenant)] = (key, time.monotonic())
            self._by_id[key.id] = key
        return key

    def key(self, collection: str, tenant: str, key_id: bytes) -> TenantKey:
        """Key ``key_id`` of the tenant; :class:`TenantForgotten` when the tenant was
        forgotten and the key is gone."""
        with self._lock:
            found = self._by_id.get(key_id, False)
        if found is None:
            raise TenantForgotten(collection, tenant)
        if found is not False:
            return found  # type: ignore[return-value]
        digest = tenant_digest(collection, tenant)
        record = next((r for r in self._records(digest) if r.id == key_id.hex()), None)
        if record is None:
            if not self.is_forgotten(collection, tenant):
                raise EncryptionKeyError(
                    f"the key {key_id.hex()} of tenant {tenant!r} of {collection!r} is missing "
                    "but no erasure is recorded", "restore keys/ from its copy")
            with self._lock:
                self._by_id[key_id] = None
            raise TenantForgotten(collection, tenant)
        key = self._derive(digest, record)
        with self._lock:
            self._by_id[key_id] = key
        return key

    def _records(self, digest: str) -> list[KeyRecord]:
        out = []
        for info in self.store.list(f"{TENANT_KEYS}{digest}/"):
            try:
                data = self.store.get(info.key)
            except ObjectNotFound:
                continue
            out.append(_decode(info.key, data))
        return out

    def _create(self, collection: str, tenant: str, digest: str) -> KeyRecord:
        key_id = os.urandom(_ID).hex()
        _plain, wrapped = self.kek.generate(self._context(digest, key_id))
        record = KeyRecord(key_id, int(time.time() * 1000), ((self.kek.name, wrapped),))
        body = orjson.loads(record.encode())
        body.update(collection=collection, tenant=tenant)
        try:
            self.store.put(f"{TENANT_KEYS}{digest}/{key_id}.json", orjson.dumps(body),
                           create_only=True)
        except ObjectExists:
            return self._create(collection, tenant, digest)
        return record

    def _derive(self, digest: str, record: KeyRecord) -> TenantKey:
        return TenantKey.derive(bytes.fromhex(record.id), self._unwrap(digest, record))

    def _unwrap(self, digest: str, record: KeyRecord) -> bytes:
        for name, wrapped in record.wrappings:
            if name == self.kek.name:
                return self.kek.unwrap(wrapped, self._context(digest, record.id))
        raise EncryptionKeyError(f"tenant key {record.id} is wrapped by "
                                 f"{', '.join(n for n, _ in record.wrappings)}, not by "
                                 f"{self.kek.name}", "configure the kek that wrapped it "
                                 "(or finish `vecwal keys rotate` with it)")

    # -- rotation ---------------------------------------------------------------------------
    def rewrap(self, new_kek: KeyEncryptionKey) -> list[str]:
        """Every tenant key wrapped by ``new_kek`` instead of this store's KEK (``vecwal keys
        rotate``), in the keyring's commit order: each key first gains the new wrapping, and
        only when every key has it do the old wrappings go. Idempotent: an interrupted
        rotation is finished by running it again. Returns the key ids."""
        found = []
        for info in self.store.list(TENANT_KEYS):
            data = self.store.get(info.key)
            record, raw = _decode(info.key, data), orjson.loads(data)
            digest = info.key[len(TENANT_KEYS):].split("/", 1)[0]
            if all(k != new_kek.name for k, _ in record.wrappings):
                plain = self._unwrap(digest, record)
                wrapped = new_kek.wrap(plain, self._context(digest, record.id))
                record = self._put(info.key, raw, record,
                                   [*record.wrappings, (new_kek.name, wrapped)])
            found.append((info.key, raw, record))
        for name, raw, record in found:
            if len(record.wrappings) > 1:
                self._put(name, raw, record,
                          [(k, w) for k, w in record.wrappings if k == new_kek.name])
        return [record.id for _, _, record in found]

    def _put(self, key: str, raw: dict[str, Any], record: KeyRecord,
             wrappings: list[tuple[str, bytes]]) -> KeyRecord:
        new = KeyRecord(record.id, record.created_at_ms, tuple(wrappings))
        body = orjson.loads(new.encode())
        body.update(collection=raw["collection"], tenant=raw["tenant"])
        self.store.put(key, orjson.dumps(body))
        return new

    # -- forgetting -------------------------------------------------------------------------
    def is_forgotten(self, collection: str, tenant: str) -> bool:
        try:
            self.store.head(f"{FORGOTTEN}{tenant_digest(collection, tenant)}.json")
        except ObjectNotFound:
            return False
        return True

    def tenants(self) -> list[tuple[str, str, int]]:
        """(collection, tenant, keys) of every tenant with a key."""
        found: dict[tuple[str, str], int] = {}
        for info in self.store.list(TENANT_KEYS):
            raw = orjson.loads(self.store.get(info.key))
            pair = (str(raw["collection"]), str(raw["tenant"]))
            found[pair] = found.get(pair, 0) + 1
        return [(c, t, n) for (c, t), n in sorted(found.items())]

    def forget(self, collection: str, tenant: str, reason: str, who: str = "") -> Erasure:
        """Destroy every key of the tenant (commit order: the erasure record first, so a
        crash part way still reads as forgotten; then the keys, every version), and forget
        the cached ciphers."""
        digest = tenant_digest(collection, tenant)
        erasure = Erasure(collection, tenant, int(time.time() * 1000),
                          who or f"{getpass.getuser()}@{socket.gethostname()}", reason, 0)
        keys = [i.key for i in self.store.list(f"{TENANT_KEYS}{digest}/")]
        body = {"collection": collection, "tenant": tenant, "at_ms": erasure.at_ms,
                "who": erasure.who, "reason": reason, "keys": [k.rsplit("/", 1)[1] for k in keys]}
        self.store.put(f"{FORGOTTEN}{digest}.json", orjson.dumps(body))
        failed = self.store.delete_many(keys)
        if failed:
            key, why = next(iter(failed.items()))
            raise EncryptionKeyError(f"could not destroy {key}: {why.message}",
                                     "keys/ must not be under Object Lock or a legal hold; "
                                     "fix that and run `vecwal forget` again")
        with self._lock:
            self._current.pop((collection, tenant), None)
            for k in keys:
                self._by_id[bytes.fromhex(k.rsplit("/", 1)[1][:-5])] = None
        return Erasure(collection, tenant, erasure.at_ms, erasure.who, reason, len(keys))

    def erasures(self) -> list[dict[str, Any]]:
        return [orjson.loads(self.store.get(i.key)) for i in self.store.list(FORGOTTEN)]


def _decode(key: str, data: bytes) -> KeyRecord:
    raw = orjson.loads(data)
    try:
        return KeyRecord(str(raw["id"]), int(raw["created_at_ms"]),
                         tuple((str(w["kek"]), base64.b64decode(w["wrapped"]))
                               for w in raw["wrappings"]))
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"{key} is not a tenant key object",
                             "restore keys/ from its copy") from None
