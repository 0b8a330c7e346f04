"""RTO into the vector databases, against each engine's own bulk-load rate (the limit),
measured in the same run.

    python -m tests.bench.bench_engines [--records 100000] [--dim 768] [--rounds 3]
        [--engines milvus,milvus-server,qdrant-memory,qdrant-path] [--path-records 10000]

The repository is a snapshot of N records (``restore_repo.write_snapshot``, file://), each
record with its own random unit vector and the workload's payload (document, metadata, acl,
embedding model, source). Each measurement runs in a child process, alternating per round:

- restore: plan + ``execute`` into the engine sink (``qdrant:`` / ``milvus:`` at a fresh
  path): the RTO without validation, split into the time inside the engine's insert and
  flush calls (``EngineSink.load_seconds``) and the rest: reading the backup, decoding,
  building points. Validation (every point re-read, the probes) runs in the first round
  only, timed apart (it must pass, or the benchmark stops).
- limit: the same records read into memory first (not timed): ids, an n x dim float32 numpy
  array and the same payloads; then only the engine's own bulk load is timed, through the
  client library (Qdrant ``upload_collection``; Milvus ``insert`` of row batches, then
  ``flush`` and, on a server, the wait until its vector index covers every row, as the
  sink's ``finish`` does), same collection settings and batch size as the sink.

Engines: ``milvus`` (Milvus Lite, a .db file), ``milvus-server`` (Milvus 2.3.5 standalone
from deploy/local, started once for the run with Milvus' default settings; each measurement
in a fresh database, dropped afterwards; ``milvus:http://127.0.0.1:PORT/DB``),
``qdrant-memory`` (qdrant-client local mode in memory), ``qdrant-path`` (local mode persisted
to a directory: it commits SQLite once per point, about 500 points/s here at 768 dims, so it
runs at ``--path-records``).
Figures on stdout as JSON, progress on stderr; method and numbers in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from daemon.logs import configure_logging
from tests.bench.bench_restore import spawn
from tests.bench.engine_runs import size_arguments, snapshot_rows, timed_restore
from tests.bench.restore_repo import Pool, median, say, write_snapshot

ENGINES = ("milvus", "milvus-server", "qdrant-memory", "qdrant-path")
MODULE = "tests.bench.bench_engines"
MILVUS_URI = "VECWAL_BENCH_MILVUS_URI"
"""The Milvus server of the run, for the children (set by the parent)."""


INTRINSIC = 32
"""Vectors are ``normalize(A @ z)`` with z in R^32: embedding-like, of low intrinsic
dimension. (Independent gaussian 768-dim vectors are the worst case of approximate search:
HNSW with M=16 needs ef ~512 there for recall 0.95, which says nothing about a restore.)"""


class UniquePool(Pool):
    """The restore benchmark's record pool, with a distinct unit vector per record (its pool
    repeats 256 vectors, which would make kNN probes a matter of ties)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.basis = np.random.default_rng(7).standard_normal((dim, INTRINSIC))

    def change(self, i: int, version: int, op: str, offset: int, timestamp: int
               ) -> dict[str, Any]:
        rec = super().change(i, version, op, offset, timestamp)
        if rec.get("vector") is not None:
            v = self.basis @ np.random.default_rng(i).standard_normal(INTRINSIC)
            rec["vector"] = (v / np.linalg.norm(v)).astype("<f4").tobytes()
        return rec


def spec_of(engine: str, scratch: Path) -> str:
    if engine == "milvus":
        return f"milvus:{scratch / 'restore.db'}"
    if engine == "milvus-server":
        return f"milvus:{os.environ[MILVUS_URI]}/{database_of(scratch)}"
    if engine == "qdrant-memory":
        return "qdrant::memory:"
    return f"qdrant:{scratch / 'qdrant'}"


def database_of(scratch: Path) -> str:
    return re.sub(r"\W", "_", scratch.name)


@contextlib.contextmanager
def milvus_database(engine: str, scratch: Path) -> Iterator[None]:
    """A fresh database for one measurement on the run's Milvus server, dropped afterwards
    with its collections (the server would keep them loaded)."""
    if engine != "milvus-server":
        yield
        return
    from pymilvus import MilvusClient

    admin = MilvusClient(uri=os.environ[MILVUS_URI])
    name = database_of(scratch)
    admin.create_database(name)
    try:
        yield
    finally:
        inside = MilvusClient(uri=os.environ[MILVUS_URI], db_name=name)
        for coll in inside.list_collections():
            inside.drop_collection(coll)
        inside.close()
        admin.drop_database(name)
        admin.close()


# -- children --------------------------------------------------------------------------------
def child_restore(engine: str, repo_path: str, scratch: str, validate_too: bool
                  ) -> dict[str, Any]:
    sink, out = timed_restore(spec_of(engine, Path(scratch)), repo_path, validate_too)
    sink.close()
    return out


def child_limit(engine: str, repo_path: str, scratch: str) -> dict[str, Any]:
    """The engine's own bulk load of the same data from memory."""
    from daemon.restore.sinks.engine import BATCH

    snap = snapshot_rows(repo_path)
    name, keys, vectors, payloads, spec = (snap.name, snap.keys, snap.vectors, snap.payloads,
                                           snap.spec)
    where = spec_of(engine, Path(scratch)).partition(":")[2]
    if engine in ("milvus", "milvus-server"):
        from daemon.restore.sinks.milvus import MilvusEngine

        m = MilvusEngine(where)
        m.create(name, spec)
        began = time.monotonic()
        for s in range(0, len(keys), BATCH):
            if m.nullable:
                rows = [{"pk": k, "vector": v, **p} for k, v, p in zip(
                    keys[s:s + BATCH], vectors[s:s + BATCH], payloads[s:s + BATCH], strict=True)]
            else:  # a server before 2.5 takes no nulls: the rows as it stores them
                rows = m.rows(keys[s:s + BATCH], vectors[s:s + BATCH], payloads[s:s + BATCH])
            m.client.insert(name, rows)
        m.finish()  # flush; a server: until its vector index covers every row, as a restore
        seconds = time.monotonic() - began
        assert m.count(name) == len(keys)
        m.close()
    else:
        from daemon.restore.sinks.qdrant import QdrantEngine

        q = QdrantEngine(where)
        q.create(name, spec)
        began = time.monotonic()
        q.client.upload_collection(name, vectors=vectors, payload=payloads, ids=keys,
                                   batch_size=BATCH, parallel=1, wait=True)
        seconds = time.monotonic() - began
        assert q.count(name) == len(keys)
        q.close()
    return {"records": len(keys), "load_s": seconds}


# -- the parent --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    size_arguments(ap, ",".join(ENGINES))
    ap.add_argument("--path-records", type=int, default=10_000,
                    help="records for qdrant-path (local mode on disk commits per point)")
    ap.add_argument("--child", choices=["restore", "limit"], help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    ap.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure_logging("warning", "console")
    if args.child:
        res = (child_restore(args.engine, args.repo, args.scratch, args.validate)
               if args.child == "restore" else child_limit(args.engine, args.repo, args.scratch))
        print(orjson.dumps(res).decode())
        return res
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vecwal-bench-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:
            if "milvus-server" in args.engines.split(","):
                from tests.services import load_launcher

                server = load_launcher().MilvusServer(work / "milvus-server").start()
                stack.callback(server.stop)
                os.environ[MILVUS_URI] = server.uri
                say(f"Milvus standalone at {server.uri} (ready in {server.started_seconds:.1f}s)")
            return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from daemon.changelog.repository import Repository
    from daemon.objectstore import open_store

    engines = [e for e in args.engines.split(",") if e]
    repos: dict[int, Path] = {}
    sizes = {e: args.path_records if e == "qdrant-path" else args.records for e in engines}
    pool = UniquePool(args.dim)
    for n in sorted(set(sizes.values())):
        say(f"building: snapshot of {n:,} records x {args.dim} dims")
        root = work / f"repo-{n}"
        write_snapshot(Repository(open_store(f"file://{root}")), pool, n)
        repos[n] = root
    out: dict[str, Any] = {"dim": args.dim, "rounds": args.rounds, "engines": {}}
    for engine in engines:
        n = sizes[engine]
        restores, limits = [], []
        for r in range(args.rounds):
            for kind, runs in (("limit", limits), ("restore", restores)):
                scratch = work / f"{engine}-{kind}-{r}"
                scratch.mkdir()
                extra = ["--validate"] if kind == "restore" and r == 0 else []
                with milvus_database(engine, scratch):
                    res, _ = spawn(["--child", kind, "--engine", engine, "--repo",
                                    str(repos[n]), "--scratch", str(scratch), *extra],
                                   module=MODULE)
                shutil.rmtree(scratch)
                assert res["records"] == n, (engine, kind, res["records"], n)
                runs.append(res)
            lim, rs = limits[-1], restores[-1]
            say(f"{engine} round {r}: limit {n / lim['load_s']:,.0f} records/s; restore RTO "
                f"{rs['rto_s']:.1f}s ({rs['read_s']:.1f}s reading, {rs['engine_s']:.1f}s in "
                f"the engine), {n / rs['rto_s']:,.0f} records/s"
                + (f"; validation {rs['validate_s']:.1f}s" if "validate_s" in rs else ""))
        limit_s = median([x["load_s"] for x in limits])
        rto = median([x["rto_s"] for x in restores])
        out["engines"][engine] = {
            "records": n,
            "limit_load_s": limit_s, "limit_records_per_s": n / limit_s,
            "restore_rto_s": rto, "restore_records_per_s": n / rto,
            "restore_read_s": median([x["read_s"] for x in restores]),
            "restore_engine_s": median([x["engine_s"] for x in restores]),
            "validate_s": restores[0]["validate_s"],
            "validate_checks": restores[0]["checks"],
            "ratio_to_limit": limit_s / rto,
            "runs": {"limit": limits, "restore": restores},
        }
        e = out["engines"][engine]
        say(f"{engine}: median RTO {rto:.1f}s vs limit {limit_s:.1f}s: ratio "
            f"{e['ratio_to_limit']:.2f} (goal 0.8)")
    return out


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if "--child" not in sys.argv:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
