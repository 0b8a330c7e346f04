"""Capture's side of per-tenant keys (``daemon.keys.sealing``): every upsert's content is
sealed under its tenant's key before its record goes into a segment. The native codec's
records arrive encoded: the C sealer seals them as they are (one AES-SIV call, no decoding);
without it, or for a datum it refuses, they are decoded, sealed and encoded again. The Python
parser's records arrive as dicts and are sealed as such.

``QuarantineSealer`` does the same for rejected events: an entry whose raw value names a
collection (``daemon.sources.attribute``, as ``vecwal history`` attributes it) is sealed under
that tenant's key (``daemon.changelog.quarantine.seal_entry``) when its segment is made
durable, on the upload thread; one that names none stays as it is, under the repository key
only."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from typing import Any

import fastavro

from daemon.changelog.quarantine import QuarantineEntry, seal_entry, sealer_compressor
from daemon.changelog.repository import Repository
from daemon.changelog.segment import RECORD_SCHEMA, record_datum
from daemon.config import Config
from daemon.keys.sealing import TenantSealer, native
from daemon.keys.tenants import CURRENT_TTL_S, TenantKeys
from daemon.sources import Source, attribute


class CaptureSealer:
    def __init__(self, sealer: TenantSealer) -> None:
        self.sealer = sealer
        self._native = native()
        self._keys: dict[bytes, tuple[bytes, bytes]] = {}
        self._keys_since = time.monotonic()

    def _resolve(self, collection: bytes, tenant: bytes) -> tuple[bytes, bytes]:
        key = self.sealer.keys.current(collection.decode(), tenant.decode())
        return key.id, key.siv

    def datum(self, datum: bytes) -> bytes:
        """A change-log record datum with its content sealed."""
        if self._native is not None:
            if time.monotonic() - self._keys_since >= CURRENT_TTL_S:
                self._keys.clear()  # as TenantKeys.current: a `vecwal forget` is seen as soon
                self._keys_since = time.monotonic()
            try:
                sealed: bytes = self._native.seal_record(datum, self._keys, self._resolve)
                return sealed
            except ValueError:
                pass  # the reference decides
        rec = fastavro.schemaless_reader(io.BytesIO(datum), RECORD_SCHEMA, None)
        assert isinstance(rec, dict)
        return record_datum(self.sealer.seal(rec))

    def record(self, rec: dict[str, Any]) -> dict[str, Any]:
        return self.sealer.seal(rec)


def capture_sealer(config: Config, repo: Repository) -> CaptureSealer | None:
    """The sealer of a repository with per-tenant keys, else None."""
    if not config.encryption.per_tenant_keys:
        return None
    return CaptureSealer(TenantSealer(TenantKeys.of(repo.store)))


class QuarantineSealer:
    def __init__(self, sealer: TenantSealer, sources: Mapping[str, Source]) -> None:
        self.sealer, self.sources = sealer, sources

    def seal(self, entries: list[QuarantineEntry]) -> list[QuarantineEntry]:
        """``entries``, each sealed under its tenant's key when its raw value names its
        collection (already sealed ones as they are)."""
        out, compressor = [], sealer_compressor()
        for e in entries:
            source = self.sources.get(e.topic)
            who = None if e.sealed is not None or source is None else \
                attribute(source, e.key, e.value)
            if who is not None and who.collection is not None and who.tenant is not None:
                e = seal_entry(e, who.collection, who.tenant, who.record_id, self.sealer,
                               compressor)
            out.append(e)
        return out


def quarantine_sealer(sealer: CaptureSealer | None, sources: Mapping[str, Source]
                      ) -> QuarantineSealer | None:
    """The sealer of rejected events of a repository with per-tenant keys, else None."""
    return None if sealer is None else QuarantineSealer(sealer.sealer, sources)
