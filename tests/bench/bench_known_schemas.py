"""What capture's dimension seeding costs on assignment (``daemon/snapshot/known_schemas.py``):
the collection ops of the log after the newest snapshot's cut, read from a realistic log.

The log is one compaction interval (``compaction.interval_s``, default 3600 s) of capture with
the defaults: ``--partitions`` partitions, each sealing a segment every 5 s
(``segment_max_age_s``) of ``--per-segment`` upserts, so each sidecar lists that many ids (as
capture's do); ``--with-ops`` of the segments also hold a ``collection.put`` among their
upserts of ``--dim`` dimensions (those are read whole; the others' bytes are never read, so
they are written as placeholders). Timed: the first call (listing, every sidecar's first KB,
the segments with ops), a second call after one more segment per partition (what a rebalance
costs), and, for comparison, the first call reading every sidecar whole.

Also what compaction's and restore's check costs (``daemon/snapshot/dimensions.py``): per
winning change of the log (``screen_rows`` on spliced rows, beside the fold that splices them),
and per record of a bucket file a snapshot did not check (``bucket_winners`` + ``screen_rows``).

    python -m tests.bench.bench_known_schemas [--partitions 12] [--segments 720]
        [--per-segment 2500] [--with-ops 5] [--dim 768] [--threads N] [--s3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.changelog.scan import scan_segment
from daemon.changelog.segment import encode_segment
from daemon.changelog.sidecar import Sidecar
from daemon.changelog.watermark import Watermark
from daemon.objectstore import open_store
from daemon.rows import Row
from daemon.snapshot import known_schemas
from daemon.snapshot.datafile import encode_rows
from daemon.snapshot.dimensions import bucket_winners, screen_rows
from daemon.snapshot.known_schemas import KnownSchemas
from daemon.snapshot.manifest import DataFile
from tests.bench.restore_repo import T0, Pool, say

TOPIC = "ingest"


def build(repo: Repository, partitions: int, segments: int, per_segment: int, with_ops: int,
          pool: Pool) -> int:
    """The log; returns the bytes of its sidecars."""
    repo.ensure_initialized()
    op_at = {(k * 7919) % (partitions * segments) for k in range(with_ops)}
    sidecar_bytes = 0
    n = 0
    for s in range(segments):
        for p in range(partitions):
            start = s * per_segment
            key = SegmentKey(TOPIC, p, start, start + per_segment)
            ts = T0 + s * 5000
            if n in op_at:
                recs = [pool.change(p * 10**7 + start + i, 1, "upsert", start + i, ts)
                        for i in range(per_segment)]
                put = dict(pool.preamble[0], offset=start, timestamp=ts)
                recs[0] = put
                data = encode_segment(key, recs)
                side = Sidecar.build(key, recs, data, 0)
            else:
                data = b"placeholder: capture's segment, never read by the seeding"
                ids = {f"doc-{p * 10**7 + start + i}#0" for i in range(per_segment)}
                side = Sidecar.of(key, per_segment, 0, ts, ts + 4999, data,
                                  {"upsert": per_segment}, {"docs": ids})
            repo.put_segment(key, data)
            body = side.to_json()
            repo.store.put(key.sidecar, body)
            sidecar_bytes += len(body)
            n += 1
    for p in range(partitions):
        repo.write_watermark(Watermark(TOPIC, p, segments * per_segment,
                                       T0 + segments * 5000, 0, "bench"))
    return sidecar_bytes


def timed(repo: Repository, threads: int) -> tuple[KnownSchemas, dict[str, Any]]:
    known = KnownSchemas(repo, [TOPIC], threads)
    began = time.monotonic()
    dims = known.dimensions()
    return known, {"seconds": round(time.monotonic() - began, 3), "dimensions": dims,
                   "segments": known.last.segments, "segments_read": known.last.segments_read}


def run(repo: Repository, args: argparse.Namespace) -> dict[str, Any]:
    pool = Pool(args.dim)
    began = time.monotonic()
    sidecar_bytes = build(repo, args.partitions, args.segments, args.per_segment,
                          args.with_ops, pool)
    say(f"built {args.partitions * args.segments} segments in {time.monotonic() - began:.0f} s")
    known, first = timed(repo, args.threads)
    for p in range(args.partitions):  # one more segment per partition, then a rebalance
        start = args.segments * args.per_segment
        key = SegmentKey(TOPIC, p, start, start + 1)
        rec = pool.change(p, 2, "upsert", start, T0 + args.segments * 5000)
        data = encode_segment(key, [rec])
        repo.put_segment(key, data)
        repo.put_sidecar(Sidecar.build(key, [rec], data, 0))
    began = time.monotonic()
    known.dimensions()
    again = {"seconds": round(time.monotonic() - began, 3), "segments": known.last.segments,
             "segments_read": known.last.segments_read}
    whole = known_schemas.OPS_PREFIX_BYTES
    known_schemas.OPS_PREFIX_BYTES = 0  # every sidecar read whole: the ops are never in 0 bytes
    try:
        _, full = timed(repo, args.threads)
    finally:
        known_schemas.OPS_PREFIX_BYTES = whole
    return {"store": repo.store.url.split(":")[0], "threads": args.threads,
            "partitions": args.partitions,
            "segments": args.partitions * args.segments, "per_segment": args.per_segment,
            "with_ops": args.with_ops, "sidecar_mb": round(sidecar_bytes / 1e6, 1),
            "first_call": first, "after_one_segment_per_partition": again,
            "first_call_reading_sidecars_whole": full}


def check_costs(pool: Pool, n: int = 50_000, rounds: int = 5) -> dict[str, float]:
    """Microseconds per event of folding a segment, of checking its winning changes, and
    of checking a bucket file's records."""
    recs = [pool.change(i, 1, "upsert", i, T0 + i // 4) for i in range(n)]
    key = SegmentKey(TOPIC, 0, 0, n)
    data = encode_segment(key, recs)

    def fold() -> list[Row]:
        return [ev.row(TOPIC, 0) for ev in scan_segment(key, data)]

    rows = fold()
    enc = encode_rows(sorted(rows, key=lambda r: r.key))
    f = DataFile("data/docs/b=0000/bench.avro", 0, enc.records, len(enc.data), "", enc.digest,
                 enc.tenants, enc.header_bytes, enc.rows, "base")
    bucket = enc.data

    def us(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
        return round(statistics.median(times) / n * 1e6, 3)

    return {"fold_us": us(fold), "check_changes_us": us(lambda: screen_rows("docs", rows, pool.dim)),
            "check_bucket_us": us(lambda: screen_rows(
                "docs", bucket_winners([f], [bucket], None, None), pool.dim))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--segments", type=int, default=720, help="per partition (one hour)")
    ap.add_argument("--per-segment", type=int, default=2500)
    ap.add_argument("--with-ops", type=int, default=5)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--threads", type=int, default=KnownSchemas.THREADS)
    ap.add_argument("--s3", action="store_true", help="also on the S3 server (s3proxy)")
    args = ap.parse_args(argv)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        out.append(run(Repository(open_store(f"file://{Path(tmp) / 'repo'}")), args))
    if args.s3:
        import os

        from tests.bench.services import services

        with services() as svc:
            os.environ.update(svc.s3_env)
            store = open_store(f"s3://{svc.bucket()}/repo", endpoint_url=svc.s3_endpoint)
            out.append(run(Repository(store), args))
    result = {"known_schemas": out, "checks": check_costs(Pool(args.dim))}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
