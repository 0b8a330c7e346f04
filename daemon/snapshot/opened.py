"""A data file of a repository with per-tenant keys, opened: the same rows in the same order,
each with its content opened (``daemon.keys.sealing``), a forgotten tenant's rows left out,
and a row index that says so (new lengths, content lengths and content hashes). What a
restore to a directory writes, since the files it would otherwise copy hold sealed content.

With the C sealer each block's rows are opened in one call, which also gives their lengths and
content hashes, with no Python object per row; without it, row by row through the reference."""

from __future__ import annotations

import numpy as np

from daemon.buffers import ReusedBuffer
from daemon.errors import IntegrityError
from daemon.keys.sealing import TenantSealer, native
from daemon.keys.tenants import TenantForgotten
from daemon.snapshot.datafile import DataFileWriter, EncodedFile, Row, SourceFile
from daemon.snapshot.rowindex import IndexColumns, RowIndex


class FileOpener:
    """Opens data files with one repository's tenant keys, keeping the keys it looked up."""

    def __init__(self, sealer: TenantSealer) -> None:
        self.sealer = sealer
        self._native = native()
        self._keys: dict[bytes, bytes | None] = {}
        self._into = ReusedBuffer()

    def _resolve(self, key_id: bytes, collection: bytes, tenant: bytes) -> bytes | None:
        try:
            return self.sealer.keys.key(collection.decode(), tenant.decode(), key_id).siv
        except TenantForgotten:
            return None

    def open(self, data: bytes | memoryview, where: str, codec: str = "null") -> EncodedFile:
        """The file opened. With the C sealer its rows are views of a buffer this opener
        keeps from file to file (new memory for every file costs a page fault per 4 KB):
        write the file out before opening the next."""
        src = SourceFile(data, where)
        if self._native is None:
            return self._open_rows(src, codec)
        index = src.index
        keep = np.ones(len(index), dtype=bool)
        lengths, content_lens, hashes = [], [], []
        out = DataFileWriter(codec)
        into, at = self._into.view(memoryview(data).nbytes), 0  # opened rows take less
        for first, block in zip(index.block_starts, src.blocks, strict=False):
            try:
                used, lens, clens, digests, gone = self._native.open_rows(
                    block, into[at:], self._keys, self._resolve)
            except ValueError as exc:
                raise IntegrityError(f"{where}: a row of the block at row {first}: {exc}",
                                     "the file was changed; restore from another snapshot"
                                     ) from None
            for g in gone:
                keep[first + g] = False
            lengths.append(lens)
            content_lens.append(clens)
            hashes.append(digests)
            out.put(into[at:at + used], len(lens) // 4)
            at += used
        return out.finish(_opened_columns(index, keep, b"".join(lengths),
                                          b"".join(content_lens), b"".join(hashes)))

    def _open_rows(self, src: SourceFile, codec: str) -> EncodedFile:
        """The reference: each row decoded, opened and encoded again."""
        out = DataFileWriter(codec)
        for row in src.index.rows_with(src.raws()):
            try:
                out.add(Row.of(self.sealer.open(row.record())))
            except TenantForgotten:
                continue
        return out.finish()


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
