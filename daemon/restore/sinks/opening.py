"""A sink's view for a repository with per-tenant keys (``daemon.keys.tenants``): every record
is opened with its tenant's key on its way in, and a forgotten tenant's records and settings
are left out. Bucket files and rows are not taken whole (their content is sealed), so the
executor hands this sink records; validation reads back what the sink underneath holds, which
is what was written: the opened records. A sink that takes whole data files
(``OpeningFileSink``, the directory) gets them opened: each bucket file, copied or written by
runs as for a plain repository, has its rows opened block by block as it is written
(``snapshot.opened``): nothing of a bucket's size is held in memory.

Picklable (a restore's worker processes get it with each bucket): each process opens the
tenant keys itself, from ``open_store``, once: the copies of one sink a process unpickles
share its keys and buffers (``_Held``), rather than each bucket reading and unwrapping the
keys again and faulting in new buffers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import TenantKeys
from daemon.objectstore import ObjectStore
from daemon.restore.sinks import FileSink, Sink, WrittenState
from daemon.rows import Row
from daemon.snapshot.opened import FileOpener
from daemon.spans import ForwardSource, Parts, Piece, PiecesSource, RangeSource, Span

_FORWARDED = frozenset({"probe", "cleanup", "close", "progress", "prefix", "notes", "parallel_safe",
                        "load_seconds", "spool_dir", "check_room"})


@dataclass
class _Held:
    """What one sink's copies in a process share: the opened keys and the opener (with its
    buffers)."""

    sealer: TenantSealer
    opener: FileOpener | None = None


_HELD: dict[str, _Held] = {}
"""This process's, by sink (its token); a sink lets go of its own when it finishes."""


class OpeningSink:
    def __init__(self, inner: Sink, open_store: Callable[[], ObjectStore]) -> None:
        self.inner = inner
        self.name = inner.name
        self._open_store = open_store
        self._token = uuid.uuid4().hex

    def __getattr__(self, name: str) -> Any:
        if name in _FORWARDED:
            return getattr(self.inner, name)
        raise AttributeError(name)

    @property
    def _held(self) -> _Held:
        held = _HELD.get(self._token)
        if held is None:
            held = _HELD[self._token] = _Held(TenantSealer(TenantKeys.of(self._open_store())))
        return held

    @property
    def sealer(self) -> TenantSealer:
        return self._held.sealer

    def begin(self) -> None:
        self.inner.begin()

    def write_catalog(self, catalog: dict[str, Any]) -> None:
        keys = self.sealer.keys
        tenants = {coll: {t: s for t, s in ts.items() if not keys.is_forgotten(coll, t)}
                   for coll, ts in catalog.get("tenants", {}).items()}
        self.inner.write_catalog({**catalog, "tenants": tenants})

    def write_bucket(self, collection: str, bucket: int,
                     records: Iterable[dict[str, Any]]) -> WrittenState:
        return self.inner.write_bucket(collection, bucket, self.sealer.open_all(records))

    def write_rows(self, collection: str, bucket: int, rows: Iterable[Row]) -> WrittenState:
        """The bucket's rows opened a batch at a time (``FileOpener.records``), not decoded
        sealed and opened one by one, then given to the sink underneath as records."""
        return self.inner.write_bucket(collection, bucket, self._opener().records(
            rows, f"{collection} bucket {bucket}"))

    def _opener(self) -> FileOpener:
        held = self._held
        if held.opener is None:
            held.opener = FileOpener(held.sealer)
        return held.opener

    def finish(self) -> None:
        self.inner.finish()
        _HELD.pop(self._token, None)

    def read_back(self) -> dict[str, WrittenState]:
        return self.inner.read_back()


class OpeningFileSink(OpeningSink):
    """``OpeningSink`` over a sink that takes whole data files."""

    @property
    def codec(self) -> str:
        return str(getattr(self.inner, "codec", "null"))

    def write_file(self, collection: str, bucket: int,
                   data: bytes | Iterable[Piece],
                   state: WrittenState) -> WrittenState:
        opener = self._opener()
        where = f"{collection} bucket {bucket}"
        source = _as_source(data)
        inner: FileSink = self.inner  # type: ignore[assignment]  # opening_sink checked it
        if not opener.native:  # the reference: the file opened whole, then written
            enc = opener.open(_whole(source), where, self.codec)
            if not enc.records:
                return WrittenState()
            return inner.write_file(collection, bucket, enc.chunks,
                                    WrittenState(enc.records, enc.digest, enc.tenants))
        opening = opener.opening(source, where, self.codec)
        if not opening.records:
            return WrittenState()
        inner.write_file(collection, bucket, opening.file, WrittenState())
        return opening.state()


def _as_source(data: bytes | Iterable[Piece]) -> bytes | memoryview | RangeSource:
    """A file given in pieces as one source its blocks are read from, without joining it:
    an opened sealed object is its own source, and the parts of a ranged read (S3) are read
    as they arrive, only those still needed held."""
    if isinstance(data, (bytes, memoryview)):
        return data
    if isinstance(data, Parts):  # a ranged read's: read as they arrive
        return ForwardSource(data)
    pieces = list(data)
    if len(pieces) == 1:
        one = pieces[0]
        if isinstance(one, (bytes, memoryview)):
            return one
        if isinstance(one, Span) and one.offset == 0 and one.length == len(one.source):
            return one.source
    return PiecesSource(pieces)


def _whole(source: bytes | memoryview | RangeSource) -> bytes | memoryview:
    if isinstance(source, (bytes, memoryview)):
        return source
    out = bytearray(len(source))
    source.copy_into(0, memoryview(out))
    return memoryview(out)


def opening_sink(inner: Sink, open_store: Callable[[], ObjectStore]) -> OpeningSink:
    """The sink's opening view: one that takes whole files for a sink that does."""
    if isinstance(inner, FileSink):
        return OpeningFileSink(inner, open_store)
    return OpeningSink(inner, open_store)


def forgotten_in_scope(store: ObjectStore, collections: Iterable[str] | None,
                       tenants: Iterable[str] | None) -> list[dict[str, Any]]:
    """The erasures (``vecwal forget``) a restore of this scope leaves out."""
    colls = set(collections) if collections is not None else None
    wanted = set(tenants) if tenants is not None else None
    return [e for e in TenantKeys.of(store).erasures()
            if (colls is None or e["collection"] in colls)
            and (wanted is None or e["tenant"] in wanted)]
