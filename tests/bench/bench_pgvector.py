"""RTO into PostgreSQL + pgvector (``pgvector:postgresql://...``) against pgvector's own bulk
load of the same rows, measured in the same run on the same server.

    python -m tests.bench.bench_pgvector [--records 100000] [--dim 768] [--rounds 3]
        [--dsn postgresql://USER:PASSWORD@HOST:PORT/postgres]

The repository is a snapshot of N records (``restore_repo.write_snapshot``, file://) with
the embedding-like unit vectors of ``bench_engines.UniquePool`` and the workload's payload.
The server is the project's PostgreSQL 18 + pgvector (deploy/local, the tests' settings:
``fsync=off``, ``shared_buffers=64MB``), started here unless ``--dsn`` names one. Every
measurement runs in a child process into a fresh database, alternating per round:

- limit: the rows read into memory first and encoded into the COPY BINARY stream before the
  clock starts (ids, an n x dim float32 numpy array and the same payloads, the same bytes
  the sink sends); timed: create the table, one COPY of the stream, then the same indexes
  (``pgvector.build_indexes``: primary key, tenant, GIN acl, HNSW m=16 ef_construction=100
  with vector_cosine_ops, ANALYZE). The server's own speed, with no client work at all.
- restore: plan + ``execute`` into the ``pgvector:`` sink: the RTO without validation,
  split into COPY (the engine's insert calls), index build (``finish``) and the rest:
  reading the backup, decoding, building and encoding rows. Validation (every row re-read,
  the probes) runs in the first round only, timed apart (it must pass, or the benchmark
  stops).

Figures on stdout as JSON, progress on stderr; method and numbers in docs/performance.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from daemon.logs import configure_logging
from tests.bench.bench_engines import UniquePool
from tests.bench.bench_restore import spawn
from tests.bench.engine_runs import size_arguments, snapshot_rows, timed_restore
from tests.bench.restore_repo import median, say, write_snapshot

MODULE = "tests.bench.bench_pgvector"


# -- children --------------------------------------------------------------------------------
def child_restore(dsn: str, repo_path: str, validate_too: bool) -> dict[str, Any]:
    from daemon.restore.sinks.pgvector import PgvectorEngine

    sink, out = timed_restore(f"pgvector:{dsn}", repo_path, validate_too)
    assert isinstance(sink.engine, PgvectorEngine)
    build = sink.engine.build_seconds
    out.update(copy_s=out["engine_s"] - build, build_s=build)
    sink.close()
    return out


def child_limit(dsn: str, repo_path: str) -> dict[str, Any]:
    """pgvector's own bulk load of the same rows: COPY BINARY of bytes built from numpy
    before timing, then the same indexes."""
    from psycopg import sql

    from daemon.restore.sinks.pgvector import (
        COLUMNS,
        FLUSH_BYTES,
        PgvectorEngine,
        build_indexes,
        encode_rows,
    )

    snap = snapshot_rows(repo_path)
    name, keys, vectors, payloads = snap.name, snap.keys, snap.vectors, snap.payloads
    rows: list[bytes] = []
    encode_rows(rows, keys, vectors, payloads)
    stream: list[bytes] = [b"PGCOPY\n\xff\r\n\x00" + bytes(8)]
    pending: list[bytes] = []
    size = 0
    for row in rows:  # in pieces of FLUSH_BYTES, as the sink writes them
        pending.append(row)
        size += len(row)
        if size >= FLUSH_BYTES:
            stream.append(b"".join(pending))
            pending, size = [], 0
    stream += [b"".join(pending), b"\xff\xff"]
    rows.clear()
    spec = snap.spec

    engine = PgvectorEngine(dsn)
    began = time.monotonic()
    engine.create(name, spec)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
    with engine.conn.cursor() as cur, cur.copy(stmt) as copy:
        for piece in stream:
            copy.write(piece)
    copied = time.monotonic()
    metric, index = engine.spec_of(name)
    build_indexes(engine.conn, name, metric, index, len(keys))
    done = time.monotonic()
    assert engine.count(name) == len(keys)
    engine.close()
    return {"records": len(keys), "load_s": done - began, "copy_s": copied - began,
            "build_s": done - copied}


# -- the parent --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    size_arguments(ap)
    ap.add_argument("--dsn", default=None, help="a server to use (its postgres database); "
                                                "default: start deploy/local's")
    ap.add_argument("--child", choices=["restore", "limit"], help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure_logging("warning", "console")
    if args.child:
        res = (child_restore(args.dsn, args.repo, args.validate) if args.child == "restore"
               else child_limit(args.dsn, args.repo))
        print(orjson.dumps(res).decode())
        return res
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vecwal-bench-pgvector-"))
    work.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        dsn = args.dsn
        if dsn is None:
            from tests.services import load_launcher

            server = load_launcher().PostgresServer(work / "postgres").start()
            dsn = server.dsn()
        return run(args, work, dsn)
    finally:
        if server is not None:
            server.stop()
            server.remove_data()
        shutil.rmtree(work, ignore_errors=True)


def _database(dsn: str, name: str, create: bool) -> str:
    """Create (or drop) a database on the server of ``dsn``; its URL."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return dsn.rsplit("/", 1)[0] + "/" + name


def run(args: argparse.Namespace, work: Path, dsn: str) -> dict[str, Any]:
    from daemon.changelog.repository import Repository
    from daemon.objectstore import open_store

    n = args.records
    say(f"building: snapshot of {n:,} records x {args.dim} dims")
    repo = work / "repo"
    write_snapshot(Repository(open_store(f"file://{repo}")), UniquePool(args.dim), n)
    restores: list[dict[str, Any]] = []
    limits: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for kind, runs in (("limit", limits), ("restore", restores)):
            db = f"bench_{kind}_{r}"
            url = _database(dsn, db, create=True)
            extra = ["--validate"] if kind == "restore" and r == 0 else []
            try:
                res, _ = spawn(["--child", kind, "--dsn", url, "--repo", str(repo), *extra],
                               module=MODULE)
            finally:
                _database(dsn, db, create=False)
            assert res["records"] == n, (kind, res["records"], n)
            runs.append(res)
        lim, rs = limits[-1], restores[-1]
        say(f"round {r}: limit {lim['load_s']:.1f}s (COPY {lim['copy_s']:.1f}s, indexes "
            f"{lim['build_s']:.1f}s); restore RTO {rs['rto_s']:.1f}s ({rs['read_s']:.1f}s "
            f"reading and encoding, COPY {rs['copy_s']:.1f}s, indexes {rs['build_s']:.1f}s)"
            + (f"; validation {rs['validate_s']:.1f}s" if "validate_s" in rs else ""))
    limit_s = median([x["load_s"] for x in limits])
    rto = median([x["rto_s"] for x in restores])
    out: dict[str, Any] = {
        "records": n, "dim": args.dim, "rounds": args.rounds,
        "limit_load_s": limit_s, "limit_records_per_s": n / limit_s,
        "limit_copy_s": median([x["copy_s"] for x in limits]),
        "limit_build_s": median([x["build_s"] for x in limits]),
        "restore_rto_s": rto, "restore_records_per_s": n / rto,
        "restore_read_s": median([x["read_s"] for x in restores]),
        "restore_copy_s": median([x["copy_s"] for x in restores]),
        "restore_build_s": median([x["build_s"] for x in restores]),
        "validate_s": restores[0]["validate_s"], "validate_checks": restores[0]["checks"],
        "ratio_to_limit": limit_s / rto,
        "runs": {"limit": limits, "restore": restores},
    }
    say(f"pgvector: median RTO {rto:.1f}s vs limit {limit_s:.1f}s: ratio "
        f"{out['ratio_to_limit']:.2f} (goal 0.8)")
    return out


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if "--child" not in sys.argv:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
