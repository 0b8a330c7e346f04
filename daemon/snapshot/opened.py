"""A data file of a repository with per-tenant keys, opened: the same rows in the same order,
each with its content opened (``daemon.keys.sealing``), a forgotten tenant's rows left out,
and a row index that says so (new lengths, content lengths and content hashes). What a
restore to a directory writes, since the files it would otherwise copy hold sealed content.

With the C sealer a file is opened as it is written (``FileOpener.opening``): one block at a
time is read (from a sealed object, decrypted as it is copied out), its rows opened in one
call that also gives their lengths and content hashes, and handed to the writer, so the
memory a file takes is two blocks' worth (about 4 MB), not the file's size twice, and every
byte is still in the CPU's cache when it is written. The header, which indexes the opened
rows, is written last (``spans.HeadLast``) into room left for it (``OpeningFile``). Without
the C sealer, row by row through the reference (``open``)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import fastavro
import numpy as np

from daemon.avro_container import container_block
from daemon.buffers import ReusedBuffer
from daemon.errors import IntegrityError
from daemon.keys.sealing import TenantSealer, native
from daemon.keys.tenants import TenantForgotten
from daemon.rows import SNAPSHOT_SCHEMA, Row
from daemon.snapshot.datafile import SYNC, DataFileWriter, EncodedFile, SourceFile, file_header
from daemon.snapshot.rowindex import IndexColumns, RowIndex
from daemon.snapshot.written import WrittenState
from daemon.spans import HeadLast, Piece, RangeSource, Span

BATCH_BYTES = 1 << 20
"""Rows opened together for a sink that takes records: large enough that one C call covers
hundreds of rows, small enough to stay in the CPU's cache."""


class FileOpener:
    """Opens data files with one repository's tenant keys, keeping the keys it looked up and
    the two block-sized buffers it opens into."""

    def __init__(self, sealer: TenantSealer) -> None:
        self.sealer = sealer
        self._native = native()
        self._keys: dict[bytes, bytes | None] = {}
        self._block = ReusedBuffer()
        self._into = ReusedBuffer()

    @property
    def native(self) -> bool:
        """Whether files are opened as they are written (the C sealer), not whole."""
        return self._native is not None

    def _resolve(self, key_id: bytes, collection: bytes, tenant: bytes) -> bytes | None:
        try:
            return self.sealer.keys.key(collection.decode(), tenant.decode(), key_id).siv
        except TenantForgotten:
            return None

    def opening(self, data: bytes | memoryview | RangeSource, where: str,
                codec: str = "null") -> OpeningFile:
        """``data``, a data file, to be opened as it is written (the C sealer only). One
        file at a time: its buffers are the opener's."""
        if self._native is None:
            raise RuntimeError("opening as written needs the C sealer (daemon.native)")
        return OpeningFile(self, SourceFile(data, where), codec)

    def open(self, data: bytes | memoryview, where: str, codec: str = "null") -> EncodedFile:
        """The file opened, whole in memory (what ``opening`` writes, gathered)."""
        if self._native is None:
            return self._open_rows(SourceFile(data, where), codec)
        opening = self.opening(data, where, codec)
        body = [bytes(p) if not isinstance(p, Span) else p for p in opening.file.body]
        head = opening.file.head() or b""  # no live record: the caller writes no file
        state = opening.state()
        return EncodedFile([head, *body], opening.rows, state.records, state.digest,
                           state.tenants, len(head))

    def records(self, rows: Iterable[Row], where: str) -> Iterator[dict[str, Any]]:
        """``rows`` (a bucket's, merged: live rows with their bytes) as records with their
        content opened, a forgotten tenant's left out: what a sink that takes records gets.
        With the C sealer the rows are opened a batch at a time (``BATCH_BYTES``, copied
        together into the opener's buffer, opened in one call) and each opened row decoded as
        a plain one; without it, each through the reference."""
        if self._native is None:
            yield from self.sealer.open_all(row.record() for row in rows)
            return
        batch: list[bytes | memoryview] = []
        size = 0
        for row in rows:
            if row.raw is None:
                raise ValueError(f"{where}: an index-only row has no content to open")
            batch.append(row.raw)
            size += len(row.raw)
            if size >= BATCH_BYTES:
                yield from self._open_batch(batch, size, where)
                batch, size = [], 0
        if batch:
            yield from self._open_batch(batch, size, where)

    def _open_batch(self, raws: list[bytes | memoryview], size: int, where: str
                    ) -> Iterator[dict[str, Any]]:
        op = self._native
        assert op is not None
        view, at = self._block.view(size), 0
        for raw in raws:
            view[at:at + len(raw)] = raw
            at += len(raw)
        into = self._into.view(size)  # opened rows take less
        try:
            used, lengths, _, _, _ = op.open_rows(view, into, self._keys, self._resolve)
        except ValueError as exc:
            raise IntegrityError(f"{where}: a row does not open: {exc}",
                                 "the file was changed; restore from another snapshot") from None
        at = 0
        for n in np.frombuffer(lengths, "<u4").tolist():
            yield fastavro.schemaless_reader(  # type: ignore[misc]
                io.BytesIO(into[at:at + n]), SNAPSHOT_SCHEMA, None)
            at += n
        assert at == used

    def _open_rows(self, src: SourceFile, codec: str) -> EncodedFile:
        """The reference: each row decoded, opened and encoded again."""
        out = DataFileWriter(codec)
        for row in src.index.rows_with(src.raws()):
            try:
                out.add(Row.of(self.sealer.open(row.record())))
            except TenantForgotten:
                continue
        return out.finish()


class OpeningFile:
    """One data file being opened: ``file`` for the writer (its body opened block by block
    as it is written, its header last), then ``state()``. ``records`` (live rows, before any
    is found to be a forgotten key's) is known before: a file with none need not be written.

    The header's room is what it takes with every row kept (a row's index entry has a fixed
    width). Rows sealed under a destroyed key are found only as their block is opened (a
    tenant forgotten and written to again has rows under its new key); their header is
    shorter, and a padding entry in its metadata fills the room (``file_header``)."""

    def __init__(self, opener: FileOpener, src: SourceFile, codec: str) -> None:
        self._opener, self._src, self._codec = opener, src, codec
        self._where = src.where
        index = src.index
        self._keep = np.ones(len(index), dtype=bool)
        self._blocks: list[int] = []
        self.records = int((~index.deleted.astype(bool)).sum())
        self._lengths: list[bytes] = []
        self._content_lens: list[bytes] = []
        self._hashes: list[bytes] = []
        self._columns: IndexColumns | None = None
        n = len(index)
        room = file_header(_opened_columns(index, self._keep, bytes(4 * n), bytes(4 * n),
                                           bytes(16 * n)), index.blocks, codec)
        self.file = HeadLast(len(room), self._body(), self._head)

    def _body(self) -> Iterator[Piece]:
        """Each block, opened into the opener's buffer: written (the caller takes the next
        piece only then) before the next block is opened into it."""
        opener, starts = self._opener, self._src.index.block_starts
        op = opener._native
        assert op is not None
        for k, block in enumerate(self._src.iter_blocks()):
            n = len(block)
            if isinstance(block, Span):
                view = opener._block.view(n)
                block.copy_into(0, view)
            else:
                view = memoryview(block)
            into = opener._into.view(n)  # opened rows take less
            first = starts[k]
            try:
                used, lens, clens, digests, gone = op.open_rows(view, into, opener._keys,
                                                                opener._resolve)
            except ValueError as exc:
                raise IntegrityError(f"{self._where}: a row of the block at row {first}: {exc}",
                                     "the file was changed; restore from another snapshot"
                                     ) from None
            for g in gone:
                self._keep[first + g] = False
            kept = starts[k + 1] - first - len(gone)
            if not kept:
                continue  # every row under a destroyed key
            self._blocks.append(kept)
            self._lengths.append(lens)
            self._content_lens.append(clens)
            self._hashes.append(digests)
            yield from container_block([into[:used]], kept, used, self._codec, SYNC)

    def _head(self) -> bytes | None:
        """The header, or None when no live record is left (no file, as for any bucket
        without records)."""
        self._columns = _opened_columns(
            self._src.index, self._keep, b"".join(self._lengths), b"".join(self._content_lens),
            b"".join(self._hashes))
        if not self._columns.summary()[0]:
            return None
        return file_header(self._columns, self._blocks, self._codec, size=self.file.head_size)

    @property
    def rows(self) -> int:
        """Rows kept (tombstones included); once the file is written."""
        return int(self._keep.sum())

    def state(self) -> WrittenState:
        """What the written file holds; once it is written."""
        if self._columns is None:
            raise RuntimeError(f"{self._where}: the opened file's state before it was written")
        return WrittenState(*self._columns.summary())


def _opened_columns(index: RowIndex, keep: np.ndarray, lengths: bytes, content_lens: bytes,
                    hashes: bytes) -> IndexColumns:
    columns = {name: getattr(index, name)[keep] for name in
               ("ts", "offsets", "partitions", "topic_ix", "tenant_ix", "deleted")}
    columns.update(lengths=np.frombuffer(lengths, "<u4"),
                   content_lens=np.frombuffer(content_lens, "<u4"),
                   hashes=np.frombuffer(hashes, "<u4").reshape(-1, 4))
    if keep.all():
        return IndexColumns(index.ids, list(index.tenants), list(index.topics), columns)
    ids = np.asarray(index.ids, dtype=object)[keep].tolist()
    # a forgotten tenant leaves no name behind: the tenant table holds those with rows
    used, columns["tenant_ix"] = np.unique(columns["tenant_ix"], return_inverse=True)
    columns["tenant_ix"] = columns["tenant_ix"].astype("<u4")
    return IndexColumns(ids, [index.tenants[t] for t in used.tolist()], list(index.topics),
                        columns)
