"""What capture knows before it parses: collection dimensions seeded from the repository.

A restarted daemon must check a wrong-dimension upsert as the one before it did, so on every
assignment the dimensions the repository knows (``snapshot.known_schemas``: the newest
snapshot's catalog and the collection ops logged after it, read incrementally) are applied to
the parser's map, which the native codec is also given, before any event of the assigned
partitions is parsed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from daemon.errors import IntegrityError, StoreError
from daemon.snapshot.known_schemas import KnownSchemas

log = structlog.get_logger("vecwal.capture")


class DimensionSeeder:
    """Applies the repository's collection dimensions to capture's checks. Only what the
    store learned since the last call is applied, so what capture learned itself meanwhile
    (a ``collection.put`` it parsed) is kept. The store wins over ``capture.dimensions`` (a
    warning names both)."""

    def __init__(self, schemas: KnownSchemas, declared: Mapping[str, int]) -> None:
        self.schemas = schemas
        self.declared = declared
        self._stored: dict[str, int] = {}

    def seed(self, dims: dict[str, int], retry: Callable[[Callable[[], Any], str], Any]) -> None:
        """Update ``dims`` (collection -> dimension) from the store, read through ``retry``."""
        began = time.monotonic()
        try:
            stored: dict[str, int] = retry(self.schemas.dimensions, "collection schemas")
        except (StoreError, IntegrityError, OSError) as exc:
            log.warning("collection dimensions not read from the store; capture checks what "
                        "it learns from the stream", error=str(exc),
                        hint="they are read again at the next partition assignment")
            return
        declared = self.declared
        for coll, dim in stored.items():
            if self._stored.get(coll) == dim:
                continue
            if coll in declared and declared[coll] != dim:
                log.warning("capture.dimensions disagrees with the repository; using the "
                            "repository's", collection=coll, configured=declared[coll],
                            repository=dim, hint=f"set capture.dimensions.{coll} = {dim}, "
                            "or remove it: the collection's collection.put says so")
            dims[coll] = dim
        for coll in self._stored.keys() - stored.keys():  # dropped since
            if coll in declared:
                dims[coll] = declared[coll]
            else:
                dims.pop(coll, None)
        self._stored = stored
        read = self.schemas.last
        log.info("collection dimensions read from the store", collections=len(stored),
                 new_segments=read.segments, segments_read=read.segments_read,
                 seconds=round(time.monotonic() - began, 3))
