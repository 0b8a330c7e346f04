"""Snapshot data files: Avro object container files of ``schemas/snapshot_record.avsc``, one
per collection bucket (a *base*) or per bucket and compaction (a *delta*), sorted by
(tenant, id), each carrying a row index in its header, and the order-independent state digest
that proves a rebuilt state.

The index (header metadata ``vecwal.index`` and ``vecwal.index.bin``; docs/format.md) gives,
for every record in file order: tenant, id, version, its byte length, the length of its
*content* (every field before the version fields, which the schema puts last), the 128-bit
content hash, and whether the row is a tombstone (deltas only). With it:

- compaction folds changes into a bucket from the header alone (a ranged read), without
  decoding a record;
- restore copies every record the log did not change as raw bytes, decoding nothing;
- validation re-hashes each record's content bytes, which is what the digest is made of.

Any Avro reader reads the records (the index is metadata it ignores); tombstone rows are
meaningful only with the index, and appear only in delta files, which are internal.
"""

from __future__ import annotations

import bisect
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import fastavro

from daemon.avro_container import MAGIC, compress, decompress, long_len
from daemon.avro_container import container_block as _block
from daemon.avro_container import container_header as _header
from daemon.avro_long import avro_long
from daemon.errors import IntegrityError
from daemon.rows import SCHEMA_TEXT, SNAPSHOT_SCHEMA, Key, Row
from daemon.snapshot import rowindex
from daemon.snapshot.rowindex import IndexColumns, RowIndex, RowIndexBuilder, decode_index
from daemon.spans import Piece, RangeSource, Span, copy_pieces, piece_length

SYNC = b"vecwal-snapshot!"
BLOCK_RECORDS = 1024


CONTENT_HASH = rowindex.CONTENT_HASH
"""The content hash of every record (docs/format.md): fast enough that validation re-hashes
every restored byte at memory speed (about 0.2 µs for a 3.4 KB record; blake2b took 4.6)."""


@dataclass(frozen=True)
class EncodedFile:
    chunks: list[Piece]
    """The file's bytes in pieces (header, then each block's), to write without joining;
    spans (``daemon.spans``) are copied out when written."""
    rows: int
    """Rows in the file, tombstones included."""
    records: int
    """Live records (rows that are not tombstones)."""
    digest: str
    tenants: dict[str, int]
    header_bytes: int

    @cached_property
    def data(self) -> bytes:
        out = bytearray(self.size)
        copy_pieces(self.chunks, memoryview(out))
        return bytes(out)

    @property
    def size(self) -> int:
        return sum(piece_length(c) for c in self.chunks)


# -- writing -------------------------------------------------------------------------------
class DataFileWriter:
    """Writes one data file from rows (``add``: their bytes as they are, and their index
    entries), or from pieces of rows' bytes (``put``: slices of another file's blocks, say)
    with the index given to ``finish`` (``snapshot.runs``). Rows must come sorted by key;
    blocks hold about ``BLOCK_RECORDS`` rows."""

    def __init__(self, codec: str = "null") -> None:
        compress(b"", codec)  # an unknown codec fails before any work
        self.codec = codec
        self.index = RowIndexBuilder()
        self._chunks: list[Piece] = []
        self._blocks: list[int] = []
        self._pending: list[Piece] = []
        self._pending_rows = 0
        self._pending_size = 0

    def add(self, row: Row) -> None:
        raw = row.raw
        assert raw is not None, "an index-only row cannot be written"
        self.index.add(row, len(raw))
        self.put(raw, 1)

    def put(self, data: Piece, count: int) -> None:
        """``count`` rows' bytes, without their index entries: for a caller that builds the
        index itself and gives it to ``finish``."""
        self._pending.append(data)
        self._pending_size += len(data)
        self._pending_rows += count
        if self._pending_rows >= BLOCK_RECORDS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        self._chunks += _block(self._pending, self._pending_rows, self._pending_size,
                               self.codec, SYNC)
        self._blocks.append(self._pending_rows)
        self._pending.clear()
        self._pending_rows = self._pending_size = 0

    def finish(self, index: IndexColumns | None = None) -> EncodedFile:
        """The file; ``index`` is the rows' index when they came by ``put``."""
        self._flush()
        built = index if index is not None else self.index.build()
        if len(built) != sum(self._blocks):
            raise ValueError(f"the index has {len(built)} rows, the blocks {sum(self._blocks)}")
        records, digest, tenants = built.summary()
        header = file_header(built, self._blocks, self.codec)
        return EncodedFile([header, *self._chunks], len(built), records, digest, tenants,
                           len(header))


PAD_KEY = "vecwal.pad"
"""The metadata entry that fills a header to the size it was given room for (its value is
spaces; readers ignore it)."""


def file_header(index: IndexColumns, blocks: list[int], codec: str,
                size: int | None = None) -> bytes:
    """A data file's header: its schema, codec and row index (``blocks``: rows per block);
    ``size`` bytes exactly when given (a padding entry makes up the difference, which must
    be 0 or at least ``len(PAD_KEY) + 3``)."""
    meta = {"avro.schema": SCHEMA_TEXT.encode(), "avro.codec": codec.encode(),
            **index.encode(blocks)}
    header = _header(meta, SYNC)
    if size is None or size == len(header):
        return header
    gap = size - len(header)
    for key in (PAD_KEY, PAD_KEY + "_"):  # a longer key for a gap no value length fits
        entry = long_len(len(key)) + len(key)
        for width in range(1, 6):
            n = gap - entry - width
            if n >= 0 and long_len(n) == width:
                padded = _header({**meta, key: b" " * n}, SYNC)
                if len(padded) == size:
                    return padded
    raise ValueError(f"a header of {len(header)} bytes cannot be padded to {size}")


def encode_rows(rows: Iterable[Row | dict[str, Any]], codec: str = "null") -> EncodedFile:
    """Write (already sorted) rows as one data file; dicts are encoded, rows copied as bytes."""
    out = DataFileWriter(codec)
    add = out.add
    for item in rows:
        add(item if type(item) is Row else Row.of(item))  # type: ignore[arg-type]
    return out.finish()


def encode_records(records: Iterable[dict[str, Any]], codec: str = "null") -> EncodedFile:
    """Encode (already sorted) record dicts; counts, per-tenant counts and digest come along."""
    return encode_rows(records, codec)


# -- reading -------------------------------------------------------------------------------
class _Cursor:
    def __init__(self, data: bytes | memoryview, where: str) -> None:
        self.data, self.pos, self.where = memoryview(data), 0, where

    def long(self) -> int:
        shift = z = 0
        while True:
            if self.pos >= len(self.data):
                raise _Short()
            b = self.data[self.pos]
            self.pos += 1
            z |= (b & 0x7F) << shift
            if b < 0x80:
                return (z >> 1) ^ -(z & 1)
            shift += 7

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise _Short()
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def block(self, n: int, codec: str) -> bytes | memoryview:
        return decompress(self.take(n), codec)


class _Short(Exception):
    """The bytes end before the structure does."""


def read_index(data: bytes | memoryview, where: str) -> RowIndex:
    """Parse a data file's header (``data`` may be only its first ``header_bytes``)."""
    try:
        return _parse_index(data, where)
    except _Short:
        raise IntegrityError(f"{where} ends inside its header", "the file is truncated") from None


def read_index_from(source: RangeSource, where: str, first: int = 1 << 20) -> RowIndex:
    """``read_index`` of a file whose bytes come from ``source`` (its header is read in
    growing prefixes)."""
    n = first
    while True:
        try:
            return _parse_index(source.read(0, n), where)
        except _Short:
            if n >= len(source):
                raise IntegrityError(f"{where} ends inside its header",
                                     "the file is truncated") from None
            n *= 4


def _parse_index(data: bytes | memoryview, where: str) -> RowIndex:
    cur = _Cursor(data, where)
    if bytes(cur.take(4)) != MAGIC:
        raise IntegrityError(f"{where} is not an Avro file", "run `vecwal verify --deep`")
    meta: dict[str, bytes] = {}
    while True:
        n = cur.long()
        if n == 0:
            break
        if n < 0:
            cur.long()
            n = -n
        for _ in range(n):
            k = bytes(cur.take(cur.long())).decode()
            meta[k] = bytes(cur.take(cur.long()))
    if bytes(cur.take(16)) != SYNC:
        raise IntegrityError(f"{where} has a foreign sync marker", "not a vecwal data file")
    return decode_index(meta, meta.get("avro.codec", b"null").decode(), cur.pos, where)


class _SourceCursor:
    """``_Cursor`` over a ``RangeSource``: framing read in small pieces; a block of the null
    codec taken as a span (copied out only when written)."""

    def __init__(self, source: RangeSource, pos: int) -> None:
        self.source, self.pos = source, pos

    def long(self) -> int:
        head = self.source.read(self.pos, 10)
        cur = _Cursor(head, "")
        n = cur.long()
        self.pos += cur.pos
        return n

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.source):
            raise _Short()
        out = self.source.read(self.pos, n)
        self.pos += n
        return out

    def block(self, n: int, codec: str) -> bytes | memoryview | Span:
        if codec != "null":
            return decompress(self.take(n), codec)
        if n < 0 or self.pos + n > len(self.source):
            raise _Short()
        self.pos += n
        return Span(self.source, self.pos - n, n)


class SourceFile:
    """A data file's bytes with its index, read block by block: every block's framing (row
    count, byte size, sync marker) is checked against the index before any row is taken.
    ``data`` may be a ``RangeSource`` (an encrypted file opened as it is copied out): its
    blocks are then spans, for ``pieces`` (``snapshot.runs``), not ``raws``."""

    def __init__(self, data: bytes | memoryview | RangeSource, where: str,
                 index: RowIndex | None = None) -> None:
        self.data: memoryview | RangeSource = \
            memoryview(data) if isinstance(data, (bytes, memoryview)) else data
        self.where = where
        if index is None:
            index = read_index(self.data, where) if isinstance(self.data, memoryview) else \
                read_index_from(self.data, where)
        self.index = index
        self._blocks: list[bytes | memoryview | Span] | None = None

    @property
    def blocks(self) -> list[bytes | memoryview | Span]:
        """Each block's (decompressed) record bytes."""
        if self._blocks is None:
            self._blocks = list(self._read_blocks())
        return self._blocks

    def iter_blocks(self) -> Iterator[bytes | memoryview | Span]:
        """Each block as ``blocks`` has them, read as they are asked for and not kept."""
        return iter(self._blocks) if self._blocks is not None else self._read_blocks()

    def _read_blocks(self) -> Iterator[bytes | memoryview | Span]:
        index, where = self.index, self.where
        cur: _Cursor | _SourceCursor = _Cursor(self.data, where) \
            if isinstance(self.data, memoryview) else _SourceCursor(self.data, 0)
        cur.pos = index.header_bytes
        starts, ends = index.block_starts, index.row_ends
        try:
            for k, count in enumerate(index.blocks):
                if cur.long() != count:
                    raise IntegrityError(f"{where}: a block's record count disagrees with the "
                                         "index", "the file is damaged; restore from another "
                                         "snapshot")
                block = cur.block(cur.long(), index.codec)
                if bytes(cur.take(16)) != SYNC:
                    raise IntegrityError(f"{where}: bad sync marker", "the file is damaged")
                first, last = starts[k], starts[k + 1]
                want = (int(ends[last - 1]) if last else 0) - (int(ends[first - 1]) if first else 0)
                if len(block) != want:
                    raise IntegrityError(f"{where}: a block's size disagrees with the index",
                                         "the file is damaged; restore from another snapshot")
                yield block
        except _Short:
            raise IntegrityError(f"{where} ends inside a block", "the file is truncated") from None

    def pieces(self, a: int, b: int) -> Iterator[tuple[memoryview | Span, int]]:
        """Rows [a, b) as byte slices (spans of a ``RangeSource``), one per block they span,
        with their row counts."""
        starts, ends, blocks = self.index.block_starts, self.index.row_ends, self.blocks
        k = bisect.bisect_right(starts, a) - 1
        while a < b:
            first, last = starts[k], starts[k + 1]
            hi = min(b, last)
            base = int(ends[first - 1]) if first else 0
            lo = (int(ends[a - 1]) if a else 0) - base
            block = blocks[k]
            view = block if isinstance(block, Span) else memoryview(block)
            yield view[lo:int(ends[hi - 1]) - base], hi - a
            a = hi
            k += 1

    def raws(self) -> list[memoryview]:
        """Every row's bytes, in file order."""
        out: list[memoryview] = []
        starts, ends = self.index.block_starts, self.index.row_ends.tolist()
        for k, block in enumerate(self.blocks):
            if isinstance(block, Span):
                raise TypeError(f"{self.where}: rows of a file opened as it is copied out")
            view = memoryview(block)
            first, last = starts[k], starts[k + 1]
            base = ends[first - 1] if first else 0
            lo = 0
            for j in range(first, last):
                hi = ends[j] - base
                out.append(view[lo:hi])
                lo = hi
        return out


def read_rows(data: bytes | memoryview, where: str, index: RowIndex | None = None
              ) -> Iterator[Row]:
    """Every row of a data file with its bytes (sliced, not copied, from ``data``)."""
    src = SourceFile(data, where, index)
    return src.index.rows_with(src.raws())


def rows_at(data: bytes | memoryview, where: str, keys: set[Key]) -> list[Row]:
    """The rows of a data file whose key is in ``keys``, in file order, found by its row index
    and sliced out of their blocks; nothing else is read row by row."""
    src = SourceFile(data, where)
    wanted = sorted(pos for pos, found in map(src.index.find, keys) if found)
    return [src.index.row(j, _bytes_of(next(src.pieces(j, j + 1))[0])) for j in wanted]


def _bytes_of(piece: memoryview | Span) -> memoryview:
    if isinstance(piece, Span):
        raise TypeError("rows of a file opened as it is copied out")
    return piece


def decode_records(data: bytes, where: str) -> Iterator[dict[str, Any]]:
    """Decode every record with a plain Avro reader (tools, tests, and the oracle do)."""
    try:
        reader = fastavro.reader(io.BytesIO(data), SNAPSHOT_SCHEMA)
    except Exception as exc:
        raise IntegrityError(f"{where} is not a readable snapshot file: {exc}",
                             "run `vecwal verify --deep`; restore from an older snapshot") from None
    records: Iterator[dict[str, Any]] = iter(reader)  # type: ignore[arg-type]
    return records


def key_prefix(collection: str, tenant: str, record_id: str) -> bytes:
    """How every record of this key begins: its collection, tenant and id fields, encoded."""
    out = b""
    for s in (collection, tenant, record_id):
        b = s.encode()
        out += avro_long(len(b)) + b
    return out


def leading_strings(raw: bytes | memoryview, n: int) -> list[str]:
    """The first ``n`` string fields of a record's bytes (collection, tenant, id)."""
    cur = _Cursor(raw, "record")
    return [bytes(cur.take(cur.long())).decode() for _ in range(n)]
