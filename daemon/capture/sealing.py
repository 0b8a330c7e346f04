"""Capture's side of per-tenant keys (``daemon.keys.tenants``): every upsert's content is
sealed under its tenant's key before its record is encoded into a segment. The native codec's
records arrive encoded: they are decoded, sealed and encoded again (the Python parser's
arrive as records)."""

from __future__ import annotations

import io
from typing import Any

import fastavro

from daemon.changelog.repository import Repository
from daemon.changelog.segment import RECORD_SCHEMA, record_datum
from daemon.config import Config
from daemon.keys.tenants import TenantKeys, TenantSealer


class CaptureSealer:
    def __init__(self, sealer: TenantSealer) -> None:
        self.sealer = sealer

    def datum(self, datum: bytes) -> bytes:
        """A change-log record datum with its content sealed."""
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
