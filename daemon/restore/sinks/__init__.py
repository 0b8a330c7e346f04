"""Where a restore writes: a directory, Kafka, or a vector database."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from daemon.snapshot.datafile import Row


@dataclass
class WrittenState:
    """What a sink holds for one collection: count, per-tenant counts, state digest."""

    records: int = 0
    digest: str = "0" * 32
    tenants: dict[str, int] = field(default_factory=dict)


def combine_written(parts: list[WrittenState]) -> WrittenState:
    """Counts and digests of disjoint parts, combined (digests add up: order does not
    matter)."""
    from daemon.snapshot.datafile import DIGEST_MOD

    value = records = 0
    tenants: dict[str, int] = {}
    for w in parts:
        value += int(w.digest, 16)
        records += w.records
        for t, n in w.tenants.items():
            tenants[t] = tenants.get(t, 0) + n
    return WrittenState(records, f"{value % DIGEST_MOD:032x}", dict(sorted(tenants.items())))


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


@runtime_checkable
class RowSink(Protocol):
    """A sink that takes rows as bytes (``daemon.snapshot.datafile.Row``): records the log
    did not change are copied, never decoded."""

    def write_rows(self, collection: str, bucket: int, rows: Iterable[Row]) -> WrittenState: ...


@runtime_checkable
class FileSink(Protocol):
    """A sink that takes whole data files: a snapshot's file for a bucket nothing changed,
    or one written for it (``data`` may come in pieces, to be written in order)."""

    def write_file(self, collection: str, bucket: int,
                   data: bytes | Sequence[bytes | memoryview],
                   state: WrittenState) -> WrittenState: ...
