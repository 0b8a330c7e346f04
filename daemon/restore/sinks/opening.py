"""A sink's view for a repository with per-tenant keys (``daemon.keys.tenants``): every record
is opened with its tenant's key on its way in, and a forgotten tenant's records and settings
are left out. Bucket files and rows are not taken whole (their content is sealed), so the
executor hands this sink records; validation reads back what the sink underneath holds, which
is what was written: the opened records. A sink that takes whole data files
(``OpeningFileSink``, the directory) gets them opened: each bucket file, copied or written by
runs as for a plain repository, has its rows opened block by block (``snapshot.opened``).

Picklable (a restore's worker processes get it with each bucket): each process opens the
tenant keys itself, from ``open_store``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import TenantKeys
from daemon.objectstore import ObjectStore
from daemon.restore.sinks import FileSink, Sink, WrittenState
from daemon.snapshot.opened import FileOpener

_FORWARDED = frozenset({"probe", "cleanup", "close", "progress", "prefix", "notes", "parallel_safe",
                        "load_seconds"})


class OpeningSink:
    def __init__(self, inner: Sink, open_store: Callable[[], ObjectStore]) -> None:
        self.inner = inner
        self.name = inner.name
        self._open_store = open_store
        self._sealer: TenantSealer | None = None
        self._opener: FileOpener | None = None
        self._joined: bytearray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sealer": None, "_opener": None, "_joined": None}

    def __getattr__(self, name: str) -> Any:
        if name in _FORWARDED:
            return getattr(self.inner, name)
        raise AttributeError(name)

    @property
    def sealer(self) -> TenantSealer:
        if self._sealer is None:
            self._sealer = TenantSealer(TenantKeys.of(self._open_store()))
        return self._sealer

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

    def finish(self) -> None:
        self.inner.finish()

    def read_back(self) -> dict[str, WrittenState]:
        return self.inner.read_back()


class OpeningFileSink(OpeningSink):
    """``OpeningSink`` over a sink that takes whole data files."""

    @property
    def codec(self) -> str:
        return str(getattr(self.inner, "codec", "null"))

    def write_file(self, collection: str, bucket: int,
                   data: bytes | Iterable[bytes | memoryview],
                   state: WrittenState) -> WrittenState:
        if self._opener is None:
            self._opener = FileOpener(self.sealer)
        pieces = [data] if isinstance(data, (bytes, memoryview)) else list(data)
        whole = pieces[0] if len(pieces) == 1 else self._join(pieces)
        enc = self._opener.open(whole, f"{collection} bucket {bucket}", self.codec)
        if not enc.records:
            return WrittenState()
        inner: FileSink = self.inner  # type: ignore[assignment]  # opening_sink checked it
        return inner.write_file(collection, bucket, enc.chunks,
                                     WrittenState(enc.records, enc.digest, enc.tenants))


    def _join(self, pieces: list[bytes | memoryview]) -> memoryview:
        """The pieces one after the other, in a buffer kept from bucket to bucket: a new one
        each time would cost a page fault per 4 KB (the file is opened into new bytes, so
        nothing refers to this buffer once write_file returns)."""
        total = sum(memoryview(p).nbytes for p in pieces)
        if self._joined is None or len(self._joined) < total:
            self._joined = bytearray(total)
        view, at = memoryview(self._joined), 0
        for piece in pieces:
            n = memoryview(piece).nbytes
            view[at:at + n] = piece
            at += n
        return view[:total]


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
