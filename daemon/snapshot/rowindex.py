"""The row index of a snapshot data file, held as columns.

A data file's header carries, for every record in file order: tenant, id, version (timestamp,
topic, partition, offset), byte length, content length, 128-bit content hash and whether the
row is a tombstone (docs/format.md). Format 2 stores these as columns: a small JSON object
(``vecwal.index``: block counts, the distinct topics and tenants, the ids) and packed
little-endian arrays (``vecwal.index.bin``, base64 because Avro readers decode header values
as text). Columns are what make the hot paths cheap:

- a restore copies *runs* of unchanged rows: their index entries are array slices, their bytes
  one slice of a block, with no Python object per row (``merged_columns``);
- a row is found by bisecting the ids inside its tenant's range (rows are sorted by
  (tenant, id), so each tenant is one contiguous range);
- digests and per-tenant counts of many rows are sums over arrays (``digest_of``).

Format 1 (a JSON list of rows, blake2b hashes) is not read: only manifests of format 2 name
such files, and those are ignored (``manifest.ManifestFormatError``).
"""

from __future__ import annotations

import base64
import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import orjson

from daemon.errors import IntegrityError
from daemon.rows import DIGEST_MOD

if TYPE_CHECKING:
    from daemon.rows import Key, Row, Version

INDEX_KEY = "vecwal.index"
INDEX_BIN_KEY = "vecwal.index.bin"
INDEX_FORMAT = 2
CONTENT_HASH = "xxh3-128"
"""The hash row indexes hold (``daemon.rows.content_hash``)."""

# (name, dtype, bytes per row), in the order the binary part holds them: 8-byte columns
# first, so that every column starts aligned.
_COLUMNS = (("ts", "<i8", 8), ("offsets", "<i8", 8), ("hashes", "<u4", 16),
            ("lengths", "<u4", 4), ("content_lens", "<u4", 4), ("partitions", "<i4", 4),
            ("topic_ix", "<u4", 4), ("tenant_ix", "<u4", 4), ("deleted", "u1", 1))
_ROW_BYTES = sum(width for _, _, width in _COLUMNS)


@dataclass
class RowIndex:
    """One data file's row index: every column an array of one entry per row."""

    codec: str
    header_bytes: int
    blocks: list[int]
    """Rows in each Avro block, in order."""
    ids: list[str]
    tenants: list[str]
    topics: list[str]
    tenant_ix: np.ndarray
    topic_ix: np.ndarray
    ts: np.ndarray
    offsets: np.ndarray
    partitions: np.ndarray
    lengths: np.ndarray
    content_lens: np.ndarray
    hashes: np.ndarray
    """uint32 x 4 per row: the 128-bit content hash, little-endian words."""
    deleted: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def key(self, i: int) -> Key:
        return (self.tenants[int(self.tenant_ix[i])], self.ids[i])

    def version(self, i: int) -> Version:
        return (int(self.ts[i]), self.topics[int(self.topic_ix[i])], int(self.partitions[i]),
                int(self.offsets[i]))

    def hash(self, i: int) -> int:
        return int.from_bytes(self.hashes[i].tobytes(), "little")

    def row(self, i: int, raw: bytes | memoryview | None = None) -> Row:
        from daemon.rows import Row

        return Row(self.key(i), self.version(i), raw, int(self.content_lens[i]), self.hash(i),
                   bool(self.deleted[i]))

    def index_rows(self) -> Iterator[Row]:
        """Rows without their bytes: enough to fold changes into a state."""
        return self.rows_with(None)

    def rows_with(self, raws: Sequence[bytes | memoryview] | None) -> Iterator[Row]:
        """Every row, with ``raws[i]`` as its bytes (None: index-only rows)."""
        from daemon.rows import Row

        tenants, topics = self.tenants, self.topics
        hashes = self.hashes.tobytes()
        cols = zip(self.tenant_ix.tolist(), self.ids, self.ts.tolist(), self.topic_ix.tolist(),
                   self.partitions.tolist(), self.offsets.tolist(), self.content_lens.tolist(),
                   self.deleted.tolist(), strict=True)
        for i, (t, rid, ts, tp, part, off, clen, dead) in enumerate(cols):
            yield Row((tenants[t], rid), (ts, topics[tp], part, off),
                      raws[i] if raws is not None else None, clen,
                      int.from_bytes(hashes[16 * i:16 * i + 16], "little"), bool(dead))

    @cached_property
    def tenant_ranges(self) -> dict[str, tuple[int, int]]:
        """Each tenant's rows: [lo, hi) (rows are sorted by tenant first)."""
        out: dict[str, tuple[int, int]] = {}
        ix = self.tenant_ix
        if len(ix) == 0:
            return out
        cuts = (np.flatnonzero(ix[1:] != ix[:-1]) + 1).tolist()
        for lo, hi in zip([0, *cuts], [*cuts, len(ix)], strict=True):
            name = self.tenants[int(ix[lo])]
            if name in out:
                raise IntegrityError("a data file's rows are not sorted by tenant",
                                     "the file is damaged; restore from another snapshot")
            out[name] = (lo, hi)
        return out

    def find(self, key: Key) -> tuple[int, bool]:
        """Where ``key`` is or would be (its row number), and whether it is there."""
        tenant, rid = key
        ranges = self.tenant_ranges
        span = ranges.get(tenant)
        if span is None:  # before the first tenant greater than it
            lo = next((a for t, (a, _) in ranges.items() if t > tenant), len(self))
            return lo, False
        lo, hi = span
        pos = bisect.bisect_left(self.ids, rid, lo, hi)
        return pos, pos < hi and self.ids[pos] == rid

    @cached_property
    def row_ends(self) -> np.ndarray:
        """Cumulative byte length of the rows: row i ends ``row_ends[i]`` bytes into the
        file's records (block framing not counted)."""
        return np.cumsum(self.lengths, dtype=np.int64)

    @cached_property
    def block_starts(self) -> list[int]:
        """The row number each block begins with, and the row count at the end."""
        return [0, *np.cumsum(self.blocks, dtype=np.int64).tolist()]


def digest_of(hashes: np.ndarray) -> int:
    """Sum modulo 2^128 of 128-bit hashes held as uint32 x 4 rows (the state digest's rule),
    exact: each word column is summed in 64 bits (safe below 2^32 rows)."""
    if len(hashes) == 0:
        return 0
    sums = hashes.sum(axis=0, dtype=np.uint64).tolist()
    return sum(int(s) << (32 * k) for k, s in enumerate(sums)) % DIGEST_MOD


def tenant_counts(index: RowIndex, live: np.ndarray) -> dict[str, int]:
    """Per-tenant number of rows where ``live`` is True."""
    counts = np.bincount(index.tenant_ix[live], minlength=len(index.tenants)).tolist()
    return {index.tenants[t]: c for t, c in enumerate(counts) if c}


# -- encoding ------------------------------------------------------------------------------
def encode_index(blocks: list[int], ids: list[str], tenants: list[str], topics: list[str],
                 columns: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The header metadata entries of a row index (format 2)."""
    n = len(ids)
    parts = []
    for name, dtype, width in _COLUMNS:
        col = np.ascontiguousarray(columns[name], dtype=dtype)
        if col.nbytes != n * width:
            raise ValueError(f"index column {name} has {col.nbytes} bytes for {n} rows")
        parts.append(col.tobytes())
    meta = orjson.dumps({"format": INDEX_FORMAT, "hash": CONTENT_HASH, "blocks": blocks,
                         "topics": topics, "tenants": tenants, "ids": ids})
    return {INDEX_KEY: meta, INDEX_BIN_KEY: base64.b64encode(b"".join(parts))}


def decode_index(meta: dict[str, bytes], codec: str, header_bytes: int, where: str
                 ) -> RowIndex:
    if INDEX_KEY not in meta or INDEX_BIN_KEY not in meta:
        raise IntegrityError(f"{where} has no row index", "not a vecwal data file")
    try:
        idx = orjson.loads(meta[INDEX_KEY])
        binary = base64.b64decode(meta[INDEX_BIN_KEY])
        if idx.get("format") != INDEX_FORMAT or idx.get("hash") != CONTENT_HASH:
            raise ValueError(f"index format {idx.get('format')}, hash {idx.get('hash')}: "
                             "written by another vecwal version")
        ids = idx["ids"]
        n = len(ids)
        if len(binary) != n * _ROW_BYTES or sum(idx["blocks"]) != n:
            raise ValueError("index sizes disagree")
        cols: dict[str, np.ndarray] = {}
        at = 0
        for name, dtype, width in _COLUMNS:
            cols[name] = np.frombuffer(binary, dtype, n * width // np.dtype(dtype).itemsize, at)
            at += n * width
        tenants, topics = idx["tenants"], idx["topics"]
        if n and (int(cols["tenant_ix"].max()) >= len(tenants)
                  or int(cols["topic_ix"].max()) >= len(topics)):
            raise ValueError("index refers past its tables")
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
        raise IntegrityError(f"{where} has an unreadable row index ({exc})",
                             "run `vecwal verify --deep`; restore from another snapshot") from None
    return RowIndex(codec, header_bytes, idx["blocks"], ids, tenants, topics,
                    cols["tenant_ix"], cols["topic_ix"], cols["ts"], cols["offsets"],
                    cols["partitions"], cols["lengths"], cols["content_lens"],
                    cols["hashes"].reshape(n, 4), cols["deleted"].astype(bool))


class RowIndexBuilder:
    """The index of a file being written row by row."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.tenants: dict[str, int] = {}
        self.topics: dict[str, int] = {}
        self._rows: list[tuple[int, int, int, int, int, int, int, bool]] = []
        self._hashes = bytearray()

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, row: Row, length: int) -> None:
        tenant, rid = row.key
        ts, topic, partition, offset = row.version
        t = self.tenants.setdefault(tenant, len(self.tenants))
        p = self.topics.setdefault(topic, len(self.topics))
        self.ids.append(rid)
        self._rows.append((ts, offset, length, row.content_len, partition, p, t, row.deleted))
        self._hashes += row.hash.to_bytes(16, "little")

    def build(self) -> IndexColumns:
        cols: list[tuple[int | bool, ...]] = list(zip(*self._rows, strict=True)) or [()] * 8
        columns = {
            "ts": np.asarray(cols[0], dtype="<i8"), "offsets": np.asarray(cols[1], dtype="<i8"),
            "hashes": np.frombuffer(bytes(self._hashes), "<u4").reshape(-1, 4),
            "lengths": np.asarray(cols[2], dtype="<u4"),
            "content_lens": np.asarray(cols[3], dtype="<u4"),
            "partitions": np.asarray(cols[4], dtype="<i4"),
            "topic_ix": np.asarray(cols[5], dtype="<u4"),
            "tenant_ix": np.asarray(cols[6], dtype="<u4"),
            "deleted": np.asarray(cols[7], dtype=bool)}
        return IndexColumns(self.ids, list(self.tenants), list(self.topics), columns)


@dataclass
class IndexColumns:
    """A finished index: ids, tenant and topic tables, and the columns."""

    ids: list[str]
    tenants: list[str]
    topics: list[str]
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def summary(self) -> tuple[int, str, dict[str, int]]:
        """Live records, digest (hex) and per-tenant counts."""
        live = ~self.columns["deleted"].astype(bool)
        digest = digest_of(self.columns["hashes"][live])
        counts = np.bincount(self.columns["tenant_ix"][live],
                             minlength=len(self.tenants)).tolist()
        tenants = {self.tenants[t]: c for t, c in enumerate(counts) if c}
        return int(live.sum()), f"{digest:032x}", dict(sorted(tenants.items()))

    def encode(self, blocks: list[int]) -> dict[str, bytes]:
        return encode_index(blocks, self.ids, self.tenants, self.topics, self.columns)


def merged_columns(src: RowIndex, keep: np.ndarray, rows: list[Row],
                   before: list[int]) -> IndexColumns:
    """The index of ``src``'s rows where ``keep`` is True, with ``rows`` put in: each before
    the base row numbered ``before[k]`` (sorted, ties in ``rows``' order). Whole-array
    operations: no Python step per kept row."""
    tenants = {t: i for i, t in enumerate(src.tenants)}
    topics = {t: i for i, t in enumerate(src.topics)}
    # where each row goes in the kept rows: the number of kept rows before its place
    kept_before = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
    at = kept_before[np.asarray(before, dtype=np.int64)] if rows else np.zeros(0, np.int64)
    new: dict[str, np.ndarray] = {
        "ts": np.asarray([r.version[0] for r in rows], dtype="<i8"),
        "offsets": np.asarray([r.version[3] for r in rows], dtype="<i8"),
        "hashes": np.frombuffer(b"".join(r.hash.to_bytes(16, "little") for r in rows),
                                "<u4").reshape(-1, 4),
        "lengths": np.asarray([len(r.raw or b"") for r in rows], dtype="<u4"),
        "content_lens": np.asarray([r.content_len for r in rows], dtype="<u4"),
        "partitions": np.asarray([r.version[2] for r in rows], dtype="<i4"),
        "topic_ix": np.asarray([topics.setdefault(r.version[1], len(topics)) for r in rows],
                               dtype="<u4"),
        "tenant_ix": np.asarray([tenants.setdefault(r.key[0], len(tenants)) for r in rows],
                                dtype="<u4"),
        "deleted": np.asarray([r.deleted for r in rows], dtype=bool)}
    columns = {}
    for name, _, _ in _COLUMNS:
        base = getattr(src, name)[keep]
        columns[name] = np.insert(base, at, new[name], axis=0) if rows else base
    ids = np.asarray(src.ids, dtype=object)[keep]
    if rows:
        ids = np.insert(ids, at, np.asarray([r.key[1] for r in rows], dtype=object))
    return IndexColumns(ids.tolist(), list(tenants), list(topics), columns)
