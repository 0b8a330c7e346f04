"""Where a restore writes: a directory, Kafka, or a vector database."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from daemon.snapshot.written import WrittenState, combine_written
from daemon.spans import HeadLast, Piece

__all__ = ["FileSink", "RowSink", "Sink", "WrittenState", "combine_written"]

if TYPE_CHECKING:
    from daemon.rows import Row


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
    """A sink that takes rows as bytes (``daemon.rows.Row``): records the log
    did not change are copied, never decoded."""

    def write_rows(self, collection: str, bucket: int, rows: Iterable[Row]) -> WrittenState: ...


@runtime_checkable
class FileSink(Protocol):
    """A sink that takes whole data files: a snapshot's file for a bucket nothing changed,
    or one written for it (``data`` may come in pieces, to be written in order; an iterator
    of pieces, a ranged read's parts, is consumed as it is written, never held whole; a
    ``spans.HeadLast``, a file opened as it is written, has its head written last)."""

    def write_file(self, collection: str, bucket: int,
                   data: bytes | Iterable[Piece] | HeadLast,
                   state: WrittenState) -> WrittenState: ...
