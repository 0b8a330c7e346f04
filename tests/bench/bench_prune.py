"""Retention and prune (issue 11): what a repository costs after prune against the least its
policy needs, how fast prune plans, and how fast it deletes.

    python -m tests.bench.bench_prune [--parts cost,plan,delete] [--records 1000000] [--dim 768]
                                      [--days 90] [--plan-segments 100000]
                                      [--plan-snapshots 1000] [--delete-objects 20000]
                                      [--stores file,s3]

``cost``: a simulated ``--days`` of one collection of ``--records`` records on a ``file://``
store, no Kafka. Day 0 is a snapshot written as ``bench_restore`` writes one (sorted bucket
files and manifest, the log before its cut not written). Each day ``--change`` of the records
(distinct ids, uniform over all records) are re-upserted in 24 hourly bursts; a burst is one
segment per partition with its sidecar, as capture leaves a burst shorter than its 5 s segment
age; the watermarks then vouch for the day. At the end of the day the real ``Compactor`` folds
the day's log onto the newest snapshot (delta files, a new base once a bucket's deltas pass
``delta_ratio``), ``update_index`` indexes the new segments (as ``vecwal run`` does after each
compaction), and 30 minutes later ``prune`` runs with ``now_ms`` the simulated time, as a
scheduled prune would: grace, orphans and the prune state behave as in production. After each
prune the repository is listed and measured against the least the policy needs, from the same
objects: the distinct data files the kept snapshots reference (``policy.choose_kept`` at that
instant), their manifests, and the log segments and sidecars from the anchor's cut on.

``plan``: ``sort_listing`` over the keys of a repository of ``--plan-segments`` segments (with
their sidecars and daily id-index objects) and ``--plan-snapshots`` daily snapshots of 32
buckets (one delta file per bucket a day, a new base every 25 days), then ``plan_prune`` over
that listing, the snapshots given as ``SnapshotInfo`` objects: no I/O. Two cases: the first
prune of that repository (nearly every snapshot and segment goes) and a steady one (a window
that keeps nearly everything). Medians of ``--plan-rounds``.

``delete``: prune deleting ``--delete-objects`` objects (segments and their sidecars below the
anchor's cut: one snapshot, every segment before it) against a plain loop over the same keys in
the same run: on S3 (s3proxy, started by ``deploy/local`` unless ``AWS_ENDPOINT_URL_S3`` names a
server) boto3 ``delete_objects`` with 1,000 keys a call; on ``file://`` ``os.unlink`` of each
file then one fsync per directory. Prune is timed whole (lease, LIST, manifest and state reads,
retention record, deletes, prune state, release). Rounds alternate which goes first; medians.

Figures on stdout as JSON, progress on stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from daemon.audit.idfilter import update_index
from daemon.changelog.keys import SegmentKey, watermark_key
from daemon.changelog.repository import Repository
from daemon.errors import StoreError
from daemon.lifecycle.listing import Listing, SnapshotInfo, gather_listing, sort_listing
from daemon.lifecycle.plan import plan_prune
from daemon.lifecycle.policy import DAY_MS, Policy, SnapshotPoint, choose_kept
from daemon.lifecycle.prune import prune
from daemon.logs import configure_logging
from daemon.objectstore import ObjectStore, open_store
from daemon.snapshot.compactor import Compactor
from daemon.snapshot.manifest import Manifest, data_key, manifest_key
from daemon.snapshot.state import Catalog
from tests.bench.bench_restore import peak_rss_mb
from tests.bench.restore_repo import (
    COLLECTION,
    PARTITIONS,
    TOPIC,
    PartitionLogs,
    Pool,
    partition_of,
    say,
    write_snapshot,
)

HOUR_MS = 3_600_000
PRUNE_AFTER_MS = 30 * 60_000
"""A scheduled prune runs this long after the daily compaction."""


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- part 1: cost after prune -------------------------------------------------------------------
def bytes_by_kind(listing: Listing) -> dict[str, int]:
    return {
        "data": sum(listing.data.values()),
        "manifests": sum(s.manifest_bytes for s in listing.snapshots.values()),
        "segments": sum(b for v in listing.segments.values() for _, b in v),
        "sidecars": sum(b for v in listing.sidecars.values() for _, b in v),
        "index": sum(i.size for i in listing.index),
        "quarantine": sum(b for _, b in listing.quarantine),
        "records": sum(r[3] for r in listing.records),
        "protected": sum(b for _, b in listing.protected.values()),
        "unknown": sum(b for _, b in listing.unknown),
    }


def least_needed(listing: Listing, policy: Policy, now_ms: int) -> dict[str, Any]:
    """The least the policy needs at ``now_ms``, from the objects listed: the distinct data
    files of the snapshots ``choose_kept`` keeps, their manifests, and the segments and
    sidecars from the anchor's cut on (a segment that ends after the cut is needed whole)."""
    snaps = listing.snapshots
    keep = choose_kept([SnapshotPoint(s.id, s.cut_time_ms) for s in snaps.values()], policy,
                       now_ms, listing.pins)
    files: set[str] = set()
    for sid in keep.reasons:
        files |= snaps[sid].files
    missing = sorted(f for f in files if f not in listing.data)
    assert not missing, f"kept snapshots reference missing files: {missing[:3]}"
    floor = snaps[keep.anchor.id].cut if keep.anchor is not None else {}

    def needed(topic: str, partition: int, end: int) -> bool:
        return end > floor.get(topic, {}).get(str(partition), 0)

    return {
        "kept": len(keep.reasons),
        "anchor": keep.anchor.id if keep.anchor else None,
        "files": files,
        "bytes": {
            "data": sum(listing.data[f] for f in files),
            "manifests": sum(snaps[sid].manifest_bytes for sid in keep.reasons),
            "segments": sum(b for (t, p), v in listing.segments.items() for k, b in v
                            if needed(t, p, k.end)),
            "sidecars": sum(b for (t, p), v in listing.sidecars.items() for k, b in v
                            if needed(t, p, k.end)),
        },
    }


def measure_day(repo: Repository, policy: Policy, now_ms: int) -> dict[str, Any]:
    listing = gather_listing(repo, now_ms)
    actual = bytes_by_kind(listing)
    least = least_needed(listing, policy, now_ms)
    total, least_total = sum(actual.values()), sum(least["bytes"].values())
    extra = {k: f for k, f in listing.data.items() if k not in least["files"]}
    referenced = set().union(*(s.files for s in listing.snapshots.values()))
    waiting = {k: b for k, b in extra.items() if k not in referenced}
    seen = listing.state.orphans_seen
    over = {k: b - least["bytes"].get(k, 0) for k, b in actual.items()}
    return {
        "bytes": total, "least": least_total, "ratio": total / least_total,
        "by_kind": actual, "least_by_kind": least["bytes"],
        "over_by_kind": {k: b for k, b in over.items() if b},
        "snapshots": len(listing.snapshots), "kept": least["kept"],
        "data_files": len(listing.data), "data_files_needed": len(least["files"]),
        "extra_data_files": len(extra), "extra_data_bytes": sum(extra.values()),
        "unreferenced_data_bytes": sum(waiting.values()),
        "unreferenced_seen_hours_ago": sorted({round((now_ms - seen.get(k, now_ms)) / HOUR_MS, 1)
                                               for k in waiting}),
        "segments": sum(len(v) for v in listing.segments.values()),
    }


def simulate(root: Path, args: argparse.Namespace, policy: Policy) -> dict[str, Any]:
    repo = Repository(open_store(f"file://{root}"))
    pool = Pool(args.dim)
    began = time.monotonic()
    built = write_snapshot(repo, pool, args.records)
    say(f"day 0: snapshot of {args.records:,} records x {args.dim} dims, "
        f"{built.snapshot_bytes / 1e9:.2f} GB in {built.buckets} buckets "
        f"({time.monotonic() - began:.0f} s)")
    rng = random.Random(args.seed)
    versions = array("i", bytes(4 * args.records))
    per_day = round(args.records * args.change)
    logs = PartitionLogs(repo, [built.cut[str(p)] for p in range(PARTITIONS)], 1 << 62)
    day0 = built.cut_time_ms
    days: list[dict[str, Any]] = []
    for d in range(1, args.days + 1):
        t = {"log": time.monotonic()}
        changed = rng.sample(range(args.records), per_day)
        for h in range(24):
            burst_ms = day0 + (d - 1) * DAY_MS + h * HOUR_MS + 5 * 60_000
            for j, i in enumerate(changed[h * per_day // 24:(h + 1) * per_day // 24]):
                versions[i] += 1
                p = partition_of(i)
                logs.append(p, pool.change(i, versions[i], "upsert", logs.next_offset[p],
                                           burst_ms + j))
            for p in range(PARTITIONS):
                logs.seal(p)
        now = day0 + d * DAY_MS
        logs.finish(now)  # the watermarks vouch for the whole day
        t["compaction"] = time.monotonic()
        Compactor(repo, [TOPIC]).compact(now)
        t["index"] = time.monotonic()
        update_index(repo, [TOPIC])
        t["prune"] = time.monotonic()
        result = prune(repo, policy, confirm=True, now_ms=now + PRUNE_AFTER_MS)
        t["measure"] = time.monotonic()
        fig = measure_day(repo, policy, now + PRUNE_AFTER_MS)
        t["end"] = time.monotonic()
        stamps = list(t.values())
        fig.update(day=d, seconds={k: round(b - a, 2) for k, a, b in
                                   zip(t, stamps, stamps[1:], strict=False)},
                   deleted={k: n for k, (n, _) in result.deleted.items()},
                   deleted_bytes=sum(b for _, b in result.deleted.values()))
        days.append(fig)
        say(f"day {d}: {fig['bytes'] / 1e9:.3f} GB after prune, least {fig['least'] / 1e9:.3f} GB,"
            f" ratio {fig['ratio']:.3f}; {fig['snapshots']} snapshots, "
            f"{fig['unreferenced_data_bytes'] / 1e6:.0f} MB waiting for grace; over the least "
            f"{fig['over_by_kind']} (seconds {fig['seconds']})")
    return {"snapshot_bytes": built.snapshot_bytes, "buckets": built.buckets,
            "changes_per_day": per_day, "days": days, "peak_rss_mb": peak_rss_mb(),
            "seconds": round(time.monotonic() - began, 1)}


def run_cost(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    policy = Policy(window_ms=round(args.window_days * DAY_MS),
                    grace_ms=round(args.grace_hours * HOUR_MS), keep_daily=args.keep_daily,
                    keep_weekly=args.keep_weekly, keep_monthly=args.keep_monthly)
    say(f"cost: {args.days} days of {args.records:,} records x {args.dim} dims, "
        f"{args.change:.1%} changed a day; {policy}")
    sim = simulate(work / "cost", args, policy)
    shutil.rmtree(work / "cost", ignore_errors=True)
    days = sim["days"]
    last = days[-1]
    settled = [d for d in days if d["day"] > args.window_days + args.grace_hours / 24 + 1]
    ratios = [d["ratio"] for d in settled] or [last["ratio"]]
    worst = max(settled or [last], key=lambda d: d["ratio"])
    return {
        "records": args.records, "dim": args.dim, "days": args.days, "change": args.change,
        "policy": {"window_days": args.window_days, "grace_hours": args.grace_hours,
                   "keep_daily": args.keep_daily, "keep_weekly": args.keep_weekly,
                   "keep_monthly": args.keep_monthly},
        "snapshot_bytes": sim["snapshot_bytes"], "buckets": sim["buckets"],
        "changes_per_day": sim["changes_per_day"],
        "end": {k: last[k] for k in ("bytes", "least", "ratio", "by_kind", "least_by_kind",
                                     "over_by_kind",
                                     "snapshots", "kept", "data_files", "data_files_needed",
                                     "extra_data_bytes", "unreferenced_data_bytes",
                                     "unreferenced_seen_hours_ago")},
        "ratio_after_window": {"median": round(median(ratios), 4), "max": round(max(ratios), 4),
                               "max_on_day": worst["day"], "days_over_1_2":
                                   [d["day"] for d in settled if d["ratio"] > 1.2]},
        "per_day": [{"day": d["day"], "bytes": d["bytes"], "least": d["least"],
                     "ratio": round(d["ratio"], 4), "snapshots": d["snapshots"],
                     "kept": d["kept"], "extra_data_bytes": d["extra_data_bytes"],
                     "unreferenced_data_bytes": d["unreferenced_data_bytes"],
                     "over_by_kind": d["over_by_kind"], "deleted": d["deleted"],
                     "deleted_bytes": d["deleted_bytes"],
                     "seconds": d["seconds"]} for d in days],
        "target_1_2": last["ratio"] <= 1.2,
        "peak_rss_mb": sim["peak_rss_mb"], "seconds": sim["seconds"],
    }


# -- part 2: planning speed ---------------------------------------------------------------------
PLAN_PARTITIONS = 12
PLAN_BUCKETS = 32
PLAN_REWRITE_EVERY = 25
PLAN_T0 = 1_700_000_000_000


def synthetic_repository(segments: int, snapshots: int) -> tuple[list[tuple[str, int]],
                                                                  dict[str, SnapshotInfo], int]:
    """The (key, size) pairs a LIST of the repository returns (sorted, as S3 lists), its
    snapshots as prune reads them, and the time of the newest. One snapshot a day; the log's
    segments spread evenly over the days and ``PLAN_PARTITIONS`` partitions (each with its
    sidecar, and one id-index object per partition and day); ``PLAN_BUCKETS`` buckets, each
    day a delta file per bucket, a new base every ``PLAN_REWRITE_EVERY`` days."""
    rng = random.Random(7)
    items: list[tuple[str, int]] = [("vecwal.json", 200)]
    per_day = segments / snapshots
    offsets = [0] * PLAN_PARTITIONS
    done = 0
    infos: dict[str, SnapshotInfo] = {}
    chain: list[list[str]] = [[] for _ in range(PLAN_BUCKETS)]
    for day in range(snapshots):
        cut_time = PLAN_T0 + day * DAY_MS
        target = round((day + 1) * per_day)
        today = [(done + k) % PLAN_PARTITIONS for k in range(target - done)]
        done = target
        first = list(offsets)
        for p in today:
            n = rng.randrange(100, 400)
            key = SegmentKey(TOPIC, p, offsets[p], offsets[p] + n)
            offsets[p] += n
            items.append((key.avro, n * 3_700))
            items.append((key.sidecar, n * 40))
        for p in range(PLAN_PARTITIONS):
            if offsets[p] > first[p]:
                items.append((f"index/{TOPIC}/p={p:05d}/{first[p]:020d}-{offsets[p]:020d}-"
                              f"{rng.getrandbits(32):08x}.idf", 30_000))
        sid = f"{cut_time:013d}-{rng.getrandbits(32):08x}"
        for b in range(PLAN_BUCKETS):
            if day % PLAN_REWRITE_EVERY == 0:
                chain[b] = [data_key(COLLECTION, b, sid)]
                items.append((chain[b][0], 110_000_000))
            else:
                chain[b].append(data_key(COLLECTION, b, sid, "delta"))
                items.append((chain[b][-1], 1_100_000))
        files = frozenset(k for c in chain for k in c)
        mkey = manifest_key(sid)
        items.append((mkey, 400 * len(files)))
        infos[sid] = SnapshotInfo(sid, cut_time, {TOPIC: {str(p): offsets[p]
                                                          for p in range(PLAN_PARTITIONS)}},
                                  files, 400 * len(files))
    items += [(watermark_key(TOPIC, p), 300) for p in range(PLAN_PARTITIONS)]
    items.sort()
    return items, infos, PLAN_T0 + (snapshots - 1) * DAY_MS


def timed(fn: Callable[[], Any], rounds: int) -> tuple[list[float], Any]:
    times, value = [], None
    for _ in range(rounds):
        began = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - began)
    return times, value


def run_plan(args: argparse.Namespace) -> dict[str, Any]:
    say(f"plan: {args.plan_segments:,} segments, {args.plan_snapshots:,} snapshots")
    items, infos, newest = synthetic_repository(args.plan_segments, args.plan_snapshots)
    sort_times, (listing, manifest_keys) = timed(lambda: sort_listing(items), args.plan_rounds)
    assert len(manifest_keys) == len(infos)
    listing.snapshots = infos
    say(f"  sort_listing over {len(items):,} keys: median {median(sort_times):.3f} s")
    now = newest + HOUR_MS
    cases = {
        "first prune (7d + 4 weekly + 3 monthly, grace 24h)":
            Policy(window_ms=7 * DAY_MS, grace_ms=DAY_MS, keep_weekly=4, keep_monthly=3),
        "steady (window keeps all but the oldest day)":
            Policy(window_ms=(args.plan_snapshots - 3) * DAY_MS, grace_ms=DAY_MS),
    }
    out: dict[str, Any] = {
        "segments": args.plan_segments, "snapshots": args.plan_snapshots,
        "keys": len(items), "data_files": len(listing.data), "rounds": args.plan_rounds,
        "snapshot_files_referenced": sum(len(s.files) for s in infos.values()),
        "sort_listing_s": round(median(sort_times), 3),
        "sort_listing_runs_s": [round(t, 3) for t in sort_times], "cases": {}}
    for name, policy in cases.items():
        times, plan = timed(functools.partial(plan_prune, listing, policy, now),
                            args.plan_rounds)
        objects, size = plan.total
        out["cases"][name] = {
            "plan_s": round(median(times), 3), "runs_s": [round(t, 3) for t in times],
            "delete_objects": objects, "delete_bytes": size, "kept": len(plan.keep.reasons),
            "by_kind": {k: v["objects"] for k, v in plan.counts().items()},
            "target_10_s": median(times) < 10}
        say(f"  plan_prune, {name}: median {median(times):.3f} s, {objects:,} objects to delete")
        if args.profile:
            prof = cProfile.Profile()
            prof.runcall(plan_prune, listing, policy, now)
            out["cases"][name]["profile_top"] = profile_top(prof)
    return out


def profile_top(prof: cProfile.Profile, n: int = 12) -> list[dict[str, Any]]:
    stats = pstats.Stats(prof)
    rows = []
    for (filename, line, func), (_cc, calls, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(filename).name}:{line}({func})", "calls": calls,
                     "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:n]


# -- part 3: delete rate ------------------------------------------------------------------------
DELETE_CUT_MS = 1_760_000_000_000
DELETE_BODY = 4096


def delete_keys(objects: int) -> list[str]:
    """Segments and their sidecars, ``objects`` keys in all, over ``PARTITIONS`` partitions."""
    keys = []
    for k in range(objects // 2):
        p, n = k % PARTITIONS, k // PARTITIONS
        seg = SegmentKey(TOPIC, p, n * 100, (n + 1) * 100)
        keys += [seg.avro, seg.sidecar]
    return keys


def delete_repository(store: ObjectStore, keys: list[str], put: Callable[[str, bytes], None]
                      ) -> int:
    """A repository whose only snapshot's cut lies after every segment of ``keys``: prune
    deletes exactly those (put with ``put``, in parallel). Returns the time to prune at."""
    repo = Repository(store)
    repo.ensure_initialized()
    ends = [0] * PARTITIONS
    for key in keys:
        seg = SegmentKey.parse(key)
        if seg is not None:
            ends[seg.partition] = max(ends[seg.partition], seg.end)
    cut = {TOPIC: {str(p): ends[p] for p in range(PARTITIONS)}}
    sid = f"{DELETE_CUT_MS:013d}-{uuid.uuid4().hex[:8]}"
    repo.put_immutable(manifest_key(sid), Manifest(sid, None, DELETE_CUT_MS, DELETE_CUT_MS, cut,
                                                   Catalog().to_json()).to_json())
    body = os.urandom(DELETE_BODY)
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(put, keys, [body] * len(keys)))
    return DELETE_CUT_MS + 10 * DAY_MS


class TimedStore:
    """The store, with the time spent in ``delete_many`` and when it was first called."""

    def __init__(self, inner: ObjectStore) -> None:
        self._inner = inner
        self.delete_s = 0.0
        self.first_delete: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def delete_many(self, keys: Sequence[str]) -> dict[str, StoreError]:
        began = time.perf_counter()
        if self.first_delete is None:
            self.first_delete = began
        try:
            return self._inner.delete_many(keys)
        finally:
            self.delete_s += time.perf_counter() - began


def time_prune(store: ObjectStore, now: int, objects: int, profile: bool) -> dict[str, Any]:
    timed_store = TimedStore(store)
    repo = Repository(timed_store)
    policy = Policy(window_ms=7 * DAY_MS, grace_ms=DAY_MS)
    prof = cProfile.Profile() if profile else None
    began = time.perf_counter()
    if prof is not None:
        result = prof.runcall(prune, repo, policy, confirm=True, now_ms=now)
    else:
        result = prune(repo, policy, confirm=True, now_ms=now)
    seconds = time.perf_counter() - began
    deleted = sum(n for n, _ in result.deleted.values())
    assert deleted == objects and not result.failed, (deleted, result.failed[:3])
    out: dict[str, Any] = {"seconds": seconds, "delete_s": timed_store.delete_s,
           "before_first_delete_s": (timed_store.first_delete or began) - began}
    if prof is not None:
        out["profile_top"] = profile_top(prof)
    return out


def time_lists(store: ObjectStore) -> dict[str, float]:
    """A LIST of the whole repository, as prune's ``gather_listing`` makes, and the same keys
    listed partition by partition (one after the other), for comparison."""
    began = time.perf_counter()
    whole = sum(1 for _ in store.list(""))
    mid = time.perf_counter()
    parts = sum(1 for p in range(PARTITIONS) for _ in store.list(f"log/{TOPIC}/p={p:05d}/"))
    end = time.perf_counter()
    assert parts <= whole, (parts, whole)
    return {"list_s": mid - began, "list_by_partition_s": end - mid}


def run_delete_file(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    keys = delete_keys(args.delete_objects)
    rounds: list[dict[str, Any]] = []
    for r in range(args.delete_rounds):
        fig: dict[str, Any] = {}
        for what in (("loop", "prune") if r % 2 == 0 else ("prune", "loop")):
            root = work / f"del-{r}-{what}"
            store = open_store(f"file://{root}")

            def put(key: str, body: bytes, root: Path = root) -> None:
                path = root.joinpath(*key.split("/"))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(body)

            now = delete_repository(store, keys, put)
            os.sync()
            if what == "loop":
                fig.update(time_lists(store))
                began = time.perf_counter()
                parents = set()
                for key in keys:
                    path = root.joinpath(*key.split("/"))
                    os.unlink(path)
                    parents.add(path.parent)
                for parent in parents:
                    fd = os.open(parent, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                fig["loop_s"] = time.perf_counter() - began
            else:
                profile = args.profile and r == args.delete_rounds - 1
                fig.update({f"prune_{k}": v for k, v in
                            time_prune(store, now, len(keys), profile).items()})
            shutil.rmtree(root, ignore_errors=True)
        rounds.append(fig)
        say(f"  file:// round {r}: loop {len(keys) / fig['loop_s']:,.0f}/s, prune "
            f"{len(keys) / fig['prune_seconds']:,.0f}/s (deletes alone "
            f"{len(keys) / fig['prune_delete_s']:,.0f}/s)")
    return summarize_delete(rounds, len(keys), "os.unlink of each file, one fsync per directory")


def run_delete_s3(args: argparse.Namespace) -> dict[str, Any]:
    import boto3

    from tests.bench.services import services

    keys = delete_keys(args.delete_objects)
    rounds: list[dict[str, Any]] = []
    with services(kafka=False) as svc:
        os.environ.update(svc.s3_env)
        client = boto3.client("s3", endpoint_url=svc.s3_endpoint, region_name="us-east-1",
                              aws_access_key_id=svc.s3_env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=svc.s3_env["AWS_SECRET_ACCESS_KEY"])
        for r in range(args.delete_rounds):
            fig: dict[str, Any] = {}
            for what in (("loop", "prune") if r % 2 == 0 else ("prune", "loop")):
                bucket = svc.bucket()
                store = open_store(f"s3://{bucket}/repo", endpoint_url=svc.s3_endpoint)

                def put(key: str, body: bytes, bucket: str = bucket) -> None:
                    client.put_object(Bucket=bucket, Key=f"repo/{key}", Body=body)

                now = delete_repository(store, keys, put)
                if what == "loop":
                    fig.update(time_lists(store))
                    began = time.perf_counter()
                    for i in range(0, len(keys), 1000):
                        resp = client.delete_objects(Bucket=bucket, Delete={
                            "Objects": [{"Key": f"repo/{k}"} for k in keys[i:i + 1000]],
                            "Quiet": True})
                        assert not resp.get("Errors"), resp["Errors"][:3]
                    fig["loop_s"] = time.perf_counter() - began
                else:
                    profile = args.profile and r == args.delete_rounds - 1
                    fig.update({f"prune_{k}": v for k, v in
                                time_prune(store, now, len(keys), profile).items()})
                store.close()
            rounds.append(fig)
            say(f"  S3 round {r}: loop {len(keys) / fig['loop_s']:,.0f}/s, prune "
                f"{len(keys) / fig['prune_seconds']:,.0f}/s (deletes alone "
                f"{len(keys) / fig['prune_delete_s']:,.0f}/s, "
                f"{fig['prune_before_first_delete_s']:.2f} s before the first)")
    return summarize_delete(rounds, len(keys), "boto3 delete_objects, 1,000 keys a call")


def summarize_delete(rounds: list[dict[str, Any]], objects: int, baseline: str
                     ) -> dict[str, Any]:
    loop = median([r["loop_s"] for r in rounds])
    whole = median([r["prune_seconds"] for r in rounds])
    deletes = median([r["prune_delete_s"] for r in rounds])
    out: dict[str, Any] = {"objects": objects, "rounds": len(rounds), "baseline": baseline,
           "loop_s": round(loop, 3), "loop_per_s": round(objects / loop),
           "prune_s": round(whole, 3), "prune_per_s": round(objects / whole),
           "prune_delete_many_s": round(deletes, 3),
           "prune_before_first_delete_s": round(median([r["prune_before_first_delete_s"]
                                                        for r in rounds]), 3),
           "list_s": round(median([r["list_s"] for r in rounds]), 3),
           "list_by_partition_s": round(median([r["list_by_partition_s"] for r in rounds]), 3),
           "ratio": round(loop / whole, 3),
           "ratio_delete_phase": round(loop / deletes, 3),
           "ratio_per_round": [round(r["loop_s"] / r["prune_seconds"], 3) for r in rounds],
           "target_0_8": loop / whole >= 0.8}
    for r in rounds:
        if "prune_profile_top" in r:
            out["prune_profile_top"] = r["prune_profile_top"]
    return out


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="cost,plan,delete")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--change", type=float, default=0.01, help="records changed a day")
    ap.add_argument("--window-days", type=float, default=7)
    ap.add_argument("--grace-hours", type=float, default=24)
    ap.add_argument("--keep-daily", type=int, default=0)
    ap.add_argument("--keep-weekly", type=int, default=4)
    ap.add_argument("--keep-monthly", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--plan-segments", type=int, default=100_000)
    ap.add_argument("--plan-snapshots", type=int, default=1_000)
    ap.add_argument("--plan-rounds", type=int, default=5)
    ap.add_argument("--delete-objects", type=int, default=20_000)
    ap.add_argument("--delete-rounds", type=int, default=3)
    ap.add_argument("--stores", default="file,s3")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile one more plan of each case and the last S3 prune")
    ap.add_argument("--workdir", default=None, help="default: a new directory under $TMPDIR")
    args = ap.parse_args(argv)
    configure_logging("warning", "console")
    parts = args.parts.split(",")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vecwal-bench-prune-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    try:
        if "plan" in parts:
            result["plan"] = run_plan(args)
        if "delete" in parts:
            stores = args.stores.split(",")
            say(f"delete: {args.delete_objects:,} objects, {args.delete_rounds} rounds")
            if "file" in stores:
                result["delete_file"] = run_delete_file(args, work)
            if "s3" in stores:
                result["delete_s3"] = run_delete_s3(args)
        if "cost" in parts:
            result["cost"] = run_cost(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
