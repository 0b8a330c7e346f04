"""Reconciliation against the engine's own read-all, measured in the same run.

    python -m tests.bench.bench_reconcile [--records 100000] [--dim 768] [--rounds 3]
        [--engines qdrant-memory,milvus]

The repository is a snapshot of N records (``restore_repo.write_snapshot`` with
``bench_engines.UniquePool``: the workload's payload, a distinct unit vector each), restored
once into the engine (not timed). Then per round, in one process, the three steps below, in
an order rotated by round:

- scroll (the baseline): the engine's own read-all of the collection through its client, in
  pages of the size ``Engine.scan`` uses, payloads and vectors included, every point touched:
  Qdrant ``scroll(limit=8192, with_payload, with_vectors)``, Milvus ``query_iterator(
  batch_size=8192)`` over every field;
- reconcile: ``daemon.audit.reconcile.reconcile`` of the same collection against the backup's
  state at valid-through (the engine scanned and hashed, the snapshot read and decoded by the
  restore machinery, the comparison); it must find no drift. As the CLI runs it, with the
  cyclic garbage collector paused (``pause_gc``);
- reconcile_gc: the same with the collector running, as the scheduled reconcile in
  `vecwal run` does. (The scroll runs with it, as a client would.)

``ratio`` is the scroll's median time over reconcile's median (1.0: reconcile as fast as the
engine can be read; the goal is >= 0.8); ``ratio_gc`` the same for reconcile_gc. Engines:
``qdrant-memory`` (qdrant-client local mode in memory: a directory-backed local collection is
loaded into the same memory structures when opened, and loading one commits SQLite per
point), ``milvus`` (Milvus Lite, a .db file).
Figures on stdout as JSON, progress on stderr; method and numbers in docs/performance.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import orjson

from daemon.logs import configure_logging
from tests.bench.bench_engines import UniquePool
from tests.bench.engine_runs import in_workdir, size_arguments
from tests.bench.restore_repo import TOPIC, median, say, write_snapshot

ENGINES = ("qdrant-memory", "milvus")
PAGE = 8192
"""The page both sides read (``QdrantEngine.scan`` in local mode, ``MilvusEngine`` Lite)."""


def own_scroll(engine: Any, name: str) -> int:
    """Every point of ``name`` read through the engine's client, as its users would."""
    n = 0
    if hasattr(engine, "lite"):
        fields = ["pk", "vector", "id", "tenant", "document", "metadata", "acl",
                  "embedding_model", "source", "vecwal"]
        it = engine.client.query_iterator(name, batch_size=PAGE, filter="", output_fields=fields)
        try:
            while batch := it.next():
                for row in batch:
                    n += len(dict(row)["vector"]) > 0  # every field decoded, as scan does
        finally:
            it.close()
        return n
    offset = None
    while True:
        points, offset = engine.client.scroll(name, limit=PAGE, offset=offset,
                                              with_payload=True, with_vectors=True)
        for p in points:
            n += len(p.vector) > 0
        if offset is None:
            return n


STEPS = ("scroll", "reconcile", "reconcile_gc")


def run_engine(kind: str, work: Path, repo_path: Path, rounds: int) -> dict[str, Any]:
    from daemon.audit.reconcile import reconcile
    from daemon.changelog.repository import Repository
    from daemon.objectstore import open_store
    from daemon.restore.planner import Scope
    from tests.bench.engine_runs import timed_restore

    spec = "qdrant::memory:" if kind == "qdrant-memory" else f"milvus:{work / 'r.db'}"
    sink, restored = timed_restore(spec, str(repo_path), False)
    n = restored["records"]
    say(f"{kind}: restored {n:,} records in {restored['rto_s']:.1f}s")
    engine = sink.engine
    name = next(iter(sink.truth))
    repo = Repository(open_store(f"file://{repo_path}"))
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    try:
        for r in range(rounds):
            for step in STEPS[r % 3:] + STEPS[:r % 3]:  # each step first in some round
                began = time.monotonic()
                if step == "scroll":
                    assert own_scroll(engine, name) == n
                else:
                    result = reconcile(repo, [TOPIC], engine, Scope(),
                                       pause_gc=step == "reconcile")
                    c = result.collections[name]
                    assert result.drift == 0 and c.state_records == c.engine_records == n, \
                        result.to_dict()
                times[step].append(time.monotonic() - began)
            say(f"{kind} round {r}: " + ", ".join(f"{s} {t[-1]:.2f}s" for s, t in times.items()))
    finally:
        sink.close()
    out: dict[str, Any] = {"records": n, "restore_s": round(restored["rto_s"], 2)}
    for step, t in times.items():
        out[f"{step}_s"] = [round(x, 3) for x in t]
        out[f"{step}_per_s"] = round(n / median(t))
    out["ratio"] = round(median(times["scroll"]) / median(times["reconcile"]), 3)
    out["ratio_gc"] = round(median(times["scroll"]) / median(times["reconcile_gc"]), 3)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    size_arguments(ap, ",".join(ENGINES))
    args = ap.parse_args(argv)
    configure_logging("warning", "console")

    def run(work: Path) -> dict[str, Any]:
        from daemon.changelog.repository import Repository
        from daemon.objectstore import open_store

        repo_path = work / "repo"
        built = write_snapshot(Repository(open_store(f"file://{repo_path}")),
                               UniquePool(args.dim), args.records)
        say(f"snapshot of {args.records:,} x {args.dim} written ({built})")
        out: dict[str, Any] = {"records": args.records, "dim": args.dim, "rounds": args.rounds}
        for kind in args.engines.split(","):
            scratch = work / kind
            scratch.mkdir()
            out[kind] = run_engine(kind, scratch, repo_path, args.rounds)
        return out

    result = in_workdir(args.workdir, "vecwal-bench-reconcile-", run)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return result


if __name__ == "__main__":
    main()
