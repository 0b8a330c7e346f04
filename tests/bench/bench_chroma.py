"""RTO into Chroma against Chroma's own bulk load of the same rows, measured in the same run.

    python -m tests.bench.bench_chroma [--records 100000] [--dim 768] [--rounds 3]
        [--engines chroma-server,chroma-path]

The repository is the one of ``bench_engines``: a snapshot of N records (file://), each with
its own embedding-like unit vector and the workload's payload (document, metadata, acl,
embedding model, source). ``chroma-server`` is a real ``chroma run`` (deploy/local, chromadb
1.5.9 from its own venv) started once for the run; ``chroma-path`` is Chroma's embedded
persistent mode in a fresh directory. Each measurement runs in a child process, alternating
per round:

- restore: plan + ``execute`` into the ``chroma:`` sink (a fresh collection): the RTO
  without validation, split into the time inside the engine's add calls
  (``EngineSink.load_seconds``) and the rest (reading the backup, decoding, building
  records). Validation (every record re-read, the probes) runs in the first round only,
  timed apart; it must pass or the benchmark stops.
- limit: the same rows read into memory first (not timed): ids, an n x dim float32 numpy
  array, the same Chroma metadatas and documents; then only ``collection.add`` in batches of
  the sink's size is timed, into a collection created with the same configuration.

Every collection is dropped after its measurement (outside the timing). Figures on stdout as
JSON, progress on stderr; method and numbers in docs/performance.md.
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

ENGINES = ("chroma-server", "chroma-path")
MODULE = "tests.bench.bench_chroma"


def where_of(engine: str, url: str, scratch: Path) -> str:
    return url if engine == "chroma-server" else str(scratch / "chroma")


# -- children --------------------------------------------------------------------------------
def child_restore(where: str, repo_path: str, name: str, validate_too: bool) -> dict[str, Any]:
    sink, out = timed_restore(f"chroma:{where}", repo_path, validate_too, prefix=name)
    sink.cleanup()
    sink.close()
    return out


def child_limit(where: str, repo_path: str, name: str) -> dict[str, Any]:
    """Chroma's own bulk load of the same rows from memory."""
    from daemon.restore.sinks.chroma import ChromaEngine, to_metadata
    from daemon.restore.sinks.engine import BATCH

    snap = snapshot_rows(repo_path)
    coll_name, keys, vectors, spec = snap.name, snap.keys, snap.vectors, snap.spec
    metadatas = [to_metadata(p) for p in snap.payloads]
    documents = [p["document"] for p in snap.payloads]
    engine = ChromaEngine(where)
    target = name + coll_name
    engine.create(target, spec)  # the sink's configuration: space, HNSW parameters
    col = engine.client.get_collection(target, embedding_function=None)
    began = time.monotonic()
    for s in range(0, len(keys), BATCH):
        col.add(ids=keys[s:s + BATCH], embeddings=vectors[s:s + BATCH],
                metadatas=metadatas[s:s + BATCH], documents=documents[s:s + BATCH])
    seconds = time.monotonic() - began
    assert col.count() == len(keys)
    engine.drop(target)
    engine.close()
    return {"records": len(keys), "load_s": seconds}


# -- the parent --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    size_arguments(ap, "chroma-server")
    ap.add_argument("--child", choices=["restore", "limit"], help=argparse.SUPPRESS)
    ap.add_argument("--where", help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    ap.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure_logging("warning", "console")
    if args.child:
        res = (child_restore(args.where, args.repo, args.name, args.validate)
               if args.child == "restore" else child_limit(args.where, args.repo, args.name))
        print(orjson.dumps(res).decode())
        return res
    return in_workdir(args.workdir, "vecwal-bench-chroma-", lambda work: run(args, work))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from daemon.changelog.repository import Repository
    from daemon.objectstore import open_store
    from tests.services import load_launcher

    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engine(s) {sorted(unknown)}; choose from {ENGINES}")
    n = args.records
    say(f"building: snapshot of {n:,} records x {args.dim} dims")
    repo = work / "repo"
    write_snapshot(Repository(open_store(f"file://{repo}")), UniquePool(args.dim), n)
    server = None
    url = ""
    if "chroma-server" in engines:
        server = load_launcher().ChromaServer(work / "chroma-server").start()
        url = server.url
        say(f"chroma run at {url} (ready in {server.started_seconds:.1f} s)")
    out: dict[str, Any] = {"records": n, "dim": args.dim, "rounds": args.rounds, "engines": {}}
    try:
        for engine in engines:
            restores, limits = [], []
            for r in range(args.rounds):
                for kind, runs in (("limit", limits), ("restore", restores)):
                    scratch = work / f"{engine}-{kind}-{r}"
                    scratch.mkdir()
                    extra = ["--validate"] if kind == "restore" and r == 0 else []
                    res, _ = spawn(["--child", kind, "--where", where_of(engine, url, scratch),
                                    "--repo", str(repo), "--name", f"{kind[0]}{r}-", *extra],
                                   module=MODULE)
                    shutil.rmtree(scratch)
                    assert res["records"] == n, (engine, kind, res["records"], n)
                    runs.append(res)
                lim, rs = limits[-1], restores[-1]
                say(f"{engine} round {r}: limit {n / lim['load_s']:,.0f} records/s; restore "
                    f"RTO {rs['rto_s']:.1f}s ({rs['read_s']:.1f}s reading, {rs['engine_s']:.1f}s "
                    f"in the engine), {n / rs['rto_s']:,.0f} records/s"
                    + (f"; validation {rs['validate_s']:.1f}s" if "validate_s" in rs else ""))
            limit_s = median([x["load_s"] for x in limits])
            rto = median([x["rto_s"] for x in restores])
            out["engines"][engine] = {
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
    finally:
        if server is not None:
            server.stop()
    return out


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if "--child" not in sys.argv:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
