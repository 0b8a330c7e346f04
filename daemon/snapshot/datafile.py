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

import base64
import hashlib
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from typing import Any

import fastavro
import numpy as np
import orjson

from daemon.errors import IntegrityError
from daemon.schemas_loader import load_schema

SNAPSHOT_SCHEMA = load_schema("snapshot_record.avsc")
DIGEST_MOD = 1 << 128
MAGIC = b"Obj\x01"
SYNC = b"vecwal-snapshot!"
BLOCK_RECORDS = 1024
INDEX_KEY = "vecwal.index"
INDEX_BIN_KEY = "vecwal.index.bin"
INDEX_FORMAT = 1
VERSION_FIELDS = ("last_offset", "last_timestamp", "last_partition", "last_topic")


def _schema_text() -> str:
    text = resources.files("daemon").joinpath("schemas", "snapshot_record.avsc").read_text("utf-8")
    raw = json.loads(text)
    # Row.of and the content hash rely on it: the version is the record's tail.
    assert tuple(f["name"] for f in raw["fields"][-4:]) == VERSION_FIELDS, "version fields last"
    return json.dumps(raw, separators=(",", ":"))


SCHEMA_TEXT = _schema_text()
CONTENT_SCHEMA = fastavro.parse_schema({
    "type": "record", "name": "Content", "namespace": "io.vecwal.internal",
    "fields": json.loads(SCHEMA_TEXT)["fields"][:-len(VERSION_FIELDS)]})
"""Every field but the version: what a record's content hash is taken over."""

Key = tuple[str, str]
Version = tuple[int, str, int, int]


def bucket_of(tenant: str, record_id: str, buckets: int) -> int:
    """Stable across processes and versions (not Python's salted hash)."""
    h = hashlib.blake2b(f"{tenant}\x00{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") % buckets


def content_hash(content: bytes | memoryview) -> int:
    return int.from_bytes(hashlib.blake2b(content, digest_size=16).digest(), "little")


class Row:
    """One record of a data file: its key and version, and either its Avro bytes (``raw``,
    ``content_len`` of them content) or only the index entry (``raw`` is None). ``rec`` keeps
    the decoded dict when the row was made from one."""

    __slots__ = ("content_len", "deleted", "hash", "key", "raw", "rec", "version")

    def __init__(self, key: Key, version: Version, raw: bytes | memoryview | None,
                 content_len: int, hash_: int, deleted: bool,
                 rec: dict[str, Any] | None = None) -> None:
        self.key, self.version, self.raw = key, version, raw
        self.content_len, self.hash, self.deleted, self.rec = content_len, hash_, deleted, rec

    @classmethod
    def of(cls, rec: dict[str, Any]) -> Row:
        """Encode a record dict (a ``deleted`` key marks a tombstone)."""
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, SNAPSHOT_SCHEMA, rec)
        raw = buf.getvalue()
        version = (rec["last_timestamp"], rec["last_topic"], rec["last_partition"],
                   rec["last_offset"])
        # The version fields come last: their encoded length, from their values.
        topic_len = len(rec["last_topic"].encode())
        content_len = len(raw) - (_long_len(rec["last_offset"]) + _long_len(version[0])
                                  + _long_len(version[2]) + _long_len(topic_len) + topic_len)
        return cls((rec["tenant"], rec["id"]), version, raw, content_len,
                   content_hash(raw[:content_len]), bool(rec.get("deleted")), rec)

    @property
    def tenant(self) -> str:
        return self.key[0]

    def without_record(self) -> Row:
        """This row without its decoded dict: lighter to keep and to send to a process."""
        self.rec = None
        return self

    def record(self) -> dict[str, Any]:
        """The record as a dict (decoded from ``raw`` when not kept)."""
        if self.rec is None:
            if self.raw is None:
                raise ValueError("an index-only row has no record")
            rec: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
                io.BytesIO(self.raw), SNAPSHOT_SCHEMA, None)
            self.rec = rec
        return self.rec


def record_hash(rec: dict[str, Any]) -> int:
    """Hash of a record's content (every field but the version): what restore must
    reproduce. It is the blake2b of the content's Avro encoding, so a copied record is
    checked by hashing its bytes, without decoding them. ``rec`` needs no version fields."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, CONTENT_SCHEMA, rec)
    return content_hash(buf.getbuffer())


@dataclass
class StateDigest:
    """Sum of record hashes modulo 2^128: independent of order, so any two ways of building
    the same state (compaction, restore, a re-read of the output) give the same value."""

    value: int = 0
    count: int = 0

    def add(self, rec: dict[str, Any]) -> None:
        self.add_hash(record_hash(rec))

    def add_hash(self, h: int) -> None:
        self.value = (self.value + h) % DIGEST_MOD
        self.count += 1

    def merge(self, other: StateDigest) -> None:
        self.value = (self.value + other.value) % DIGEST_MOD
        self.count += other.count

    @property
    def hex(self) -> str:
        return f"{self.value:032x}"


@dataclass
class RowSummary:
    """Counts, per-tenant counts and digest of the live (non-tombstone) rows of a stream."""

    rows: int = 0
    digest: StateDigest = field(default_factory=StateDigest)
    tenants: dict[str, int] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows += 1
        if not row.deleted:
            self.digest.add_hash(row.hash)
            self.tenants[row.key[0]] = self.tenants.get(row.key[0], 0) + 1

    @property
    def records(self) -> int:
        return self.digest.count


@dataclass(frozen=True)
class EncodedFile:
    chunks: list[bytes | memoryview]
    """The file's bytes in pieces (header, then each block's), to write without joining."""
    rows: int
    """Rows in the file, tombstones included."""
    records: int
    """Live records (rows that are not tombstones)."""
    digest: str
    tenants: dict[str, int]
    header_bytes: int

    @cached_property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)


# -- writing -------------------------------------------------------------------------------
def encode_rows(rows: Iterable[Row | dict[str, Any]], codec: str = "null") -> EncodedFile:
    """Write (already sorted) rows as one data file; dicts are encoded, rows copied as bytes.
    The hot loop of restore and compaction: one pass, no per-row call it can avoid."""
    keys: list[tuple[str, str, int, str, int, int]] = []
    lengths: list[int] = []
    content_lens: list[int] = []
    hashes = bytearray()
    deleted: list[int] = []
    chunks: list[bytes | memoryview] = []
    block_counts: list[int] = []
    pending: list[bytes | memoryview] = []
    digest = live = 0
    tenants: dict[str, int] = {}

    def flush() -> None:
        data = _compress(b"".join(pending), codec)
        chunks.extend((_long(len(pending)) + _long(len(data)), data, SYNC))
        block_counts.append(len(pending))
        pending.clear()

    for item in rows:
        row = item if type(item) is Row else Row.of(item)  # type: ignore[arg-type]
        raw = row.raw
        assert raw is not None, "an index-only row cannot be written"
        tenant, rid = row.key
        h = row.hash
        if row.deleted:
            deleted.append(len(keys))
        else:
            digest += h
            live += 1
            tenants[tenant] = tenants.get(tenant, 0) + 1
        keys.append((tenant, rid, *row.version))
        lengths.append(len(raw))
        content_lens.append(row.content_len)
        hashes += h.to_bytes(16, "little")
        pending.append(raw)
        if len(pending) == BLOCK_RECORDS:
            flush()
    if pending:
        flush()
    index = orjson.dumps({"format": INDEX_FORMAT, "blocks": block_counts, "rows": keys,
                          "deleted": deleted})
    # Base64: Avro readers (fastavro among them) decode header values as UTF-8 text.
    binary = base64.b64encode(np.asarray(lengths, dtype="<u4").tobytes()
                              + np.asarray(content_lens, dtype="<u4").tobytes() + bytes(hashes))
    header = _header({"avro.schema": SCHEMA_TEXT.encode(), "avro.codec": codec.encode(),
                      INDEX_KEY: index, INDEX_BIN_KEY: binary})
    return EncodedFile([header, *chunks], len(keys), live, f"{digest % DIGEST_MOD:032x}",
                       dict(sorted(tenants.items())), len(header))


def encode_records(records: Iterable[dict[str, Any]], codec: str = "null") -> EncodedFile:
    """Encode (already sorted) record dicts; counts, per-tenant counts and digest come along."""
    return encode_rows(records, codec)


def _header(meta: dict[str, bytes]) -> bytes:
    out = bytearray(MAGIC)
    out += _long(len(meta))
    for k, v in meta.items():
        kb = k.encode()
        out += _long(len(kb)) + kb + _long(len(v)) + v
    out += _long(0) + SYNC
    return bytes(out)


def _long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _long_len(n: int) -> int:
    """Bytes of ``n`` as an Avro (zigzag varint) long."""
    z = (n << 1) ^ (n >> 63)
    return max(1, (z.bit_length() + 6) // 7)


def _compress(data: bytes, codec: str) -> bytes:
    if codec == "null":
        return data
    if codec == "deflate":
        c = zlib.compressobj(wbits=-15)
        return c.compress(data) + c.flush()
    if codec == "zstandard":
        return _zstd().compress(data)  # type: ignore[no-any-return]
    raise ValueError(f"unknown codec {codec!r}")


def _decompress(data: bytes | memoryview, codec: str) -> bytes | memoryview:
    if codec == "null":
        return data
    if codec == "deflate":
        return zlib.decompress(data, wbits=-15)
    if codec == "zstandard":
        return _zstd().decompress(data)  # type: ignore[no-any-return]
    raise IntegrityError(f"unknown codec {codec!r}", "use the vecwal version that wrote the file")


@cache
def _zstd() -> Any:
    """The zstd module (looked up once: a failed import searches the path every time)."""
    import importlib

    try:
        return importlib.import_module("compression.zstd")
    except ImportError:
        return importlib.import_module("backports.zstd")


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


class _Short(Exception):
    """The bytes end before the structure does."""


@dataclass
class DataFileIndex:
    """A data file's header: codec, where the blocks start, and its row index."""

    codec: str
    header_bytes: int
    blocks: list[int]
    keys: list[list[Any]]
    lengths: np.ndarray
    content_lens: np.ndarray
    hashes: bytes
    deleted: frozenset[int]

    def __len__(self) -> int:
        return len(self.keys)

    def row(self, i: int, raw: bytes | memoryview | None = None) -> Row:
        t, rid, ts, topic, partition, offset = self.keys[i]
        return Row((t, rid), (ts, topic, partition, offset), raw, int(self.content_lens[i]),
                   int.from_bytes(self.hashes[16 * i:16 * i + 16], "little"), i in self.deleted)

    def index_rows(self) -> Iterator[Row]:
        """Rows without their bytes: enough to fold changes into a state."""
        return (self.row(i) for i in range(len(self.keys)))


def read_index(data: bytes | memoryview, where: str) -> DataFileIndex:
    """Parse a data file's header (``data`` may be only its first ``header_bytes``)."""
    cur = _Cursor(data, where)
    try:
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
    except _Short:
        raise IntegrityError(f"{where} ends inside its header", "the file is truncated") from None
    if INDEX_KEY not in meta:
        raise IntegrityError(f"{where} has no row index", "not a vecwal data file")
    idx = orjson.loads(meta[INDEX_KEY])
    n = len(idx["rows"])
    binary = base64.b64decode(meta[INDEX_BIN_KEY])
    if idx.get("format") != INDEX_FORMAT or len(binary) != 24 * n:
        raise IntegrityError(f"{where} has an unreadable row index", "run `vecwal verify --deep`")
    return DataFileIndex(meta.get("avro.codec", b"null").decode(), cur.pos, idx["blocks"],
                         idx["rows"], np.frombuffer(binary, "<u4", n, 0),
                         np.frombuffer(binary, "<u4", n, 4 * n), binary[8 * n:],
                         frozenset(idx["deleted"]))


def read_rows(data: bytes, where: str, index: DataFileIndex | None = None) -> Iterator[Row]:
    """Every row of a data file with its bytes (sliced, not copied, from ``data``)."""
    index = index or read_index(data, where)
    cur = _Cursor(data, where)
    cur.pos = index.header_bytes
    i = 0
    ends = np.cumsum(index.lengths, dtype=np.int64).tolist()
    try:
        for count in index.blocks:
            if cur.long() != count:
                raise IntegrityError(f"{where}: a block's record count disagrees with the index",
                                     "the file is damaged; restore from another snapshot")
            block = _decompress(cur.take(cur.long()), index.codec)
            if bytes(cur.take(16)) != SYNC:
                raise IntegrityError(f"{where}: bad sync marker", "the file is damaged")
            view = memoryview(block)
            base = ends[i - 1] if i else 0
            if len(view) != ends[i + count - 1] - base:
                raise IntegrityError(f"{where}: a block's size disagrees with the index",
                                     "the file is damaged; restore from another snapshot")
            start = 0
            for j in range(i, i + count):
                end = ends[j] - base
                yield index.row(j, view[start:end])
                start = end
            i += count
    except _Short:
        raise IntegrityError(f"{where} ends inside a block", "the file is truncated") from None


def rows_at(data: bytes, where: str, keys: set[Key]) -> list[Row]:
    """The rows of a data file whose key is in ``keys``, in file order, found by its row index
    and sliced out of their blocks; nothing else is read row by row."""
    index = read_index(data, where)
    wanted = sorted(i for i, k in enumerate(index.keys) if (k[0], k[1]) in keys)
    if not wanted:
        return []
    ends = np.cumsum(index.lengths, dtype=np.int64)
    out = []
    cur = _Cursor(data, where)
    cur.pos = index.header_bytes
    first = 0  # index of the block's first row
    w = 0
    try:
        for count in index.blocks:
            cur.long()
            size = cur.long()
            start = cur.pos
            cur.take(size + 16)
            last = first + count
            if w < len(wanted) and wanted[w] < last:
                block = memoryview(_decompress(memoryview(data)[start:start + size], index.codec))
                base = int(ends[first - 1]) if first else 0
                while w < len(wanted) and wanted[w] < last:
                    j = wanted[w]
                    lo = (int(ends[j - 1]) if j else 0) - base
                    out.append(index.row(j, block[lo:int(ends[j]) - base]))
                    w += 1
            first = last
    except _Short:
        raise IntegrityError(f"{where} ends inside a block", "the file is truncated") from None
    return out


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
        out += _long(len(b)) + b
    return out


def leading_strings(raw: bytes | memoryview, n: int) -> list[str]:
    """The first ``n`` string fields of a record's bytes (collection, tenant, id)."""
    cur = _Cursor(raw, "record")
    return [bytes(cur.take(cur.long())).decode() for _ in range(n)]
