"""Incremental compaction: a snapshot of N records, then 1% of the records changed (upserts
to existing ids) in the log, then a compaction. How many bytes does the second snapshot write
against the size of the whole snapshot, how long does it take, and how much memory do
compaction and a restore of the result need as the corpus grows?

    python -m tests.bench.bench_compaction [--points 1000000x768] [--change-fraction 0.01]
                                           [--locality spread|hot] [--rounds 3]

``--points`` lists N x dim pairs, measured one after the other (each repository is deleted
before the next is built). The repository is built as in ``bench_restore`` (snapshot files
and manifest, then the log after its cut, straight on a file:// store). ``spread`` picks the
changed ids uniformly from all records, so they fall in every bucket; ``hot`` picks them only
from the records of the first ``--hot-buckets`` buckets, the best case of a layout that keeps
changes together.

Each compaction round runs ``Compactor.compact()`` in a child process (peak RSS is the
child's own high-water mark, VmHWM); between rounds the new snapshot (manifest and data
files) is deleted so the next round redoes the same work. After the last round a restore of
the new snapshot to ``dir:`` runs in a child process too (``bench_restore``'s child).
Figures on stdout as JSON, progress on stderr.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from daemon.changelog.repository import Repository
from daemon.logs import configure_logging
from daemon.objectstore import open_store
from daemon.rows import bucket_of
from daemon.snapshot.manifest import manifest_key
from tests.bench.bench_restore import peak_rss_mb, spawn
from tests.bench.restore_repo import TOPIC, Built, Pool, id_of, say, tenant_of, write_log, write_snapshot


def changed_ids(n: int, count: int, buckets: int, locality: str, hot_buckets: int,
                seed: int) -> list[int]:
    """``count`` distinct existing record indexes: uniform (``spread``) or only from records
    whose bucket is below ``hot_buckets`` (``hot``)."""
    rng = random.Random(seed)
    if locality == "spread":
        return rng.sample(range(n), count)
    hot = [i for i in range(n) if bucket_of(tenant_of(i), id_of(i), buckets) < hot_buckets]
    if count > len(hot):
        raise SystemExit(f"--hot-buckets {hot_buckets} holds {len(hot):,} records, fewer than "
                         f"the {count:,} to change")
    return rng.sample(hot, count)


def child_compact(repo_path: str, delta_ratio: float) -> dict[str, Any]:
    from daemon.snapshot.compactor import Compactor

    rss_idle = peak_rss_mb()
    repo = Repository(open_store(f"file://{repo_path}"))
    began = time.monotonic()
    compactor = Compactor(repo, [TOPIC], delta_ratio=delta_ratio)
    m = compactor.compact()
    seconds = time.monotonic() - began
    files = [f for c in m.collections.values() for f in c.files]
    new = [f for f in files if f"/{m.id}." in f.path]
    assert sum(f.bytes for f in new) == compactor.written
    return {"snapshot": m.id, "seconds": seconds, "records": m.records,
            "bytes_total": m.total_bytes, "bytes_written": compactor.written,
            "deltas_written": sum(1 for f in new if f.kind == "delta"),
            "manifest_bytes": len(m.to_json()), "files": len(files), "files_written": len(new),
            "paths_written": [f.path for f in new],
            "rss_after_imports_mb": rss_idle, "peak_rss_mb": peak_rss_mb()}


def expected_touched(buckets: int, changes: int) -> float:
    """Share of buckets that uniform random changes to ``changes`` distinct keys touch."""
    return 1 - (1 - 1 / buckets) ** changes


def buckets_for(share: float, changes: int) -> int:
    """Bucket count at which uniform changes touch at most ``share`` of the buckets."""
    untouched_per_change: float = (1 - share) ** (1 / changes)
    return math.ceil(1 / (1 - untouched_per_change))


def measure_point(work: Path, n: int, dim: int, args: argparse.Namespace) -> dict[str, Any]:
    root = work / f"repo-{n}x{dim}"
    repo = Repository(open_store(f"file://{root}"))
    pool = Pool(dim)
    say(f"{n:,} x {dim}: building the snapshot")
    built: Built = write_snapshot(repo, pool, n, args.buckets or None)
    count = round(n * args.change_fraction)
    ids = changed_ids(n, count, built.buckets, args.locality, args.hot_buckets, seed=3)
    write_log(repo, pool, built, (("upsert", i) for i in ids))
    touched_buckets = len({bucket_of(tenant_of(i), id_of(i), built.buckets) for i in ids})
    say(f"{n:,} x {dim}: snapshot {built.snapshot_bytes / 1e9:.2f} GB in {built.buckets} "
        f"buckets, {count:,} changes ({built.log_bytes / 1e6:.0f} MB of log) touching "
        f"{touched_buckets} buckets; built in {sum(built.seconds.values()):.0f}s")
    rounds: list[tuple[dict[str, Any], int]] = []
    baseline: list[dict[str, Any]] = []
    for r in range(args.rounds):
        # The baseline first, then the compaction measured: each is undone but the last,
        # so every round does the same work and the restore below reads deltas.
        for mode, ratio in (("rewrite", 0.0), ("delta", args.delta_ratio)):
            res, _ = spawn(["--child", "compact", "--repo", str(root),
                            "--delta-ratio", str(ratio)], "tests.bench.bench_compaction")
            rss = res["peak_rss_mb"]
            (rounds.append((res, rss)) if mode == "delta" else baseline.append(res))
            say(f"  compaction {r} ({mode}): {res['seconds']:.1f}s, wrote "
                f"{res['bytes_written'] / 1e9:.3f} GB "
                f"({res['bytes_written'] / built.snapshot_bytes:.1%}) in {res['files_written']}"
                f" files ({res['deltas_written']} deltas), peak RSS {rss} MB")
            if mode == "rewrite" or r < args.rounds - 1:
                for path in res["paths_written"]:
                    repo.store.delete(path)
                repo.store.delete(manifest_key(res["snapshot"]))
    dest = work / "restore-out"
    restored, _ = spawn(["--child", "restore", "--repo", str(root), "--out", str(dest),
                         "--workers", "1"])
    restore_rss = restored["peak_rss_mb"]
    shutil.rmtree(dest)
    say(f"  restore of the new snapshot: {restored['records']:,} records in "
        f"{restored['execute_s']:.1f}s (+{restored['validate_s']:.1f}s validation), "
        f"peak RSS {restore_rss} MB")
    assert restored["records"] == n, (restored["records"], n)
    last = rounds[-1][0]
    written = last["bytes_written"]
    seconds = statistics.median(r["seconds"] for r, _ in rounds)
    shutil.rmtree(root)
    return {
        "records": n, "dim": dim, "buckets": built.buckets,
        "records_per_bucket": round(n / built.buckets),
        "snapshot_bytes": built.snapshot_bytes,
        "changes": count, "change_fraction": args.change_fraction, "locality": args.locality,
        "log_bytes": built.log_bytes, "buckets_touched": touched_buckets,
        "buckets_touched_expected_if_uniform": round(
            built.buckets * expected_touched(built.buckets, count), 1),
        "compaction": {
            "rounds": args.rounds, "seconds": round(seconds, 1),
            "records_per_s": round(n / seconds),
            "bytes_written": written, "files_written": last["files_written"],
            "manifest_bytes": last["manifest_bytes"],
            "written_share_of_snapshot": round(written / built.snapshot_bytes, 4),
            "peak_rss_mb": round(statistics.median(rss for _, rss in rounds)),
            "rss_after_imports_mb": last["rss_after_imports_mb"],
            "delta_ratio": args.delta_ratio, "deltas_written": last["deltas_written"],
        },
        "baseline_rewrite": {
            "seconds": round(statistics.median(b["seconds"] for b in baseline), 1),
            "bytes_written": baseline[-1]["bytes_written"],
            "written_share_of_snapshot": round(baseline[-1]["bytes_written"]
                                               / built.snapshot_bytes, 4),
            "peak_rss_mb": round(statistics.median(b["peak_rss_mb"] for b in baseline)),
        },
        "bytes_written_vs_rewrite": round(written / baseline[-1]["bytes_written"], 4),
        "restore": {
            "seconds": round(restored["execute_s"], 1),
            "validate_s": round(restored["validate_s"], 1),
            "records_per_s": round(n / restored["execute_s"]),
            "peak_rss_mb": restore_rss,
            "peak_rss_execute_mb": restored["peak_rss_execute_mb"],
            "rss_after_imports_mb": restored["rss_after_imports_mb"],
        },
        "uniform_changes_need_buckets_for_5pct": buckets_for(0.05, count),
        "goal_written_at_most_5pct": written <= 0.05 * built.snapshot_bytes,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", default="1000000x768",
                    help="comma-separated RECORDSxDIM, e.g. 1000000x768,4000000x192")
    ap.add_argument("--change-fraction", type=float, default=0.01)
    ap.add_argument("--locality", choices=["spread", "hot"], default="spread")
    ap.add_argument("--hot-buckets", type=int, default=1)
    ap.add_argument("--buckets", type=int, default=0, help="0: as the compactor chooses")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--delta-ratio", type=float, default=0.25)
    ap.add_argument("--workdir", default=None, help="default: a new directory under $TMPDIR")
    ap.add_argument("--child", choices=["compact"], help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure_logging("warning", "console")  # figures on stdout, nothing else
    if args.child == "compact":
        res = child_compact(args.repo, args.delta_ratio)
        print(orjson.dumps(res).decode())
        return res
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vecwal-bench-compaction-"))
    work.mkdir(parents=True, exist_ok=True)
    points = []
    try:
        for point in args.points.split(","):
            n, _, dim = point.partition("x")
            points.append(measure_point(work, int(n), int(dim or 768), args))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"points": points}
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return result


if __name__ == "__main__":
    main()
