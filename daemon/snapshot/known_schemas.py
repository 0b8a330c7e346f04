"""The collection schemas a repository knows, for capture's dimension checks: the newest
readable snapshot's catalog plus every ``collection.put`` and ``collection.drop`` in the log
after its cut, on every partition of every topic (a collection's schema may sit in a
partition this daemon does not own), folded by version as restore folds them
(``state.Catalog``: timestamp, then topic, partition, offset).

It is read cheaply and once: each partition's segments are listed, each new segment's sidecar
is read only as far as its ``ops`` counts (a ranged read of its first bytes), and only the
segments whose counts show a collection op are read. The listings of all partitions go out
together, then the sidecar heads of all their new segments (``THREADS`` in flight): the round
trips of a remote bucket, not the bytes, are the cost. ``KnownSchemas`` remembers the segments
it has seen per partition, so a later call (the next rebalance) lists and reads only what was
written since."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson
import structlog

from daemon.changelog.keys import SegmentKey, watermark_prefix
from daemon.changelog.repository import Repository
from daemon.changelog.scan import scan_segment
from daemon.changelog.window import list_partition_segments
from daemon.errors import IntegrityError, ObjectNotFound
from daemon.snapshot.compactor import newest_manifest
from daemon.snapshot.dimensions import catalog_dimensions
from daemon.snapshot.state import Catalog

log = structlog.get_logger("vecwal.schemas")

COLLECTION_OPS = ("collection.put", "collection.drop")
OPS_PREFIX_BYTES = 1024
"""A sidecar's first bytes: its JSON names ``ops`` before the (long) ``ids``."""
_PARTITION_RE = re.compile(r"/p=(\d{5})\.json$")


@dataclass
class ReadStats:
    """What one refresh cost."""

    partitions: int = 0
    segments: int = 0
    """New segments considered (their sidecars read)."""
    segments_read: int = 0
    """Segments read because their sidecar shows a collection op (or has none)."""
    events: int = 0
    """Collection ops applied."""
    seconds: float = 0.0


@dataclass
class _Seen:
    last_start: int
    keys: set[SegmentKey] = field(default_factory=set)
    """The segments starting at ``last_start`` already read (a LIST from there lists them)."""


class KnownSchemas:
    """The repository's collection schemas, read incrementally (see the module)."""

    THREADS = 32
    """Reads in flight: each is a small ranged GET, so on S3 the round trips dominate."""

    def __init__(self, repo: Repository, topics: list[str], threads: int = THREADS) -> None:
        self.repo, self.topics, self.threads = repo, topics, threads
        self.catalog: Catalog | None = None
        self._from: dict[tuple[str, int], int] = {}
        """The snapshot's cut per partition: segments ending at or before it are not read."""
        self._seen: dict[tuple[str, int], _Seen] = {}
        self.last = ReadStats()
        """What the last refresh read."""

    def dimensions(self) -> dict[str, int]:
        """collection -> dimension, after reading what the log gained since the last call."""
        self.refresh()
        assert self.catalog is not None
        return catalog_dimensions(self.catalog)

    def refresh(self) -> ReadStats:
        """Read what is new. Store errors propagate (what was read stays; a later call
        resumes); a damaged segment or sidecar is skipped with a warning."""
        began = time.monotonic()
        stats = ReadStats()
        if self.catalog is None:
            base = newest_manifest(self.repo)
            self.catalog = Catalog.from_json(base.catalog) if base else Catalog()
            if base is not None:
                self._from = {(t, int(p)): off for t, parts in base.cut.items()
                              for p, off in parts.items()}
        with ThreadPoolExecutor(self.threads, thread_name_prefix="vecwal-schemas") as pool:
            parts = self._partitions()
            # Every partition's listing, then every new segment's op counts, each in one
            # round of requests: one partition after another, a member given 100 partitions
            # of a remote bucket waited 200 round trips in its rebalance callback.
            listed = list(pool.map(self._new_segments, parts))
            ops = iter(pool.map(self._ops, [k for keys in listed for k in keys]))
            for tp, keys in zip(parts, listed, strict=True):
                stats.partitions += 1
                self._read_partition(tp, keys, [next(ops) for _ in keys], pool, stats)
        stats.seconds = time.monotonic() - began
        self.last = stats
        return stats

    def _partitions(self) -> list[tuple[str, int]]:
        """Every partition with a watermark or in the snapshot's cut."""
        out = {tp for tp in self._from if tp[0] in self.topics} | set(self._seen)
        for topic in self.topics:
            for info in self.repo.store.list(watermark_prefix(topic)):
                m = _PARTITION_RE.search(info.key)
                if m is not None:
                    out.add((topic, int(m[1])))
        return sorted(out)

    def _new_segments(self, tp: tuple[str, int]) -> list[SegmentKey]:
        """The partition's segments not read yet, in order."""
        topic, partition = tp
        seen = self._seen.get(tp)
        if seen is None:  # the first time: the whole listing (a segment may straddle the cut)
            cut = self._from.get(tp, 0)
            keys = [k for k, _ in list_partition_segments(self.repo, topic, partition)
                    if k.end > cut]
        else:
            keys = [k for k in self.repo.list_segments(topic, partition, seen.last_start)
                    if k not in seen.keys]
        return sorted(keys)

    def _read_partition(self, tp: tuple[str, int], keys: list[SegmentKey],
                        ops_of: list[dict[str, int] | None], pool: ThreadPoolExecutor,
                        stats: ReadStats) -> None:
        """Apply the collection ops of ``keys`` (with their op counts, ``ops_of``), reading
        only the segments that hold some (or whose counts are not known)."""
        topic, partition = tp
        seen = self._seen.get(tp)
        stats.segments += len(keys)
        wanted = [k for k, ops in zip(keys, ops_of, strict=True)
                  if ops is None or any(ops.get(op) for op in COLLECTION_OPS)]
        for key, data in zip(wanted, pool.map(self._segment, wanted), strict=True):
            stats.segments_read += 1
            if data is None:
                continue
            try:
                events = scan_segment(key, data)
            except IntegrityError as exc:
                log.warning("segment unreadable, its collection ops are not known",
                            object=key.avro, error=exc.message)
                continue
            for ev in events:
                if ev.op in COLLECTION_OPS:
                    assert self.catalog is not None
                    self.catalog.apply(ev.event(), topic, partition)
                    stats.events += 1
        if keys:
            last = keys[-1].start
            same = {k for k in keys if k.start == last}
            if seen is not None and seen.last_start == last:
                same |= seen.keys
            self._seen[tp] = _Seen(last, same)
        elif seen is None:
            self._seen[tp] = _Seen(self._from.get(tp, 0))

    def _ops(self, key: SegmentKey) -> dict[str, int] | None:
        """The segment's op counts from its sidecar (None: no readable sidecar)."""
        try:
            head = self.repo.store.get_range(key.sidecar, 0, OPS_PREFIX_BYTES)
            ops = _ops_in(head)
            if ops is None:  # a sidecar whose ops are not in its first bytes
                ops = self.repo.read_sidecar(key).ops
        except (ObjectNotFound, IntegrityError):
            return None
        return ops

    def _segment(self, key: SegmentKey) -> bytes | None:
        try:
            return self.repo.store.get(key.avro)
        except ObjectNotFound:  # removed since the listing (retention)
            return None


def _ops_in(head: bytes) -> dict[str, int] | None:
    """``ops`` from the start of a sidecar's JSON, when it is there whole."""
    at = head.find(b'"ops":')
    if at < 0:
        return None
    end = head.find(b"}", at)
    if end < 0:
        return None
    try:
        ops = orjson.loads(head[at + 6:end + 1])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(ops, dict) or not all(isinstance(v, int) for v in ops.values()):
        return None
    return ops


def known_dimensions(repo: Repository, topics: list[str]) -> dict[str, int]:
    """collection -> dimension, as the repository knows it now (one full read)."""
    return KnownSchemas(repo, topics).dimensions()
