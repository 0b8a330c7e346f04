"""How a record's content is sealed under its tenant's key (``daemon.keys.tenants``), so that
destroying the key erases the content from every object that holds it.

The *content* of an upsert is eight fields, in this order: ``vector``, ``sparse_indices``,
``sparse_values``, ``document``, ``metadata``, ``acl``, ``source``, ``extra``. The change-log
record and the snapshot record both list them in this order with the same types, so their
Avro encoding, one after the other, is the same bytes in a segment and in a data file: the
*envelope* (an Avro record ``SealedContent`` of those fields). Sealed, a record holds::

    vector = key id (8 bytes) | AES-SIV(envelope, associated data
                                        "content" NUL collection NUL tenant NUL id)
    sparse_indices, sparse_values, document, metadata, acl, source, extra = null

AES-SIV (RFC 5297) with the tenant's derived 512-bit key: deterministic, so the same content
seals to the same bytes (a segment re-uploaded after a crash is identical; diff and compaction
see an unchanged record as unchanged), and content moved to another record or tenant fails to
open. One AEAD call per record, and compaction carries the sealed bytes from the log into
snapshots without keys. Left readable, so compaction folds and restores plan without keys:
collection, tenant, id, op, offsets, times, ``dimension``, ``document_is_json``,
``embedding_model``, ``event_id``, ``event_time``; deletes; catalog events.

``TenantSealer`` is the reference, on record dicts. ``native()`` is the C accelerator
(``daemon/native/tenantseal.c``) on encoded records, which must give the same bytes
(``tests/unit/test_tenantseal.py``): capture seals the native codec's datums with it, and a
restore to a directory opens whole data-file blocks with it.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import Any

import fastavro
from cryptography.exceptions import InvalidTag

from daemon.errors import IntegrityError
from daemon.keys.tenants import TenantForgotten, TenantKeys
from daemon.schemas_loader import schema_text

CONTENT_FIELDS = ("vector", "sparse_indices", "sparse_values", "document", "metadata", "acl",
                  "source", "extra")
SEALED_FIELDS = CONTENT_FIELDS
KEY_ID_BYTES = 8
TAG_BYTES = 16
NONCE_BYTES = 12


def _content_types(schema_name: str) -> list[dict[str, Any]]:
    fields = json.loads(schema_text(schema_name))["fields"]
    ours = [f for f in fields if f["name"] in CONTENT_FIELDS]
    if tuple(f["name"] for f in ours) != CONTENT_FIELDS:
        raise AssertionError(f"{schema_name} lists the content fields in another order")
    return [{"name": f["name"], "type": f["type"]} for f in ours]


_LOG_CONTENT = _content_types("changelog_record.avsc")
assert _content_types("snapshot_record.avsc") == _LOG_CONTENT, \
    "the change-log and snapshot records must type their content alike"
ENVELOPE_SCHEMA = fastavro.parse_schema({
    "type": "record", "name": "SealedContent", "namespace": "io.vecwal.keys",
    "fields": _LOG_CONTENT})


def associated_data(collection: str, tenant: str, record_id: str) -> bytes:
    return f"content\0{collection}\0{tenant}\0{record_id}".encode()


def envelope(rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, ENVELOPE_SCHEMA, {f: rec.get(f) for f in CONTENT_FIELDS})
    return buf.getvalue()


class TenantSealer:
    """Seals and opens the content of record dicts (see the module)."""

    def __init__(self, keys: TenantKeys) -> None:
        self.keys = keys

    def seal(self, rec: dict[str, Any]) -> dict[str, Any]:
        """``rec`` with its content sealed under its tenant's key (in place; returned)."""
        if rec.get("op", "upsert") != "upsert" or rec.get("id") is None:
            return rec
        tenant = rec.get("tenant") or ""
        sealed = self.seal_bytes(rec["collection"], tenant, envelope(rec),
                                 associated_data(rec["collection"], tenant, rec["id"]))
        rec.update(dict.fromkeys(CONTENT_FIELDS[1:]), vector=sealed)
        return rec

    def seal_bytes(self, collection: str, tenant: str, plain: bytes, ad: bytes) -> bytes:
        """``plain`` sealed under the tenant's current key, deterministically (records):
        key id (8 bytes) | AES-SIV(plain, ``ad``)."""
        key = self.keys.current(collection, tenant)
        return key.id + key.cipher.encrypt(plain, [ad])

    def seal_random(self, collection: str, tenant: str, plain: bytes, ad: bytes) -> bytes:
        """``plain`` sealed under the tenant's current key with a random nonce (rejected
        events, ``daemon.changelog.quarantine.seal_entry``): key id (8 bytes) | nonce (12) |
        AES-256-GCM(plain, ``ad``) with its tag (16)."""
        key = self.keys.current(collection, tenant)
        nonce = os.urandom(NONCE_BYTES)
        return b"".join((key.id, nonce, key.gcm.encrypt(nonce, plain, ad)))

    def open_random(self, collection: str, tenant: str, sealed: bytes, ad: bytes) -> bytes:
        """What ``seal_random`` sealed. Raises :class:`TenantForgotten` when the key it names
        was destroyed, EncryptionKeyError when it cannot be had otherwise, IntegrityError
        when the bytes do not open (changed, or moved to another ``ad``)."""
        key = self.keys.key(collection, tenant, bytes(sealed[:KEY_ID_BYTES]))
        at = KEY_ID_BYTES + NONCE_BYTES
        try:
            return key.gcm.decrypt(bytes(sealed[KEY_ID_BYTES:at]), bytes(sealed[at:]), ad)
        except InvalidTag:
            raise IntegrityError(f"content of tenant {tenant!r} of {collection!r} does not "
                                 "open under its key", "it was changed or moved") from None

    def open(self, rec: dict[str, Any]) -> dict[str, Any]:
        """``rec`` with its content opened (in place; returned). Raises
        :class:`TenantForgotten` for a forgotten tenant's record."""
        if rec.get("op", "upsert") != "upsert" or rec.get("id") is None:
            return rec
        coll, tenant, rid = rec["collection"], rec.get("tenant") or "", rec["id"]
        sealed = rec.get("vector")
        if sealed is None or len(sealed) < KEY_ID_BYTES + TAG_BYTES or \
                any(rec.get(f) is not None for f in CONTENT_FIELDS[1:]):
            raise IntegrityError(f"record {coll}/{tenant}/{rid} holds no sealed content",
                                 "the repository has per-tenant keys: every upsert is sealed; "
                                 "the record was changed")
        key = self.keys.key(coll, tenant, bytes(sealed[:KEY_ID_BYTES]))
        try:
            plain = key.cipher.decrypt(bytes(sealed[KEY_ID_BYTES:]),
                                       [associated_data(coll, tenant, rid)])
            content = fastavro.schemaless_reader(io.BytesIO(plain), ENVELOPE_SCHEMA, None)
        except (InvalidTag, ValueError, EOFError, IndexError):
            raise IntegrityError(f"record {coll}/{tenant}/{rid}: sealed content does not open",
                                 "the record was changed or moved") from None
        assert isinstance(content, dict)
        rec.update(content)
        return rec

    def open_all(self, records: Iterable[dict[str, Any]],
                 skipped: dict[tuple[str, str], int] | None = None
                 ) -> Iterable[dict[str, Any]]:
        """The records opened; a forgotten tenant's are left out (counted in ``skipped``)."""
        for rec in records:
            try:
                yield self.open(rec)
            except TenantForgotten as gone:
                if skipped is not None:
                    pair = (gone.collection, gone.tenant)
                    skipped[pair] = skipped.get(pair, 0) + 1


@cache
def native() -> ModuleType | None:
    """The C sealer (``daemon/native/tenantseal.c``), or None when it is not built (it needs
    OpenSSL's headers) or was written for other record schemas."""
    try:
        from daemon.native import tenantseal
    except ImportError:
        return None
    from daemon.native.records import spelled_fields

    agrees = (spelled_fields("changelog_record.avsc") == tenantseal.LOG_FIELDS
              and spelled_fields("snapshot_record.avsc") == tenantseal.ROW_FIELDS)
    return tenantseal if agrees else None
