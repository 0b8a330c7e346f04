"""The repository the restore benchmarks read: a snapshot of N records written straight on a
store as the compactor writes it, and log segments after its cut as capture writes them (no
Kafka), from a pool of parsed events reused with fresh ids, so building costs encoding, not
generation (``Pool``, ``write_snapshot``, ``write_log``, ``mixed_ops``, ``build``)."""

from __future__ import annotations

import hashlib
import random
import statistics
import sys
import time
import uuid
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.changelog.segment import encode_segment
from daemon.changelog.sidecar import Sidecar
from daemon.changelog.watermark import Watermark
from daemon.events import EventParser
from daemon.objectstore import open_store
from daemon.rows import bucket_of, record_from_event
from daemon.snapshot.compactor import choose_buckets, collection_state
from daemon.snapshot.datafile import encode_records
from daemon.snapshot.manifest import BucketState, DataFile, Manifest, data_key, manifest_key
from daemon.snapshot.state import Catalog
from daemon.workload import Workload

TOPIC = "ingest"
COLLECTION = "docs"
TENANTS = ("acme", "globex", "initech")
PARTITIONS = 3
T0 = 1_764_079_200_000
"""2025-11-25T14:00:00Z: the first event's timestamp."""
EVENTS_PER_MS = 4


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the records ------------------------------------------------------------------------------
def tenant_of(i: int) -> str:
    return TENANTS[i % len(TENANTS)]


def id_of(i: int) -> str:
    return f"doc-{i}#{i % 4}"


def partition_of(i: int) -> int:
    """Kafka partitions by key: a record's events all land in one partition."""
    return zlib.crc32(id_of(i).encode()) % PARTITIONS


class Pool:
    """Parsed change-log records (and their JSON events) of realistic upserts, reused with
    fresh ids: generating and parsing a 768-dim JSON event costs ~150 µs, copying a dict ~1."""

    def __init__(self, dim: int, size: int = 256, seed: int = 11) -> None:
        w = Workload(seed=seed, collections={COLLECTION: dim}, tenants=list(TENANTS))
        parser = EventParser(1 << 24, {COLLECTION: dim})
        self.dim, self.size = dim, size
        self.events: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        for k in range(size):
            ev = w.upsert(COLLECTION, tenant_of(k), id_of(k))
            self.events.append(ev)
            self.records.append(self._parse(parser, ev))
        self.delete = self._parse(parser, {"op": "delete", "collection": COLLECTION,
                                           "tenant": TENANTS[0], "id": id_of(0)})
        self.preamble = [parser.parse(g.value, "json", key=g.key, offset=0, timestamp=0)
                         for g in w.preamble()]

    @staticmethod
    def _parse(parser: EventParser, ev: dict[str, Any]) -> dict[str, Any]:
        return parser.parse(orjson.dumps(ev), "json", key=None, offset=0, timestamp=0)

    def change(self, i: int, version: int, op: str, offset: int, timestamp: int
               ) -> dict[str, Any]:
        """The change-log record of version ``version`` of record ``i`` (0: its first)."""
        rid, tenant = id_of(i), tenant_of(i)
        if op == "delete":
            rec = dict(self.delete)
        else:
            rec = dict(self.records[(i + version * 7919) % self.size])
            rec["document"] = f"chunk {rid} of {COLLECTION} for {tenant} v{version}"
        rec["tenant"], rec["id"], rec["key"] = tenant, rid, rid.encode()
        rec["offset"], rec["timestamp"] = offset, timestamp
        return rec

    def event_json(self, i: int, version: int, op: str) -> bytes:
        """The JSON value capture would have consumed for the same change."""
        rid, tenant = id_of(i), tenant_of(i)
        if op == "delete":
            return orjson.dumps({"op": "delete", "collection": COLLECTION, "tenant": tenant,
                                 "id": rid})
        ev = dict(self.events[(i + version * 7919) % self.size])
        ev["tenant"], ev["id"] = tenant, rid
        ev["document"] = f"chunk {rid} of {COLLECTION} for {tenant} v{version}"
        return orjson.dumps(ev)


# -- the repository ----------------------------------------------------------------------------
@dataclass
class Built:
    root: Path
    records: int
    dim: int
    buckets: int
    snapshot_id: str
    snapshot_bytes: int
    cut: dict[str, int]
    cut_time_ms: int
    log_events: int = 0
    log_bytes: int = 0
    log_segments: int = 0
    expected_records: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def write_snapshot(repo: Repository, pool: Pool, n: int, buckets: int | None = None,
                   codec: str = "null") -> Built:
    """The snapshot a compaction of the first ``n`` upserts (after the catalog preamble)
    would write: one sorted bucket file per bucket, then the manifest. The log before its
    cut is not written (as if retention had removed it): restore never reads it."""
    began = time.monotonic()
    repo.ensure_initialized()
    nb = buckets or choose_buckets(n, 16, 50_000)
    catalog = Catalog()
    next_offset = [0] * PARTITIONS
    for j, rec in enumerate(pool.preamble):
        rec = dict(rec, offset=j, timestamp=T0)
        catalog.apply(rec, TOPIC, 0)
        next_offset[0] += 1
    # Where record i's upsert sits in the log, and which bucket it falls in.
    offsets, members = array("q", bytes(8 * n)), [array("l") for _ in range(nb)]
    for i in range(n):
        p = partition_of(i)
        offsets[i] = next_offset[p]
        next_offset[p] += 1
        members[bucket_of(tenant_of(i), id_of(i), nb)].append(i)
    cut_time = T0 + max(next_offset) // EVENTS_PER_MS
    snapshot_id = f"{cut_time:013d}-{uuid.uuid4().hex[:8]}"
    files, total = [], 0
    for b in range(nb):
        recs = []
        for i in members[b]:
            p, off = partition_of(i), offsets[i]
            ev = pool.change(i, 0, "upsert", off, T0 + off // EVENTS_PER_MS)
            recs.append(record_from_event(ev, TOPIC, p))
        recs.sort(key=lambda r: (r["tenant"], r["id"]))
        enc = encode_records(recs, codec)
        del recs
        path = data_key(COLLECTION, b, snapshot_id)
        repo.put_immutable(path, enc.data)
        total += len(enc.data)
        f = DataFile(path, b, enc.records, len(enc.data), hashlib.sha256(enc.data).hexdigest(),
                     enc.digest, enc.tenants, enc.header_bytes, enc.rows)
        files.append(BucketState(b, f.records, f.digest, f.tenants, f))
        if b % 8 == 7 or b == nb - 1:
            say(f"  snapshot: {b + 1}/{nb} buckets, {total / 1e9:.2f} GB")
    cut = {TOPIC: {str(p): next_offset[p] for p in range(PARTITIONS)}}
    manifest = Manifest(id=snapshot_id, parent=None, created_at_ms=int(time.time() * 1000),
                        cut_time_ms=cut_time, cut=cut, catalog=catalog.to_json(),
                        collections={COLLECTION: collection_state(nb, files)},
                        dimensions={COLLECTION: pool.dim})  # checked, as the compactor says
    repo.put_immutable(manifest_key(snapshot_id), manifest.to_json())
    for p in range(PARTITIONS):  # the log is durable to the cut (no events after it yet)
        repo.write_watermark(Watermark(TOPIC, p, next_offset[p], cut_time, 0, "bench"))
    root = Path(repo.store.url.removeprefix("file://"))
    return Built(root, n, pool.dim, nb, snapshot_id, total,
                 {str(p): next_offset[p] for p in range(PARTITIONS)}, cut_time,
                 expected_records=n, seconds={"snapshot": time.monotonic() - began})


class PartitionLogs:
    """The log of ``PARTITIONS`` partitions of ``TOPIC`` as capture writes it: change-log
    records appended per partition, each segment sealed (with its sidecar) once it holds
    ``per_segment`` records, and watermarks at the end."""

    def __init__(self, repo: Repository, start: list[int], per_segment: int) -> None:
        self.repo, self.per_segment = repo, per_segment
        self.next_offset = list(start)
        self.seg_start = list(start)
        self.pending: list[list[dict[str, Any]]] = [[] for _ in range(PARTITIONS)]
        self.segments = self.bytes = 0

    def append(self, p: int, rec: dict[str, Any]) -> None:
        """``rec`` at partition ``p``'s next offset (its ``offset`` must say so)."""
        self.pending[p].append(rec)
        self.next_offset[p] += 1
        if len(self.pending[p]) >= self.per_segment:
            self.seal(p)

    def seal(self, p: int) -> None:
        recs = self.pending[p]
        if not recs:
            return
        key = SegmentKey(TOPIC, p, self.seg_start[p], self.next_offset[p])
        data = encode_segment(key, recs)
        self.repo.put_segment(key, data)
        self.repo.put_sidecar(Sidecar.build(key, recs, data, 0))
        self.segments += 1
        self.bytes += len(data)
        self.seg_start[p] = self.next_offset[p]
        self.pending[p] = []

    def finish(self, valid_through_ms: int) -> None:
        """Seal every partition; watermarks say durable through ``valid_through_ms``."""
        for p in range(PARTITIONS):
            self.seal(p)
            self.repo.write_watermark(Watermark(TOPIC, p, self.next_offset[p], valid_through_ms,
                                                0, "bench"))


def write_log(repo: Repository, pool: Pool, built: Built, ops: Iterable[tuple[str, int]],
              segment_bytes: int = 32 << 20) -> None:
    """Segments, sidecars and watermarks of the events ``ops`` ((op, record index) in log
    order) after the snapshot's cut, as capture would leave them: each partition's segment
    closes at about ``segment_bytes`` (capture's default 32 MiB)."""
    began = time.monotonic()
    logs = PartitionLogs(repo, [built.cut[str(p)] for p in range(PARTITIONS)],
                         max(1, segment_bytes // (pool.dim * 4 + 600)))
    versions: dict[int, int] = {}
    last_op: dict[int, str] = {}
    last_ts = [built.cut_time_ms] * PARTITIONS
    for op, i in ops:
        p = partition_of(i)
        version = versions.get(i, 0) + 1
        versions[i] = version
        offset = logs.next_offset[p]
        ts = built.cut_time_ms + 1 + (offset - built.cut[str(p)]) // EVENTS_PER_MS
        logs.append(p, pool.change(i, version, op, offset, ts))
        last_ts[p] = ts
        last_op[i] = op
        built.log_events += 1
    logs.finish(max(last_ts))  # every partition is durable through its last event
    built.log_bytes += logs.bytes
    built.log_segments += logs.segments
    deleted = sum(1 for i, op in last_op.items() if op == "delete" and i < built.records)
    new = sum(1 for i, op in last_op.items() if op == "upsert" and i >= built.records)
    built.expected_records = built.records - deleted + new
    built.seconds["log"] = time.monotonic() - began


def mixed_ops(n: int, m: int, seed: int, reupsert: float = 0.60, delete: float = 0.12
              ) -> Iterator[tuple[str, int]]:
    """``m`` log events over ``n`` existing records: re-upserts and deletes of existing ids,
    the rest upserts of new ids (the shares of daemon.workload: 12% deletes)."""
    rng = random.Random(seed)
    fresh = n
    for _ in range(m):
        roll = rng.random()
        if roll < reupsert:
            yield "upsert", rng.randrange(n)
        elif roll < reupsert + delete:
            yield "delete", rng.randrange(n)
        else:
            yield "upsert", fresh
            fresh += 1


def build(root: Path, pool: Pool, records: int, log_ops: Iterable[tuple[str, int]],
          buckets: int | None = None) -> Built:
    repo = Repository(open_store(f"file://{root}"))
    built = write_snapshot(repo, pool, records, buckets)
    write_log(repo, pool, built, log_ops)
    return built


def median(values: list[float]) -> float:
    return statistics.median(values)
