"""What the engine benchmarks (bench_engines, bench_chroma, bench_lancedb, bench_pgvector,
bench_reconcile) share: their size and rounds arguments, a timed restore of a snapshot into a
sink, validated when asked, and the snapshot's rows read into memory for the engine's own
bulk load (the baseline each restore is held to)."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.restore_repo import TOPIC


def size_arguments(ap: argparse.ArgumentParser, engines: str | None = None) -> None:
    """``--records``, ``--dim``, ``--rounds`` and ``--workdir`` (and ``--engines``, default
    ``engines``, when given): what every engine benchmark is sized by."""
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    if engines is not None:
        ap.add_argument("--engines", default=engines)


def timed_restore(spec: str, repo_path: str, validate_too: bool,
                  prefix: str = "") -> tuple[Any, dict[str, Any]]:
    """The sink (an EngineSink, still open) and the restore's figures: records, ``rto_s``
    (plan + execute), ``engine_s`` (inside the engine's insert and flush calls) and
    ``read_s`` (the rest: reading, decoding, building points); with ``validate_too``, the
    validation timed apart (a failed check stops the benchmark)."""
    from daemon.changelog.repository import Repository
    from daemon.config import Config
    from daemon.objectstore import open_store
    from daemon.restore.executor import execute
    from daemon.restore.planner import Scope, gather, make_plan
    from daemon.restore.sinks.engine import EngineSink
    from daemon.restore.sinks.open import open_sink
    from daemon.restore.target import parse_target
    from daemon.restore.validate import validate

    sink = open_sink(spec, Config(), prefix=prefix)
    assert isinstance(sink, EngineSink)
    began = time.monotonic()
    repo = Repository(open_store(f"file://{repo_path}"))
    target = parse_target("now", int(time.time() * 1000))
    plan = make_plan(gather(repo, [TOPIC], target), target, Scope())
    result = execute(repo, plan, sink)
    restored = time.monotonic()
    total = restored - began
    out = {"records": result.records, "rto_s": total, "engine_s": sink.load_seconds,
           "read_s": total - sink.load_seconds}
    if validate_too:
        report = validate(result, sink)
        out["validate_s"] = time.monotonic() - restored
        out["checks"] = len(report.checks)
        failed = [c for c in report.checks if not c.ok]
        if failed:
            raise SystemExit(f"validation failed: {failed[:5]}")
    return sink, out


@dataclass
class SnapshotRows:
    """The newest snapshot's one collection, as points in memory."""

    name: str
    schema: dict[str, Any]
    keys: list[str]
    payloads: list[dict[str, Any]]
    vectors: np.ndarray

    @property
    def spec(self) -> Any:
        from daemon.restore.sinks.engine import CollectionSpec

        return CollectionSpec(self.schema["dimension"], "cosine", self.schema["index"], [],
                              self.schema)


def snapshot_rows(repo_path: str) -> SnapshotRows:
    from daemon.changelog.repository import Repository
    from daemon.objectstore import open_store
    from daemon.restore.sinks.engine import point_key, to_payload
    from daemon.snapshot.compactor import list_manifests, read_manifest
    from daemon.snapshot.datafile import decode_records

    repo = Repository(open_store(f"file://{repo_path}"))
    manifest = read_manifest(repo, list_manifests(repo)[-1])
    (name, coll), = manifest.collections.items()
    keys, payloads, chunks = [], [], []
    for f in coll.files:
        recs = list(decode_records(repo.store.get(f.path), f.path))
        chunks.append(np.frombuffer(b"".join(r["vector"] for r in recs), dtype="<f4"))
        keys += [point_key(r["tenant"], r["id"]) for r in recs]
        payloads += [to_payload(r) for r in recs]
    schema = manifest.catalog["collections"][name]["schema"]
    vectors = np.concatenate(chunks).reshape(len(keys), schema["dimension"])
    return SnapshotRows(name, schema, keys, payloads, vectors)


def in_workdir(workdir: str | None, prefix: str,
               run: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """``run`` in ``workdir`` (default a new temporary directory), removed afterwards."""
    work = Path(workdir or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
