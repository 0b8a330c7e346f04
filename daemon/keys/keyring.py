"""The keyring: the repository's own keys, each wrapped by the key-encryption key (KEK).

Objects (plain JSON, outside Object Lock: ``keys/`` is rewritten by a rotation)::

    keys/repository/<id>.json   {"format": 1, "id": "<16 hex>", "created_at_ms": ...,
                                 "wrappings": [{"kek": "<KEK name>", "wrapped": "<base64>"}]}

Every object's data key is wrapped by one repository key (its id is in the object's header,
``daemon.objectstore.encrypted``). New objects use the *current* key: the newest by
``created_at_ms`` (then id). Each wrapping binds the encryption context
``{"vecwal:repository": <vecwal.json id>, "vecwal:key": <id>}``, so a key object copied into
another repository, or under another id, does not unwrap.

Opening unwraps every key once with the configured KEK (a KMS Decrypt per key, at start,
never per object). A key this process has not seen (another process created one, or a
rotation did) is looked up again before an object is refused.

Rotation (:func:`rotate`), commit order, so that a crash at any step leaves a keyring both
the old and the new KEK open:

1. a new repository key, wrapped by the new KEK and the old one, is written create-only:
   objects written after the rotation will not depend on the old KEK once step 3 is done;
2. every existing key gets a second wrapping, by the new KEK (the object is rewritten with
   both wrappings);
3. only then are the old KEK's wrappings removed, key by key.

Data is never re-encrypted: a key's wrapping changes, the key does not.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from daemon.errors import EncryptionKeyError, IntegrityError, ObjectExists, ObjectNotFound
from daemon.identity import ensure_identity
from daemon.keys import KeyEncryptionKey
from daemon.objectstore import ObjectStore

KEYRING_ROOT = "keys/"
REPOSITORY_KEYS = "keys/repository/"
KEY_ID_BYTES = 8
"""A key id is 8 random bytes in hex: 16 characters, the fixed width headers carry."""
KEYRING_FORMAT = 1


@dataclass(frozen=True)
class KeyRecord:
    """One stored repository key (its wrapped forms; no plaintext)."""

    id: str
    created_at_ms: int
    wrappings: tuple[tuple[str, bytes], ...]
    """(KEK name, wrapped key) pairs; more than one only during a rotation."""

    @property
    def object_key(self) -> str:
        return f"{REPOSITORY_KEYS}{self.id}.json"

    def encode(self) -> bytes:
        return orjson.dumps({
            "format": KEYRING_FORMAT, "id": self.id, "created_at_ms": self.created_at_ms,
            "wrappings": [{"kek": kek, "wrapped": base64.b64encode(w).decode()}
                          for kek, w in self.wrappings]})

    @classmethod
    def decode(cls, key: str, data: bytes) -> KeyRecord:
        try:
            raw: Any = orjson.loads(data)
            wrappings = tuple((str(w["kek"]), base64.b64decode(w["wrapped"]))
                              for w in raw["wrappings"])
            record = cls(str(raw["id"]), int(raw["created_at_ms"]), wrappings)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise IntegrityError(f"{key} is not a keyring object",
                                 "restore keys/ from its copy; objects it wrapped cannot be "
                                 "opened without it") from None
        if raw.get("format") != KEYRING_FORMAT or record.object_key != key:
            raise IntegrityError(f"{key}: keyring object of format {raw.get('format')!r} or "
                                 f"under another key", "use the vecwal version that wrote it")
        return record


def _context(repository_id: str, key_id: str) -> dict[str, str]:
    return {"vecwal:repository": repository_id, "vecwal:key": key_id}


@dataclass
class Keyring:
    """The repository keys, unwrapped. Thread-safe; :meth:`key` reloads on an unknown id."""

    store: ObjectStore
    kek: KeyEncryptionKey
    repository_id: str
    keys: dict[str, bytes] = field(default_factory=dict)
    records: dict[str, KeyRecord] = field(default_factory=dict)
    also: tuple[KeyEncryptionKey, ...] = ()
    """Other KEKs to unwrap with (a rotation's new KEK, when finishing an interrupted one)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def open(cls, store: ObjectStore, kek: KeyEncryptionKey, *, create: bool = True,
             also: tuple[KeyEncryptionKey, ...] = (),
             per_tenant_keys: bool | None = None) -> Keyring:
        """The keyring of the repository in ``store`` (the raw store, not the encrypted
        view), unwrapped with ``kek``. An encrypted repository without keys gets its first
        one when ``create``; a new repository gets its ``vecwal.json`` first."""
        ident = ensure_identity(store, encrypted=True, per_tenant_keys=per_tenant_keys)
        ring = cls(store, kek, str(ident["id"]), also=also)
        ring.reload()
        if not ring.records:
            if not create:
                raise EncryptionKeyError(f"{store.url} has no keys under {REPOSITORY_KEYS}",
                                         "restore keys/ from its copy")
            ring.add_key(kek)
        return ring

    # -- reading ----------------------------------------------------------------------------
    def reload(self) -> None:
        """Read every key object again and unwrap the ones not yet known."""
        records = dict(self.records)
        for info in self.store.list(REPOSITORY_KEYS):
            if info.key.endswith(".json"):
                try:
                    record = KeyRecord.decode(info.key, self.store.get(info.key))
                except ObjectNotFound:
                    continue
                records[record.id] = record
        keys = dict(self.keys)
        for record in records.values():
            if record.id not in keys:
                keys[record.id] = self._unwrap(record)
        with self._lock:
            self.records, self.keys = records, keys

    def _unwrap(self, record: KeyRecord) -> bytes:
        for kek in (self.kek, *self.also):
            for kek_name, wrapped in record.wrappings:
                if kek_name == kek.name:
                    return kek.unwrap(wrapped, _context(self.repository_id, record.id))
        names = ", ".join(name for name, _ in record.wrappings)
        raise EncryptionKeyError(
            f"repository key {record.id} of {self.store.url} is wrapped by {names}, not by "
            f"the configured key-encryption key {self.kek.name}",
            "configure the [encryption] kek that wrapped it, or run `vecwal keys rotate` "
            "with the old kek configured and the new one as --new-kek")

    def current(self) -> tuple[str, bytes]:
        """(id, key) of the key new objects are sealed under."""
        with self._lock:
            newest = max(self.records.values(), key=lambda r: (r.created_at_ms, r.id))
            return newest.id, self.keys[newest.id]

    def key(self, key_id: str) -> bytes:
        """The repository key ``key_id``; reloads once when it is not known yet."""
        with self._lock:
            found = self.keys.get(key_id)
        if found is not None:
            return found
        self.reload()
        with self._lock:
            found = self.keys.get(key_id)
        if found is None:
            raise EncryptionKeyError(
                f"repository key {key_id} is not in the keyring of {self.store.url}",
                "an object was sealed under a key whose keys/ object is missing: restore "
                "keys/ from its copy")
        return found

    # -- writing ----------------------------------------------------------------------------
    def add_key(self, kek: KeyEncryptionKey, *also: KeyEncryptionKey) -> str:
        """Create a repository key wrapped by ``kek`` and each of ``also`` (create-only);
        returns its id."""
        key_id = os.urandom(KEY_ID_BYTES).hex()
        context = _context(self.repository_id, key_id)
        plain, wrapped = kek.generate(context)
        wrappings = ((kek.name, wrapped), *((k.name, k.wrap(plain, context)) for k in also))
        record = KeyRecord(key_id, int(time.time() * 1000), wrappings)
        try:
            self.store.put(record.object_key, record.encode(), create_only=True)
        except ObjectExists:  # 64 random bits collided: astronomically unlikely
            return self.add_key(kek, *also)
        with self._lock:
            self.records[key_id] = record
            self.keys[key_id] = plain
        return key_id

    def rewrap(self, record: KeyRecord, wrappings: Iterable[tuple[str, bytes]]) -> KeyRecord:
        new = KeyRecord(record.id, record.created_at_ms, tuple(wrappings))
        self.store.put(new.object_key, new.encode())
        with self._lock:
            self.records[new.id] = new
        return new


@dataclass(frozen=True)
class RotationReport:
    new_key: str
    rewrapped: list[str]
    old_kek: str
    new_kek: str


def rotate(ring: Keyring, new_kek: KeyEncryptionKey) -> RotationReport:
    """Switch the keyring to ``new_kek`` (see the module's commit order). Idempotent: a
    rotation interrupted at any step is finished by running it again."""
    ring.reload()
    old_name = ring.kek.name
    new_key = ring.add_key(new_kek, ring.kek)
    rewrapped = []
    for record in sorted(ring.records.values(), key=lambda r: r.id):
        context = _context(ring.repository_id, record.id)
        kept = [(k, w) for k, w in record.wrappings if k != new_kek.name]
        if len(kept) == len(record.wrappings):
            record = ring.rewrap(record, [*kept, (new_kek.name, new_kek.wrap(ring.keys[record.id],
                                                                             context))])
        rewrapped.append(record.id)
    for key_id in rewrapped:
        record = ring.records[key_id]
        ring.rewrap(record, [(k, w) for k, w in record.wrappings if k == new_kek.name])
    ring.kek = new_kek
    return RotationReport(new_key, [k for k in rewrapped if k != new_key], old_name,
                          new_kek.name)
