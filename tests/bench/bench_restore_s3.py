"""Restore from S3 at bucket speed, with flat memory (issue 15, part 3): a snapshot of N records
x 768 dims (and optionally log events after it) built on the local S3 server, restored to
``dir:``, against the server's own GET bandwidth measured in the same run.

    python -m tests.bench.bench_restore_s3 [--sizes 1000000,2000000,1000000+100000]
                                           [--workers 2] [--rounds 3] [--before REF]

For each size (N records, or N+M: N records and M log events after the snapshot, the mix of
``restore_repo.mixed_ops``): a fresh S3 bucket holds the repository
(``restore_repo.write_snapshot`` and ``write_log`` on an ``s3://`` store: the bucket files
and manifest as the compactor writes them, segments of about 32 MiB), with ``--buckets`` 64
for every size: a collection keeps the bucket count of its first compaction, so its bucket
files grow with it (55 MB each at 1M records, 110 MB at 2M, 220 MB at 4M: over 64 MiB a
file goes up in parts, ``objectstore.s3multipart``; s3proxy refused one PUT of 130 MiB). Without log events
every bucket is copied whole; with them every bucket is merged with its changes. Then, each
round, every measurement in a child process of its own:

* **GET baseline**: the server's own GET bandwidth on the same objects with the same
  parallelism as the restore: ``--workers`` processes, each reading its share of the bucket
  files (bucket modulo workers, as the restore's shards) with ``DEPTH`` ranged GETs of
  ``PART_BYTES`` in flight through a plain boto3 client, bytes discarded;
* **GET and write baseline**: the same GETs, each object's parts written to a local file as
  they arrive (``atomic_write``, not durable, the tree synced at the end): a copy of the
  bucket files to local disk, which a restore to ``dir:`` cannot beat on this machine;
* **write baseline**: the local disk's own bandwidth for the restore's output: files of the
  same sizes written from one buffer in memory by ``--workers`` processes as the copy writes
  them, the tree synced at the end (no S3);
* **restore**: plan, ``execute`` to ``dir:`` with ``--workers`` worker processes (the CLI's
  path), validation timed apart (``bench_restore.child_restore``); peak RSS of the process
  tree (the child and its workers, sampled every 20 ms);
* **before** (with ``--before REF``): the same restore with the library of commit REF
  (``git archive REF daemon``, the built native modules copied in), to compare in one run.

Outputs go under ``--out-root`` (default: the work directory, on the disk); ``/dev/shm``
puts them in memory (tmpfs), which shows what the restore reaches when writing costs no disk.

The S3 server is the environment's (``AWS_ENDPOINT_URL_S3``) or the one deploy/local launches
(``tests/bench/services.py``). It runs on the same machine and competes for its cores. Its
files were just written, so they come from the page cache. Figures on stdout as JSON, progress
on stderr.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from daemon.atomic import atomic_write, make_dirs, sync_tree
from daemon.changelog.repository import Repository
from daemon.logs import configure_logging
from daemon.objectstore import open_store
from daemon.snapshot.manifest import data_key
from tests.bench.bench_restore import REPO, child_restore
from tests.bench.restore_repo import Built, Pool, median, mixed_ops, say, write_log, write_snapshot

MODULE = "tests.bench.bench_restore_s3"
PART_BYTES = 8 << 20  # as daemon.objectstore.ranged (not imported: --before runs old code)
DEPTH = 4


def opener(bucket: str, endpoint: str) -> Any:
    """Picklable: how the restore (and its workers) open the repository."""
    return functools.partial(open_store, f"s3://{bucket}/repo", endpoint_url=endpoint)


# -- children ----------------------------------------------------------------------------------
def child_get(bucket: str, endpoint: str, objects: list[tuple[str, int, int]],
              workers: int, write_dir: str | None = None) -> dict[str, Any]:
    """The GET baseline: ``workers`` processes, each its share of ``objects`` (key, size,
    bucket number) by bucket modulo ``workers``, ``DEPTH`` ranged GETs in flight. With
    ``write_dir``, each object's parts are also written to a file there as they arrive (as
    the restore writes a bucket copied whole: ``atomic_write`` of the parts, not durable,
    the tree synced at the end): a copy to local disk, the restore's own ceiling here."""
    import multiprocessing

    shares = [[(k, s) for k, s, b in objects if b % workers == w] for w in range(workers)]
    if write_dir is not None:
        make_dirs(Path(write_dir))
    ctx = multiprocessing.get_context("spawn")
    began = time.monotonic()
    with ctx.Pool(workers) as procs:
        got = procs.starmap(_get_share, [(bucket, endpoint, share, write_dir)
                                         for share in shares])
    if write_dir is not None:
        sync_tree(Path(write_dir))
    seconds = time.monotonic() - began
    if write_dir is not None:
        shutil.rmtree(write_dir)
    return {"bytes": sum(got), "seconds": seconds, "workers": workers, "depth": DEPTH,
            "part_bytes": PART_BYTES, "written": write_dir is not None}


def _get_share(bucket: str, endpoint: str, share: list[tuple[str, int]],
               write_dir: str | None) -> int:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          config=Config(max_pool_connections=DEPTH * 2))

    def get(key: str, start: int, length: int) -> bytes:
        body = client.get_object(Bucket=bucket, Key=f"repo/{key}",
                                 Range=f"bytes={start}-{start + length - 1}")["Body"]
        return body.read()

    def ranges(k: str, size: int) -> list[tuple[str, int, int]]:
        return [(k, start, min(PART_BYTES, size - start)) for start in range(0, size, PART_BYTES)]

    with ThreadPoolExecutor(DEPTH) as pool:  # map keeps DEPTH in flight, in order
        if write_dir is None:
            return sum(len(b) for b in pool.map(lambda r: get(*r),
                                                [r for k, size in share for r in ranges(k, size)]))
        for k, size in share:
            atomic_write(Path(write_dir) / k.replace("/", "_"),
                         pool.map(lambda r: get(*r), ranges(k, size)), durable=False)
        return sum(size for _, size in share)


def child_write(objects: list[tuple[str, int, int]], workers: int, write_dir: str) -> dict[str, Any]:
    """The write baseline: the bucket files' sizes written from memory to ``write_dir``
    (``atomic_write``, not durable, then the tree synced), ``workers`` processes."""
    import multiprocessing

    shares = [[(k, s) for k, s, b in objects if b % workers == w] for w in range(workers)]
    make_dirs(Path(write_dir))
    began = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(workers) as procs:
        got = procs.starmap(_write_share, [(share, write_dir) for share in shares])
    sync_tree(Path(write_dir))
    seconds = time.monotonic() - began
    shutil.rmtree(write_dir)
    return {"bytes": sum(got), "seconds": seconds, "workers": workers}


def _write_share(share: list[tuple[str, int]], write_dir: str) -> int:
    part = memoryview(os.urandom(PART_BYTES))
    for k, size in share:
        atomic_write(Path(write_dir) / k.replace("/", "_"),
                     (part[:min(PART_BYTES, size - start)] for start in range(0, size, PART_BYTES)),
                     durable=False)
    return sum(size for _, size in share)


# -- the run -----------------------------------------------------------------------------------
def spawn(args: list[str], cwd: Path = REPO) -> dict[str, Any]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run([sys.executable, "-m", MODULE, *args], cwd=cwd, stdout=out,
                              stderr=err, check=False, env={**os.environ, "PYTHONPATH": str(cwd)})
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"child {args[:2]} failed ({proc.returncode}):\n"
                               f"{err.read().decode()[-4000:]}")
        return orjson.loads(out.read().splitlines()[-1])  # type: ignore[no-any-return]


def before_tree(ref: str, work: Path, harness: Path = Path(__file__)) -> Path:
    """The library of commit ``ref`` beside a benchmark's ``harness`` (this one's by default),
    to run it with."""
    root = work / f"before-{ref}"
    root.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "daemon", "schemas", "tests"],
                             cwd=REPO, check=True, capture_output=True).stdout
    tar_path = work / "before.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(root, filter="data")
    tar_path.unlink()
    for so in (REPO / "daemon").rglob("*.so"):  # built in place, not in git
        shutil.copy2(so, root / so.relative_to(REPO))
    shutil.copy2(harness, root / "tests" / "bench" / harness.name)
    return root


def measure(size: int, log_events: int, args: argparse.Namespace, env: Any, work: Path,
            before: Path | None) -> dict[str, Any]:
    bucket = env.bucket()
    endpoint = env.s3_endpoint
    repo = Repository(opener(bucket, endpoint)())
    say(f"{size:,} records, {log_events:,} log events: building s3://{bucket}/repo")
    pool = Pool(args.dim)
    built: Built = write_snapshot(repo, pool, size, args.buckets or None)
    if log_events:
        write_log(repo, pool, built, mixed_ops(size, log_events, seed=5))
    manifest_files = [(data_key("docs", b, built.snapshot_id), b) for b in range(built.buckets)]
    objects = [(k, repo.store.head(k).size, b) for k, b in manifest_files]
    say(f"built in {sum(built.seconds.values()):.0f}s: {built.snapshot_bytes / 1e9:.2f} GB in "
        f"{built.buckets} buckets, log {built.log_bytes / 1e6:.0f} MB")
    spec = orjson.dumps({"bucket": bucket, "endpoint": endpoint, "objects": objects,
                         "workers": args.workers}).decode()
    out_root = Path(args.out_root) if args.out_root else work
    gets: list[dict[str, Any]] = []
    writes: list[dict[str, Any]] = []
    copies: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    old: list[dict[str, Any]] = []
    for r in range(args.rounds):
        gets.append(spawn(["--child", "get", "--spec", spec]))
        g = gets[-1]
        say(f"round {r}: GET baseline {g['bytes'] / g['seconds'] / 1e6:,.0f} MB/s")
        writes.append(spawn(["--child", "write", "--spec", spec, "--out", str(out_root / "written")]))
        w = writes[-1]
        say(f"round {r}: write baseline {w['bytes'] / w['seconds'] / 1e6:,.0f} MB/s")
        copies.append(spawn(["--child", "get", "--spec", spec, "--out", str(out_root / "copy")]))
        c = copies[-1]
        say(f"round {r}: GET and write baseline {c['bytes'] / c['seconds'] / 1e6:,.0f} MB/s")
        order = [("after", after, REPO), ("before", old, before)]
        for label, runs, cwd in order if r % 2 == 0 else order[::-1]:  # alternate who's first
            if cwd is None:
                continue
            dest = out_root / f"out-{label}"
            runs.append(spawn(["--child", "restore", "--spec", spec, "--out", str(dest)], cwd))
            shutil.rmtree(dest, ignore_errors=True)
            res = runs[-1]
            say(f"round {r}: restore ({label}) {res['bytes_read'] / res['execute_s'] / 1e6:,.0f}"
                f" MB/s, {res['records'] / res['execute_s']:,.0f} records/s, peak RSS "
                f"{res['peak_rss_tree_execute_mb']} MB (tree)")
    repo.store.delete_many([i.key for i in repo.store.list("")])  # GBs: free the disk
    repo.store.close()
    get_mbps = median([g["bytes"] / g["seconds"] / 1e6 for g in gets])
    copy_mbps = median([c["bytes"] / c["seconds"] / 1e6 for c in copies])

    def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
        if not runs:
            return {}
        ex = median([r["execute_s"] for r in runs])
        mbps = median([r["bytes_read"] / r["execute_s"] / 1e6 for r in runs])
        return {"records": runs[0]["records"], "bytes_read": runs[0]["bytes_read"],
                "execute_s": round(ex, 2), "validate_s": round(median(
                    [r["validate_s"] for r in runs]), 2),
                "mb_per_s": round(mbps), "records_per_s": round(runs[0]["records"] / ex),
                "ratio_to_get_baseline": round(mbps / get_mbps, 3),
                "ratio_to_get_write_baseline": round(mbps / copy_mbps, 3),
                "ratio_per_round": [round((r["bytes_read"] / r["execute_s"] / 1e6)
                                          / (g["bytes"] / g["seconds"] / 1e6), 3)
                                    for r, g in zip(runs, gets, strict=True)],
                # what bounds a restore to dir: here: the GETs or writing its output,
                # whichever was slower in that round
                "ratio_to_slower_baseline_per_round": [
                    round((r["bytes_read"] / r["execute_s"])
                          / min(g["bytes"] / g["seconds"], w["bytes"] / w["seconds"]), 3)
                    for r, g, w in zip(runs, gets, writes, strict=True)],
                "peak_rss_tree_mb": max(r["peak_rss_tree_execute_mb"] for r in runs),
                "peak_rss_tree_mb_per_round": [r["peak_rss_tree_execute_mb"] for r in runs]}

    return {"records": size, "buckets": built.buckets, "snapshot_bytes": built.snapshot_bytes,
            "log_events": built.log_events, "log_bytes": built.log_bytes,
            "get_baseline_mb_per_s": round(get_mbps),
            "get_baseline_per_round": [round(g["bytes"] / g["seconds"] / 1e6) for g in gets],
            "get_write_baseline_mb_per_s": round(copy_mbps),
            "write_baseline_mb_per_s": round(median([w["bytes"] / w["seconds"] / 1e6 for w in writes])),
            "write_baseline_per_round": [round(w["bytes"] / w["seconds"] / 1e6) for w in writes],
            "out_root": str(out_root),
            "get_write_baseline_per_round": [round(c["bytes"] / c["seconds"] / 1e6)
                                             for c in copies],
            "after": summary(after), "before": summary(old)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,2000000,1000000+100000",
                    help="repositories measured, comma-separated: N records, or N+M with M "
                         "log events after the snapshot")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--buckets", type=int, default=64,
                    help="bucket count of every size (0: as the compactor chooses for it). A "
                         "collection keeps the count of its first compaction, so its bucket "
                         "files grow with it (64: 55 MB at 1M records, 110 MB at 2M)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", default=None,
                    help="a commit whose library restores too, for a before/after")
    ap.add_argument("--out-root", default=None,
                    help="where the restores and copies write (default: the work directory; "
                         "/dev/shm: in memory, to see the restore without the disk)")
    ap.add_argument("--child", choices=["get", "write", "restore"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure_logging("warning", "console")
    if args.child:
        spec = orjson.loads(args.spec)
        if args.child == "get":
            res = child_get(spec["bucket"], spec["endpoint"],
                            [tuple(o) for o in spec["objects"]], spec["workers"], args.out)
        elif args.child == "write":
            res = child_write([tuple(o) for o in spec["objects"]], spec["workers"], args.out)
        else:
            res = child_restore("", args.out, None, "now", spec["workers"],
                                opener(spec["bucket"], spec["endpoint"]))
        print(orjson.dumps(res).decode())
        return res

    from tests.bench.services import services

    with services(kafka=False) as env:
        os.environ.update(env.s3_env)  # the children inherit the credentials
        before = before_tree(args.before, env.workdir) if args.before else None
        sizes = [(int(n), int(m or 0)) for n, _, m in
                 (size.partition("+") for size in args.sizes.split(","))]
        results = [measure(n, m, args, env, env.workdir, before) for n, m in sizes]
    out = {"sizes": results, "workers": args.workers, "part_bytes": PART_BYTES,
           "depth": DEPTH, "before": args.before,
           "rss_flat": {f"{r['records']}+{r['log_events']}": r["after"]["peak_rss_tree_mb"]
                        for r in results},
           "goals": {"bucket_speed_0_8x": _goal([r["after"]["ratio_to_get_baseline"]
                                                 for r in results if not r["log_events"]])}}
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return out


def _goal(ratios: list[float]) -> bool | None:
    """Whether every ratio reached 0.8; None when no size measured it (the goal is stated for
    snapshots without log events, every bucket copied whole)."""
    return all(r >= 0.8 for r in ratios) if ratios else None


if __name__ == "__main__":
    main()
