"""Restore throughput and RTO: a snapshot of N records plus M log events after it, restored
to ``dir:``, against a naive baseline measured in the same run: replaying every event of the
history one by one from its JSON value into a dictionary keyed by (collection, tenant, id),
then writing the records out one at a time with fastavro.

    python -m tests.bench.bench_restore [--records 1000000] [--log-events 100000] [--dim 768]
                                        [--rounds 3] [--naive-records 50000] [--profile]

The repository is built straight on a ``file://`` store, no Kafka: the snapshot's bucket files
and manifest as the compactor writes them, then segments, sidecars and watermarks of the log
after its cut as capture writes them (see tests/oracle/history.py). Records are the parser's
output (``daemon.events.EventParser``) for realistic JSON events of ``daemon.workload``: a pool
of parsed events is reused with fresh ids, so building costs encoding, not generation.

Each restore round runs in a child process (plan, ``execute`` to ``dir:``, then validation,
timed apart); peak RSS is the child's own high-water mark (VmHWM; see ``peak_rss_mb``). The naive
baseline replays a subset of the same history (its first K records and the proportional
share of log events, same mix) when the full history would not fit in memory: its cost is
linear in events, so records/s carries over. Figures on stdout as JSON, progress on stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import orjson

from daemon.changelog.repository import Repository
from daemon.logs import configure_logging
from daemon.objectstore import ObjectStore, open_store
from daemon.rows import SNAPSHOT_SCHEMA
from tests.bench.restore_repo import (
    COLLECTION,
    TOPIC,
    Built,
    Pool,
    build,
    median,
    mixed_ops,
    say,
)

REPO = Path(__file__).resolve().parents[2]
# -- measuring in a child process --------------------------------------------------------------
def spawn(args: list[str], module: str = "tests.bench.bench_restore"
          ) -> tuple[dict[str, Any], int]:
    """Run ``module`` as a child process: (the JSON it printed last, which includes the
    child's own peak RSS, and ru_maxrss from wait4 in MB, which includes ours at fork)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", module, *args],
                                cwd=REPO, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"child {args[:2]} failed ({proc.returncode}):\n"
                               f"{err.read().decode()[-4000:]}")
        return orjson.loads(out.read().splitlines()[-1]), usage.ru_maxrss // 1024


def peak_rss_mb() -> int:
    """This process's own peak RSS (VmHWM). Not ru_maxrss: on Linux a child's ru_maxrss
    (getrusage or wait4) starts from its parent's RSS at fork, as exec keeps the old image's
    high-water mark, so a small child of a big parent would report the parent's size."""
    return _status_kb("VmHWM") // 1024


def rss_mb() -> int:
    return _status_kb("VmRSS") // 1024


def _status_kb(name: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def io_counters() -> dict[str, int]:
    """This process's read/write bytes (rchar/wchar: every read()/write(), page cache or
    not; read_bytes/write_bytes: what reached the block layer)."""
    try:
        lines = Path("/proc/self/io").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


class TreeRss:
    """Peak resident memory of this process and its children (worker processes), sampled
    every 20 ms in a thread: VmHWM covers one process only."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.peak = 0
        self._stop = threading.Event()
        me = psutil.Process()

        def sample() -> None:
            while not self._stop.wait(0.02):
                try:
                    procs = [me, *me.children(recursive=True)]
                    total = sum(p.memory_info().rss for p in procs if p.is_running())
                except psutil.Error:
                    continue
                self.peak = max(self.peak, total // (1 << 20))

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def child_restore(repo_path: str, out: str, profile: str | None, to: str = "now",
                  workers: int = 1, opener: Callable[[], ObjectStore] | None = None,
                  wrap_sink: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """``opener`` (picklable, for the workers): how the repository's store is opened;
    default the ``file://`` store at ``repo_path`` (bench_encryption passes an encrypted one);
    ``wrap_sink``: the sink as the restore sees it (bench_encryption's per-tenant keys)."""
    import functools

    from daemon.restore.executor import execute
    from daemon.restore.planner import Scope, gather, make_plan
    from daemon.restore.sinks.directory import DirSink
    from daemon.restore.target import parse_target
    from daemon.restore.validate import validate
    from daemon.restore.workers import Workers

    class WatchedSink(DirSink):
        """DirSink noting RSS when the log is folded (begin) and after each bucket."""

        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.rss_at_begin = 0
            self.rss_after_buckets: list[int] = []

        def begin(self) -> None:
            self.rss_at_begin = rss_mb()
            super().begin()

        def write_bucket(self, collection: str, bucket: int, records: Iterable[dict[str, Any]]
                         ) -> Any:
            written = super().write_bucket(collection, bucket, records)
            self.rss_after_buckets.append(rss_mb())
            return written

        def write_rows(self, collection: str, bucket: int, rows: Iterable[Any]) -> Any:
            written = super().write_rows(collection, bucket, rows)
            self.rss_after_buckets.append(rss_mb())
            return written

    rss_idle = peak_rss_mb()
    io0 = io_counters()
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    began = time.monotonic()
    opener = opener or functools.partial(open_store, f"file://{repo_path}")
    repo = Repository(opener())
    target = parse_target(to, now_ms=int(time.time() * 1000))
    plan = make_plan(gather(repo, [TOPIC], target), target, Scope())
    planned = time.monotonic()
    # with workers, validation reads the files back in as many processes (as the CLI does)
    sink = WatchedSink(Path(out)) if workers == 1 else DirSink(Path(out), workers=workers,
                                                               parallel_min_bytes=0)
    if wrap_sink is not None:
        sink = wrap_sink(sink)
    tree = TreeRss()
    pool = Workers(workers, opener, min_bytes=0)
    cpu0, usage0 = cpu_seconds(), usage_counts()
    result = execute(repo, plan, sink, pool if workers > 1 else None)
    executed = time.monotonic()
    cpu_execute = cpu_seconds() - cpu0
    usage = {k: round(v - usage0[k], 3) for k, v in usage_counts().items()}
    tree_peak = tree.stop()
    rss_execute = peak_rss_mb()
    io1 = io_counters()
    report = validate(result, sink)
    validated = time.monotonic()
    if prof is not None and profile:
        prof.disable()
        prof.dump_stats(profile)
    io2 = io_counters()
    if not report.ok:
        raise SystemExit(f"validation failed: {report.to_dict()}")
    return {
        "records": result.records, "events_replayed": result.events_replayed,
        "bytes_read": result.bytes_read, "plan_bytes": plan.snapshot_bytes + plan.log_bytes,
        "plan_s": planned - began, "execute_s": executed - planned,
        "cpu_execute_s": cpu_execute, "usage_execute": usage,
        "execute_internal_s": result.seconds, "validate_s": validated - executed,
        "rchar_execute": io1.get("rchar", 0) - io0.get("rchar", 0),
        "wchar_execute": io1.get("wchar", 0) - io0.get("wchar", 0),
        "rchar_validate": io2.get("rchar", 0) - io1.get("rchar", 0),
        "output_bytes": sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file()),
        "rss_after_imports_mb": rss_idle, "peak_rss_execute_mb": rss_execute,
        "rss_after_fold_mb": getattr(sink, "rss_at_begin", 0),
        "rss_after_bucket_max_mb": max(getattr(sink, "rss_after_buckets", []), default=0),
        "peak_rss_tree_execute_mb": tree_peak, "workers": result.extra["workers"],
        "peak_rss_mb": peak_rss_mb(), "validation_ok": report.ok,
    }


def cpu_seconds() -> float:
    """User and system CPU time of this process and of its children that have ended (the
    restore's worker processes end with ``execute``): a figure the machine's other load
    moves far less than wall time."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def usage_counts() -> dict[str, float]:
    """``cpu_seconds`` apart: user and system time, minor and major page faults, of this
    process and its ended children (where a restore's extra CPU time goes: the kernel's
    page-cache and fault work shows as system time and faults)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"user_s": own.ru_utime + kids.ru_utime, "sys_s": own.ru_stime + kids.ru_stime,
            "minflt": own.ru_minflt + kids.ru_minflt, "majflt": own.ru_majflt + kids.ru_majflt}


# -- the naive baseline -------------------------------------------------------------------------
def write_naive_input(path: Path, pool: Pool, k: int, m: int, seed: int) -> int:
    """The JSON values of a history of ``k`` records and ``m`` later events (same mix as the
    benchmark's log), one per line (orjson never writes a raw newline). Returns events."""
    versions: dict[int, int] = {}
    events = 0
    with path.open("wb") as f:
        for i in range(k):
            f.write(pool.event_json(i, 0, "upsert") + b"\n")
            events += 1
        for op, i in mixed_ops(k, m, seed):
            versions[i] = versions.get(i, 0) + 1
            f.write(pool.event_json(i, versions[i], op) + b"\n")
            events += 1
    return events


def naive_record(ev: dict[str, Any], seq: int) -> dict[str, Any]:
    vec, doc = ev.get("vector"), ev.get("document")
    md, src = ev.get("metadata"), ev.get("source")
    return {
        "collection": ev["collection"], "tenant": ev.get("tenant") or "", "id": ev["id"],
        "dimension": len(vec) if vec is not None else None,
        "vector": np.asarray(vec, dtype="<f4").tobytes() if vec is not None else None,
        "sparse_indices": None, "sparse_values": None,
        "document": doc if doc is None or isinstance(doc, str) else orjson.dumps(doc).decode(),
        "document_is_json": doc is not None and not isinstance(doc, str),
        "metadata": orjson.dumps(md).decode() if md is not None else None,
        "acl": ev.get("acl"), "embedding_model": ev.get("embedding_model"),
        "source": orjson.dumps(src).decode() if src is not None else None,
        "event_id": ev.get("event_id"), "event_time": ev.get("event_time"), "extra": None,
        "last_offset": seq, "last_timestamp": seq, "last_partition": 0, "last_topic": TOPIC,
    }


def child_naive(inp: str, out: str) -> dict[str, Any]:
    """Replay every event from JSON into a dict keyed by (collection, tenant, id), then write
    the surviving records one at a time with fastavro."""
    began = time.monotonic()
    state: dict[tuple[str, str, str], tuple[int, dict[str, Any]]] = {}
    events = 0
    with open(inp, "rb") as f:
        for seq, line in enumerate(f):
            ev = orjson.loads(line)
            key = (ev["collection"], ev.get("tenant") or "", ev["id"])
            if ev["op"] == "delete":
                state.pop(key, None)
            else:
                state[key] = (seq, ev)
            events += 1
    replayed = time.monotonic()
    with open(out, "wb") as fo:
        writer = fastavro.write.Writer(fo, SNAPSHOT_SCHEMA, codec="null")
        for seq, ev in state.values():
            writer.write(naive_record(ev, seq))
        writer.flush()
        fo.flush()
        os.fsync(fo.fileno())
    done = time.monotonic()
    return {"events": events, "records": len(state), "replay_s": replayed - began,
            "write_s": done - replayed, "seconds": done - began,
            "input_bytes": os.path.getsize(inp), "output_bytes": os.path.getsize(out),
            "peak_rss_mb": peak_rss_mb()}


# -- profile summary ----------------------------------------------------------------------------
def profile_top(path: str, n: int = 15) -> list[dict[str, Any]]:
    stats = pstats.Stats(path, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_cc, calls, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(filename).name}:{line}({func})", "calls": calls,
                     "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3),
                     "share": round(tt / total, 3) if total else 0.0})
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:n]


def stage_costs(built: Built, scratch: Path) -> dict[str, float]:
    """Microseconds per record of each stage of restoring one bucket, timed apart on the
    snapshot's first bucket file (median of 3): where the time goes, as cProfile cannot see
    inside fastavro's compiled reader and writer (it books them to their callers)."""
    from daemon.atomic import atomic_write
    from daemon.restore.sinks.directory import read_back_file
    from daemon.rows import Row, content_hash
    from daemon.snapshot.compactor import read_manifest
    from daemon.snapshot.datafile import decode_records, encode_rows, read_index, read_rows
    from daemon.snapshot.state import live, merge_rows

    repo = Repository(open_store(f"file://{built.root}"))
    f = read_manifest(repo, built.snapshot_id).collections[COLLECTION].files[0]
    scratch.mkdir(parents=True, exist_ok=True)
    out: dict[str, float] = {}

    def timed(name: str, fn: Any, reps: int = 3) -> Any:
        """Median of ``reps`` runs: these figures come from one file, on a noisy machine."""
        times = []
        for _ in range(reps):
            began = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - began)
        out[name] = statistics.median(times) / f.records * 1e6
        return value

    data = timed("read_file", lambda: repo.store.get(f.path))
    timed("read_index", lambda: read_index(data, f.path))
    rows = timed("read_rows", lambda: list(read_rows(data, f.path)))
    timed("merge_rows_live", lambda: sum(1 for _ in live(merge_rows(iter(rows), {}), None)))
    enc = timed("encode_rows_copying_bytes", lambda: encode_rows(rows))
    recs = timed("avro_decode_whole_record", lambda: list(decode_records(data, f.path)))
    timed("row_of_encode_changed_record", lambda: [Row.of(r) for r in recs])
    timed("content_hash", lambda: [content_hash(r.raw[:r.content_len]) for r in rows])  # type: ignore[index]
    (scratch / COLLECTION).mkdir()  # read_back_file takes the collection from the directory
    timed("atomic_write", lambda: atomic_write(scratch / COLLECTION / "part.avro", enc.chunks))
    timed("validate_read_back_file", lambda: read_back_file(scratch / COLLECTION / "part.avro"))
    timed("copy_file", lambda: shutil.copyfile(repo.store.root / f.path,  # type: ignore[attr-defined]
                                               scratch / "copy.avro"))
    shutil.rmtree(scratch)
    return {k: round(v, 2) for k, v in out.items()}


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--log-events", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--buckets", type=int, default=0, help="0: as the compactor chooses")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2,
                    help="worker processes of the restore measured (1: one process)")
    ap.add_argument("--naive-records", type=int, default=50_000,
                    help="records of the history the naive baseline replays (0: all)")
    ap.add_argument("--profile", action="store_true",
                    help="one more restore round under cProfile; top costs in the JSON")
    ap.add_argument("--workdir", default=None, help="default: a new directory under $TMPDIR")
    ap.add_argument("--keep", action="store_true", help="keep the repository afterwards")
    ap.add_argument("--child", choices=["restore", "naive"], help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--profile-out", help=argparse.SUPPRESS)
    ap.add_argument("--to", default="now", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure_logging("warning", "console")  # figures on stdout, nothing else
    if args.child == "restore":
        res = child_restore(args.repo, args.out, args.profile_out, args.to, args.workers)
        print(orjson.dumps(res).decode())
        return res
    if args.child == "naive":
        res = child_naive(args.input, args.out)
        print(orjson.dumps(res).decode())
        return res

    work = Path(args.workdir or tempfile.mkdtemp(prefix="vecwal-bench-restore-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n, m = args.records, args.log_events
    say(f"building: snapshot of {n:,} records x {args.dim} dims, {m:,} log events after it")
    pool = Pool(args.dim)
    built = build(work / "repo", pool, n, mixed_ops(n, m, seed=5), args.buckets or None)
    say(f"built in {sum(built.seconds.values()):.0f}s: snapshot {built.snapshot_bytes / 1e9:.2f} "
        f"GB in {built.buckets} buckets, log {built.log_bytes / 1e6:.0f} MB in "
        f"{built.log_segments} segments")
    k = n if args.naive_records <= 0 else min(n, args.naive_records)
    naive_in = work / "naive.ndjson"
    naive_events = write_naive_input(naive_in, pool, k, round(m * k / n), seed=5)
    say(f"naive input: {naive_events:,} JSON events, {naive_in.stat().st_size / 1e6:.0f} MB")

    naive_runs: list[tuple[dict[str, Any], int]] = []
    restore_runs: list[tuple[dict[str, Any], int]] = []
    serial_runs: list[tuple[dict[str, Any], int]] = []
    snapshot_runs: list[tuple[dict[str, Any], int]] = []
    for r in range(args.rounds):
        out = work / f"naive-{r}.avro"
        naive_runs.append(spawn(["--child", "naive", "--input", str(naive_in),
                                 "--out", str(out)]))
        out.unlink()
        nv = naive_runs[-1][0]
        say(f"round {r}: naive {nv['records'] / nv['seconds']:,.0f} records/s "
            f"({nv['events']:,} events in {nv['seconds']:.1f}s)")
        dest = work / f"restore-{r}"
        serial_runs.append(spawn(["--child", "restore", "--repo", str(built.root),
                                  "--out", str(dest), "--workers", "1"]))
        shutil.rmtree(dest)
        sr = serial_runs[-1][0]
        say(f"round {r}: restore in one process {sr['records'] / sr['execute_s']:,.0f} records/s "
            f"(execute {sr['execute_s']:.1f}s, validate {sr['validate_s']:.1f}s, "
            f"peak RSS {sr['peak_rss_mb']} MB, {sr['rss_after_fold_mb']} MB after the fold)")
        restore_runs.append(spawn(["--child", "restore", "--repo", str(built.root),
                                   "--out", str(dest), "--workers", str(args.workers)]))
        shutil.rmtree(dest)
        rs = restore_runs[-1][0]
        assert rs["records"] == built.expected_records, (rs["records"], built.expected_records)
        say(f"round {r}: restore with {rs['workers']} workers "
            f"{rs['records'] / rs['execute_s']:,.0f} records/s "
            f"(execute {rs['execute_s']:.1f}s, validate {rs['validate_s']:.1f}s, "
            f"peak RSS {rs['peak_rss_tree_execute_mb']} MB with the workers)")
        # The same snapshot restored to its own cut: no log to replay, no bucket touched.
        snapshot_runs.append(spawn(["--child", "restore", "--repo", str(built.root),
                                    "--out", str(dest), "--to", str(built.cut_time_ms),
                                    "--workers", "1"]))
        shutil.rmtree(dest)
        ss = snapshot_runs[-1][0]
        assert ss["records"] == n, (ss["records"], n)
        say(f"round {r}: restore to the snapshot's cut {n / ss['execute_s']:,.0f} records/s "
            f"(execute {ss['execute_s']:.1f}s, validate {ss['validate_s']:.1f}s, "
            f"peak RSS {ss['peak_rss_mb']} MB)")

    profile: list[dict[str, Any]] = []
    stages: dict[str, float] = {}
    if args.profile:
        stages = stage_costs(built, work / "stages")
        say(f"  per record (us): {stages}")
        prof_path = work / "restore.prof"
        dest = work / "restore-profile"
        spawn(["--child", "restore", "--repo", str(built.root), "--out", str(dest),
               "--profile-out", str(prof_path), "--workers", "1"])
        shutil.rmtree(dest)
        profile = profile_top(str(prof_path))
        for row in profile:
            say(f"  {row['share']:6.1%} {row['tottime_s']:8.2f}s {row['calls']:>10} "
                f"{row['function']}")

    rs0 = restore_runs[0][0]
    exec_s = median([r["execute_s"] for r, _ in restore_runs])
    plan_s = median([r["plan_s"] for r, _ in restore_runs])
    val_s = median([r["validate_s"] for r, _ in restore_runs])
    rto_s = median([r["plan_s"] + r["execute_s"] for r, _ in restore_runs])
    rto_val_s = median([r["plan_s"] + r["execute_s"] + r["validate_s"] for r, _ in restore_runs])
    rate = rs0["records"] / exec_s
    naive_s = median([r["seconds"] for r, _ in naive_runs])
    nv0 = naive_runs[0][0]
    naive_rate = nv0["records"] / naive_s
    result = {
        "records": n, "dim": args.dim, "log_events": m, "buckets": built.buckets,
        "rounds": args.rounds,
        "snapshot_bytes": built.snapshot_bytes, "log_bytes": built.log_bytes,
        "log_segments": built.log_segments, "build_s": {k: round(v, 1) for k, v in
                                                        built.seconds.items()},
        "restore": {
            "records_out": rs0["records"], "events_replayed": rs0["events_replayed"],
            "bytes_read": rs0["bytes_read"], "output_bytes": rs0["output_bytes"],
            "rchar_execute": rs0["rchar_execute"], "rchar_validate": rs0["rchar_validate"],
            "plan_s": round(plan_s, 2), "execute_s": round(exec_s, 2),
            "validate_s": round(val_s, 2),
            "rto_s": round(rto_s, 2), "rto_with_validation_s": round(rto_val_s, 2),
            "records_per_s": round(rate), "records_per_s_with_validation":
                round(rs0["records"] / rto_val_s),
            "read_mb_per_s": round(rs0["bytes_read"] / exec_s / 1e6),
            "peak_rss_mb": median([r["peak_rss_mb"] for r, _ in restore_runs]),
            "peak_rss_execute_mb": median([r["peak_rss_execute_mb"] for r, _ in restore_runs]),
            "rss_after_imports_mb": rs0["rss_after_imports_mb"],
            "rss_after_fold_mb": median([r["rss_after_fold_mb"] for r, _ in restore_runs]),
            "rss_after_bucket_max_mb": median([r["rss_after_bucket_max_mb"]
                                               for r, _ in restore_runs]),
            "wait4_ru_maxrss_mb": median([rss for _, rss in restore_runs]),
            "validation_ok": all(r["validation_ok"] for r, _ in restore_runs),
            "workers": rs0["workers"],
            "peak_rss_with_workers_mb": median([r["peak_rss_tree_execute_mb"]
                                                for r, _ in restore_runs]),
        },
        "restore_one_process": {
            "execute_s": round(median([r["execute_s"] for r, _ in serial_runs]), 2),
            "records_per_s": round(rs0["records"] / median([r["execute_s"]
                                                            for r, _ in serial_runs])),
            "validate_s": round(median([r["validate_s"] for r, _ in serial_runs]), 2),
            "peak_rss_mb": median([r["peak_rss_mb"] for r, _ in serial_runs]),
            "rss_after_fold_mb": median([r["rss_after_fold_mb"] for r, _ in serial_runs]),
            "ratio_to_naive": round(rs0["records"] / median([r["execute_s"]
                                                             for r, _ in serial_runs])
                                    / naive_rate, 2),
        },
        "naive": {
            "subset": k < n, "records_in_history": k, "events": nv0["events"],
            "records_out": nv0["records"], "input_bytes": nv0["input_bytes"],
            "seconds": round(naive_s, 2),
            "replay_s": round(median([r["replay_s"] for r, _ in naive_runs]), 2),
            "write_s": round(median([r["write_s"] for r, _ in naive_runs]), 2),
            "records_per_s": round(naive_rate),
            "events_per_s": round(nv0["events"] / naive_s),
            "peak_rss_mb": median([r["peak_rss_mb"] for r, _ in naive_runs]),
        },
        "restore_to_snapshot_cut": {
            "records_out": n, "bytes_read": snapshot_runs[0][0]["bytes_read"],
            "execute_s": round(median([r["execute_s"] for r, _ in snapshot_runs]), 2),
            "validate_s": round(median([r["validate_s"] for r, _ in snapshot_runs]), 2),
            "records_per_s": round(n / median([r["execute_s"] for r, _ in snapshot_runs])),
            "records_per_s_with_validation": round(n / median(
                [r["plan_s"] + r["execute_s"] + r["validate_s"] for r, _ in snapshot_runs])),
            "peak_rss_mb": median([r["peak_rss_mb"] for r, _ in snapshot_runs]),
        },
        "ratio_restore_to_naive": round(rate / naive_rate, 2),
        "ratio_with_validation_to_naive": round(rs0["records"] / rto_val_s / naive_rate, 2),
        "goals": {"records_per_s_100k": rate >= 100_000, "ratio_20x": rate / naive_rate >= 20},
    }
    if profile:
        result["restore_profile_top"] = profile
        result["restore_stage_us_per_record"] = stages
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return result


if __name__ == "__main__":
    main()
