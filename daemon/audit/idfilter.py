"""The id filter index: per partition, a few objects that say, for many segments at once,
which ids each segment may contain, so that a history query reads one object per few hundred
segments instead of one sidecar per segment.

    index/<topic>/p=<partition:05d>/<from:020d>-<to:020d>-<hash:8>.idf

One index object covers a list of segments (named in its header; ``from``/``to`` are the first
start and last end, ``hash`` names the exact list). For each segment it holds a Bloom filter of
``collection + NUL + id`` over the segment's record events, with the segment's time bounds and
counts from its sidecar. Layout::

    b"VWIDF1\\n"  u32 little-endian header length  header JSON  rows
    rows: one filter per segment, ``bits // 8`` bytes each, in header order

A filter answers "maybe" or "no", never a wrong "no": a query opens every segment whose filter
says maybe (about 1% of the segments without the id, at 10 bits per id and 7 hashes) and every
segment no index object covers (through its sidecar, which lists ids exactly). Index objects are
immutable and derived from sidecars only: deleting them loses nothing but speed.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import orjson

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.changelog.sidecar import Sidecar
from daemon.changelog.window import list_partition_segments
from daemon.errors import IntegrityError, ObjectNotFound
from daemon.objectstore import ObjectStore

INDEX_ROOT = "index/"
INDEX_FORMAT = 1
MAGIC = b"VWIDF1\n"
BITS_PER_ID = 10
HASHES = 7
MAX_SEGMENTS_PER_OBJECT = 1024


def index_dir(topic: str, partition: int) -> str:
    return f"{INDEX_ROOT}{topic}/p={partition:05d}/"


def filter_key(collection: str, record_id: str) -> bytes:
    return f"{collection}\x00{record_id}".encode()


def _hash_pairs(keys: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Two 64-bit hashes per key (double hashing gives the k probe positions)."""
    raw = b"".join(hashlib.blake2b(k, digest_size=16).digest() for k in keys)
    both = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
    return both[:, 0], both[:, 1] | np.uint64(1)


def _positions(h1: np.ndarray, h2: np.ndarray, bits: int, hashes: int) -> np.ndarray:
    """Probe positions, shape (len(h1), hashes); ``bits`` is a power of two."""
    i = np.arange(hashes, dtype=np.uint64)
    with np.errstate(over="ignore"):
        pos = h1[:, None] + i[None, :] * h2[:, None]
    out: np.ndarray = (pos & np.uint64(bits - 1)).astype(np.int64)
    return out


def filter_bits(max_ids: int) -> int:
    """Filter size for ``max_ids`` ids: a power of two of at least BITS_PER_ID per id."""
    bits = 64
    while bits < max_ids * BITS_PER_ID:
        bits *= 2
    return bits


def build_filter(keys: Sequence[bytes], bits: int, hashes: int = HASHES) -> bytes:
    table = np.zeros(bits, dtype=bool)
    if keys:
        h1, h2 = _hash_pairs(keys)
        table[_positions(h1, h2, bits, hashes).ravel()] = True
    return np.packbits(table, bitorder="little").tobytes()


@dataclass(frozen=True)
class IndexedSegment:
    key: SegmentKey
    min_timestamp: int | None
    max_timestamp: int | None
    count: int
    quarantined: int


@dataclass(frozen=True)
class IdFilterIndex:
    """One index object, decoded: the segments it covers and their filters."""

    topic: str
    partition: int
    bits: int
    hashes: int
    segments: list[IndexedSegment]
    rows: np.ndarray
    """uint8, shape (len(segments), bits // 8)."""

    @property
    def object_key(self) -> str:
        names = ",".join(f"{s.key.start}-{s.key.end}" for s in self.segments)
        digest = hashlib.sha256(names.encode()).hexdigest()[:8]
        first, last = self.segments[0].key.start, self.segments[-1].key.end
        return f"{index_dir(self.topic, self.partition)}{first:020d}-{last:020d}-{digest}.idf"

    def maybe_contains(self, collection: str, record_id: str) -> list[bool]:
        """Per covered segment: False only if the segment surely has no event of the id."""
        if not self.segments:
            return []
        h1, h2 = _hash_pairs([filter_key(collection, record_id)])
        pos = _positions(h1, h2, self.bits, self.hashes)[0]
        masks = np.left_shift(1, pos & 7).astype(np.uint8)
        probes = self.rows[:, pos >> 3] & masks[None, :]
        return [bool(x) for x in np.all(probes != 0, axis=1)]

    def encode(self) -> bytes:
        header = orjson.dumps({
            "format": INDEX_FORMAT, "topic": self.topic, "partition": self.partition,
            "bits": self.bits, "hashes": self.hashes,
            "segments": [[s.key.start, s.key.end, s.min_timestamp, s.max_timestamp, s.count,
                          s.quarantined] for s in self.segments],
        })
        return MAGIC + struct.pack("<I", len(header)) + header + self.rows.tobytes()

    @classmethod
    def decode(cls, data: bytes, where: str) -> IdFilterIndex:
        try:
            if not data.startswith(MAGIC):
                raise ValueError("bad magic")
            (n,) = struct.unpack_from("<I", data, len(MAGIC))
            start = len(MAGIC) + 4
            head = orjson.loads(data[start:start + n])
            if head["format"] != INDEX_FORMAT:
                raise ValueError(f"format {head['format']} is not supported")
            topic, partition, bits = head["topic"], int(head["partition"]), int(head["bits"])
            segs = [IndexedSegment(SegmentKey(topic, partition, a, b), lo, hi, c, q)
                    for a, b, lo, hi, c, q in head["segments"]]
            rows = np.frombuffer(data, dtype=np.uint8, offset=start + n)
            if rows.size != len(segs) * (bits // 8):
                raise ValueError(f"{rows.size} filter bytes for {len(segs)} segments")
            return cls(topic, partition, bits, int(head["hashes"]), segs,
                       rows.reshape(len(segs), bits // 8))
        except (ValueError, KeyError, TypeError, struct.error, orjson.JSONDecodeError) as exc:
            raise IntegrityError(f"{where} is not a valid id filter index: {exc}",
                                 "delete it and run `vecwal index`; history reads sidecars "
                                 "meanwhile") from None


def index_from_sidecars(sidecars: Sequence[Sidecar]) -> IdFilterIndex:
    """An index object over ``sidecars`` (one partition, in offset order)."""
    first = sidecars[0]
    keys_per = [[filter_key(c, i) for c, ids in s.ids.items() for i in ids] for s in sidecars]
    bits = filter_bits(max((len(k) for k in keys_per), default=0))
    rows = np.frombuffer(b"".join(build_filter(k, bits) for k in keys_per), dtype=np.uint8)
    segs = [IndexedSegment(s.key, s.min_timestamp, s.max_timestamp, s.count, s.quarantined)
            for s in sidecars]
    return IdFilterIndex(first.topic, first.partition, bits, HASHES, segs,
                         rows.reshape(len(segs), bits // 8))


def read_indexes(repo: Repository, topic: str, partition: int) -> list[IdFilterIndex]:
    """Every index object of the partition. A damaged one is skipped (its segments then count
    as not covered, so queries read their sidecars): an index only ever saves work."""
    keys = [i.key for i in repo.store.list(index_dir(topic, partition)) if i.key.endswith(".idf")]
    out = []
    for key, data in zip(keys, fetch_many(repo.store, keys), strict=True):
        if data is None:
            continue
        try:
            out.append(IdFilterIndex.decode(data, key))
        except IntegrityError:
            continue
    return out


@dataclass
class IndexUpdate:
    topic: str
    partition: int
    segments: int
    covered_before: int
    indexed_now: int
    objects_written: list[str]


def update_partition_index(repo: Repository, topic: str, partition: int,
                           min_segments: int = 1) -> IndexUpdate:
    """Index the partition's segments no index object covers yet (when at least
    ``min_segments`` are waiting). A segment whose sidecar is missing or unreadable stays
    uncovered: a query then opens it, which is always correct."""
    listing = sorted(k for k, _ in list_partition_segments(repo, topic, partition))
    covered = {s.key for ix in read_indexes(repo, topic, partition) for s in ix.segments}
    todo = [k for k in listing if k not in covered]
    update = IndexUpdate(topic, partition, len(listing), len(listing) - len(todo), 0, [])
    if len(todo) < min_segments:
        return update
    sidecars: list[Sidecar] = []
    for data in fetch_many(repo.store, [k.sidecar for k in todo]):
        if data is None:
            continue
        try:
            sidecars.append(Sidecar.from_json(data))
        except IntegrityError:
            continue
    for chunk in _chunks(sidecars, MAX_SEGMENTS_PER_OBJECT):
        index = index_from_sidecars(chunk)
        repo.put_immutable(index.object_key, index.encode())
        update.objects_written.append(index.object_key)
        update.indexed_now += len(chunk)
    return update


def update_index(repo: Repository, topics: Iterable[str], min_segments: int = 1
                 ) -> list[IndexUpdate]:
    """``update_partition_index`` for every partition with a watermark."""
    return [update_partition_index(repo, t, wm.partition, min_segments)
            for t in topics for wm in repo.list_watermarks(t)]


def _chunks(items: list[Sidecar], n: int) -> Iterable[list[Sidecar]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def fetch_many(store: ObjectStore, keys: Sequence[str], threads: int = 16
               ) -> Iterator[bytes | None]:
    """The bytes of each key in order, ``threads`` GETs in flight (small objects: sidecars,
    index objects, quarantine entries); a missing object gives None."""

    def get(key: str) -> bytes | None:
        try:
            return store.get(key)
        except ObjectNotFound:
            return None

    if len(keys) <= 1:
        yield from (get(k) for k in keys)
        return
    with ThreadPoolExecutor(min(threads, len(keys)), thread_name_prefix="vecwal-audit") as pool:
        yield from pool.map(get, keys)
