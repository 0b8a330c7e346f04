"""RTO into LanceDB (``lancedb:PATH``) against LanceDB's own bulk load of the same rows,
measured in the same run.

    python -m tests.bench.bench_lancedb [--records 100000] [--dim 768] [--rounds 3]

The repository is a snapshot of N records (``restore_repo.write_snapshot``, file://) with
the embedding-like unit vectors of ``bench_engines.UniquePool`` and the workload's payload
(its catalog: cosine, hnsw m=16 ef_construct=100). Every measurement runs in a child process
into a fresh directory, alternating per round:

- limit: the rows read into memory first and made into one Arrow record batch before the
  clock starts (the same columns the sink writes, the vectors wrapped from an n x dim
  float32 numpy array); timed: create the table, one ``table.add`` of that batch, then the
  same indexes (``LanceDBEngine.build_index``: IVF_HNSW_SQ m=16 ef_construction=100 with
  the cosine metric, bitmap on tenant, label list on acl). LanceDB's own speed, with no
  client work at all.
- restore: plan + ``execute`` into the ``lancedb:`` sink: the RTO without validation, split
  into the adds (the engine's insert and flush calls), the index build (in ``finish``) and
  the rest: reading the backup, decoding, building points and Arrow batches. Validation
  (every row re-read, the probes) runs in the first round only, timed apart (it must pass,
  or the benchmark stops).

Figures on stdout as JSON, progress on stderr; method and numbers in docs/performance.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from daemon.logs import configure_logging
from tests.bench.bench_engines import UniquePool
from tests.bench.bench_restore import spawn
from tests.bench.engine_runs import in_workdir, size_arguments, snapshot_rows, timed_restore
from tests.bench.restore_repo import median, say, write_snapshot

MODULE = "tests.bench.bench_lancedb"


# -- children --------------------------------------------------------------------------------
def child_restore(scratch: str, repo_path: str, validate_too: bool) -> dict[str, Any]:
    from daemon.restore.sinks.lancedb import LanceDBEngine

    sink, out = timed_restore(f"lancedb:{scratch}", repo_path, validate_too)
    assert isinstance(sink.engine, LanceDBEngine)
    assert sink.engine._indexed, "the table got its vector index"
    build = sink.engine.build_seconds
    out.update(add_s=out["engine_s"] - build, build_s=build)
    sink.close()
    return out


def child_limit(scratch: str, repo_path: str) -> dict[str, Any]:
    """LanceDB's own bulk load of the same rows: one table.add of an Arrow batch built from
    numpy before timing, then the same indexes."""
    import pyarrow as pa

    from daemon.restore.sinks.lancedb import LanceDBEngine, record_batch

    rows = snapshot_rows(repo_path)
    name, keys, vectors, payloads, spec = (rows.name, rows.keys, rows.vectors, rows.payloads,
                                           rows.spec)

    engine = LanceDBEngine(scratch)
    engine.create(name, spec)
    data = pa.Table.from_batches([record_batch(engine._schemas[name], keys, vectors, payloads)])
    del payloads
    began = time.monotonic()
    engine.db.open_table(name).add(data)
    added = time.monotonic()
    engine.build_index(name, spec)
    done = time.monotonic()
    assert engine.count(name) == len(keys) and engine._indexed[name] is not None
    engine.close()
    return {"records": len(keys), "load_s": done - began, "add_s": added - began,
            "build_s": done - added}


# -- the parent --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    size_arguments(ap)
    ap.add_argument("--child", choices=["restore", "limit"], help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    ap.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure_logging("warning", "console")
    if args.child:
        res = (child_restore(args.scratch, args.repo, args.validate) if args.child == "restore"
               else child_limit(args.scratch, args.repo))
        print(orjson.dumps(res).decode())
        return res
    return in_workdir(args.workdir, "vecwal-bench-lancedb-", lambda work: run(args, work))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
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
            scratch = work / f"{kind}-{r}"
            extra = ["--validate"] if kind == "restore" and r == 0 else []
            res, _ = spawn(["--child", kind, "--repo", str(repo), "--scratch", str(scratch),
                            *extra], module=MODULE)
            shutil.rmtree(scratch, ignore_errors=True)
            assert res["records"] == n, (kind, res["records"], n)
            runs.append(res)
        lim, rs = limits[-1], restores[-1]
        say(f"round {r}: limit {lim['load_s']:.1f}s (add {lim['add_s']:.1f}s, index "
            f"{lim['build_s']:.1f}s); restore RTO {rs['rto_s']:.1f}s ({rs['read_s']:.1f}s "
            f"reading, {rs['add_s']:.1f}s adding, {rs['build_s']:.1f}s index)"
            + (f"; validation {rs['validate_s']:.1f}s" if "validate_s" in rs else ""))
    limit_s = median([x["load_s"] for x in limits])
    rto = median([x["rto_s"] for x in restores])
    out = {
        "records": n, "dim": args.dim, "rounds": args.rounds,
        "limit_load_s": limit_s, "limit_records_per_s": n / limit_s,
        "limit_add_s": median([x["add_s"] for x in limits]),
        "limit_build_s": median([x["build_s"] for x in limits]),
        "restore_rto_s": rto, "restore_records_per_s": n / rto,
        "restore_read_s": median([x["read_s"] for x in restores]),
        "restore_add_s": median([x["add_s"] for x in restores]),
        "restore_build_s": median([x["build_s"] for x in restores]),
        "validate_s": restores[0]["validate_s"], "validate_checks": restores[0]["checks"],
        "ratio_to_limit": limit_s / rto,
        "ratio_without_index": median([x["add_s"] for x in limits])
        / median([x["rto_s"] - x["build_s"] for x in restores]),
        "runs": {"limit": limits, "restore": restores},
    }
    say(f"lancedb: median RTO {rto:.1f}s vs limit {limit_s:.1f}s: ratio "
        f"{out['ratio_to_limit']:.2f} (goal 0.8)")
    return out


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if "--child" not in sys.argv:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
