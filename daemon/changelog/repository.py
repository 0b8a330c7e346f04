"""Repository: the change log's view of one ObjectStore (a bucket prefix or a directory).

Immutable objects (segments, sidecars, quarantine objects, vecwal.json) are written create-only.
When a create-only put finds the key taken, the stored bytes are compared with ours: equal is
success (an identical re-upload after a crash), different is an IntegrityError.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

from daemon.changelog.keys import (
    QuarantineKey,
    SegmentKey,
    partition_dir,
    quarantine_prefix,
    segment_list_start_after,
    watermark_key,
    watermark_prefix,
)
from daemon.changelog.quarantine import SegmentQuarantine, same_event
from daemon.changelog.segment import read_records
from daemon.changelog.sidecar import Sidecar
from daemon.changelog.watermark import Watermark
from daemon.errors import IntegrityError, ObjectExists, ObjectNotFound
from daemon.identity import check_encryption, ensure_identity, read_identity
from daemon.objectstore import ObjectStore
from daemon.spans import Gathered, Payload


class Repository:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # -- identity -------------------------------------------------------------------------
    @property
    def encrypted(self) -> bool:
        return bool(getattr(self.store, "encrypted", False))

    def ensure_initialized(self) -> dict[str, object]:
        """Create ``vecwal.json`` if the repository is new; check its format (and that it is
        encrypted exactly when the store is) otherwise."""
        return ensure_identity(self.store, encrypted=self.encrypted)

    def identity(self) -> dict[str, object]:
        ident = read_identity(self.store)
        check_encryption(self.store.url, ident, encrypted=self.encrypted)
        return ident

    # -- immutable objects ----------------------------------------------------------------
    def put_immutable(self, key: str, data: Payload,
                      same: Callable[[bytes], bool] | None = None,
                      sha256: bytes | None = None) -> None:
        """Create-only put; an identical existing object is success, a different one is not
        (unless ``same`` says the stored bytes hold the same content). ``sha256``: the
        digest of ``data``, when the caller has it (``ObjectStore.put``)."""
        try:
            self.store.put(key, data, create_only=True, sha256=sha256)
        except ObjectExists:
            stored = self.store.get(key)
            digest = sha256 if sha256 is not None else (
                data.sha256() if isinstance(data, Gathered) else hashlib.sha256(data).digest())
            if hashlib.sha256(stored).digest() != digest and \
                    not (same is not None and same(stored)):
                raise IntegrityError(
                    f"{key} already exists in {self.store.url} with different content",
                    "two writers produced different data for the same offsets; stop the "
                    "other writer and compare both with `vecwal verify --deep`",
                ) from None

    def put_segment(self, key: SegmentKey, data: Payload, sha256: bytes | None = None) -> None:
        """``sha256``: the segment's digest, when known (its sidecar's)."""
        self.put_immutable(key.avro, data, sha256=sha256)

    def put_sidecar(self, sidecar: Sidecar) -> None:
        self.put_immutable(sidecar.key.sidecar, sidecar.to_json())

    def put_quarantine(self, quarantine: SegmentQuarantine) -> None:
        """Create-only. An object already there with the same events is success even when its
        bytes differ (another zstd version may compress them differently, or a tenant key
        made after ``vecwal forget`` sealed them: ``same_event``)."""

        def same(stored: bytes) -> bool:
            try:
                held = SegmentQuarantine.decode(quarantine.key, stored).entries
            except IntegrityError:
                return False
            return len(held) == len(quarantine.entries) and all(
                same_event(a, b) for a, b in zip(held, quarantine.entries, strict=True))

        self.put_immutable(quarantine.key.object_key, quarantine.encode(), same)

    # -- reading quarantine ---------------------------------------------------------------
    def list_quarantine(self, topic: str) -> Iterator[tuple[QuarantineKey, int]]:
        """(key, size in bytes) of every quarantine object of the topic, both layouts, by
        partition; objects of one segment's range may overlap another's after a crash."""
        for info in self.store.list(quarantine_prefix(topic)):
            key = QuarantineKey.parse(info.key)
            if key is not None:
                yield key, info.size

    def read_quarantine(self, key: QuarantineKey, data: bytes | None = None) -> SegmentQuarantine:
        """The rejected events of one quarantine object (``data``: its bytes, when fetched)."""
        if data is None:
            data = self.store.get(key.object_key)
        return SegmentQuarantine.decode(key, data)

    # -- reading the log ------------------------------------------------------------------
    def list_segments(self, topic: str, partition: int, from_offset: int = 0) -> Iterator[SegmentKey]:
        """Segments of one partition whose start is at or after ``from_offset``, by start."""
        start_after = segment_list_start_after(topic, partition, from_offset) if from_offset else ""
        for info in self.store.list(partition_dir(topic, partition), start_after=start_after):
            key = SegmentKey.parse(info.key)
            if key is not None:
                yield key

    def read_sidecar(self, key: SegmentKey) -> Sidecar:
        return Sidecar.from_json(self.store.get(key.sidecar))

    def read_segment(self, key: SegmentKey, data: bytes | None = None) -> list[dict[str, Any]]:
        """The records of a segment (``data``: its bytes, when already fetched)."""
        if data is None:
            data = self.store.get(key.avro)
        return read_records(key, data)

    # -- watermarks -----------------------------------------------------------------------
    def read_watermark(self, topic: str, partition: int) -> Watermark | None:
        try:
            return Watermark.from_json(self.store.get(watermark_key(topic, partition)))
        except ObjectNotFound:
            return None

    def write_watermark(self, wm: Watermark) -> None:
        self.store.put(watermark_key(wm.topic, wm.partition), wm.to_json())

    def list_watermarks(self, topic: str) -> list[Watermark]:
        return [Watermark.from_json(self.store.get(info.key))
                for info in self.store.list(watermark_prefix(topic))]

    def resume_state(self, topic: str, partition: int) -> tuple[int | None, Watermark | None]:
        """The store's answer to "where does capture of this partition continue?": the
        highest segment end, found from the watermark with one LIST (segments written after
        the watermark, by a writer that died before updating it, are found too); and that
        watermark."""
        wm = self.read_watermark(topic, partition)
        resume = wm.captured_through if wm else None
        for key in self.list_segments(topic, partition, from_offset=resume or 0):
            resume = key.end if resume is None else max(resume, key.end)
        return resume, wm


def writer_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
