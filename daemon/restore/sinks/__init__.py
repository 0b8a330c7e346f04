"""Where a restore writes: a directory, Kafka, or a vector database."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class WrittenState:
    """What a sink holds for one collection: count, per-tenant counts, state digest."""

    records: int = 0
    digest: str = "0" * 32
    tenants: dict[str, int] = field(default_factory=dict)


class Sink(Protocol):
    """A restore destination. Calls come in this order: ``begin``; ``write_catalog`` once,
    before any record; ``write_bucket`` per bucket, with its records sorted by (tenant, id),
    returning what it wrote; ``finish``. ``read_back`` then re-reads everything written, by
    another path than the one that wrote it, for validation.

    Optional methods, looked up with getattr: ``write_file`` (take a snapshot data file
    whole), ``probe()`` (more validation checks, run in the sink's engine), ``cleanup()``
    (remove what was written: drills), ``close()`` (release the engine)."""

    name: str

    def begin(self) -> None: ...

    def write_bucket(self, collection: str, bucket: int,
                     records: Iterable[dict[str, Any]]) -> WrittenState: ...

    def write_catalog(self, catalog: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...

    def read_back(self) -> dict[str, WrittenState]: ...
