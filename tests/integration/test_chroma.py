"""Restore into Chroma end to end: the real broker, a file:// repository, a real Chroma server
(``chroma run``, deploy/local) and Chroma's embedded persistent mode (``chroma:PATH``).

One captured history (a snapshot, then more changes) is restored to a time T after the
snapshot into the server: validation passes in the engine, and what Chroma holds equals the
oracle's state at T field by field. A second restore is refused, then accepted with
``--replace`` and beside it with ``--rename``. A load corrupted in Chroma after the load (one
vector altered, one tenant's acls dropped) fails validation naming the ids. The same restore
into ``chroma:PATH`` validates, and ``vecwal drill`` into the server passes and cleans up."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.config import Config
from daemon.restore.executor import execute
from daemon.restore.planner import Scope, gather, make_plan
from daemon.restore.sinks.engine import EngineSink, point_key
from daemon.restore.sinks.open import open_sink
from daemon.restore.target import parse_target
from daemon.restore.validate import validate
from daemon.rows import RECORD_FIELDS
from tests.component.test_cli_engines import assert_validated
from tests.integration.harness import Target, vecwal
from tests.integration.test_engines import engine_records
from tests.integration.test_restore import (
    Story,
    capture,
    compact,
    produce_batches,
    times_of,
    to_history,
    write_config,
)
from tests.oracle.history import oracle
from tests.services_chroma import ChromaService

pytestmark = pytest.mark.integration



def restore_json(cfg: Path, target: Target, until: int, spec: str, *extra: str
                 ) -> tuple[int, dict[str, Any] | None, str]:
    proc = vecwal("restore", "--config", str(cfg), "--to", str(until), "--into", spec,
                  "--json", *extra, env=target.env, check=False)
    report = json.loads(proc.stdout) if proc.returncode == 0 else None
    return proc.returncode, report, proc.stderr


def assert_validated_records(report: dict[str, Any] | None, records: int) -> None:
    assert report is not None
    assert_validated(report)
    assert report["records"] == records


def test_restore_into_chroma(file_target: Target, chroma_service: ChromaService,
                             tmp_path: Path, group_id: str) -> None:
    target = file_target
    story = Story(seed=1505)
    cfg = write_config(target, tmp_path, group_id)
    b1, b2 = produce_batches(target, [story.preamble() + story.batch(120), story.batch(120)])
    capture(cfg, target)
    snap = compact(cfg, target, to=times_of(b2)[len(b2) // 2])
    time.sleep(0.25)
    (b3,) = produce_batches(target, [story.batch(120, control_rate=0.12)])
    capture(cfg, target)
    until = times_of(b3)[len(b3) // 2]
    want, catalog = oracle(to_history(b1 + b2 + b3), until)
    names = {k[0] for k in want} | set(catalog["collections"])
    assert len(want) > 50

    # Into the server: validated in Chroma, and Chroma holds the oracle's records.
    code, report, err = restore_json(cfg, target, until, chroma_service.spec)
    assert code == 0, err[-3000:]
    assert_validated_records(report, len(want))
    assert report is not None and report["snapshot"] == snap["snapshot"]
    assert any("Chroma has no aliases" in n for n in report["notes"]), report["notes"]
    sink = open_sink(chroma_service.spec, Config())
    assert isinstance(sink, EngineSink)
    try:
        got = engine_records(sink, names)
        assert set(got) == set(want), sorted(set(want) ^ set(got))[:5]
        for key, ev in want.items():
            rec = got[key]
            for name in RECORD_FIELDS:
                if name != "vector":
                    assert rec[name] == ev[name], (key, name, rec[name], ev[name])
            # Over HTTP Chroma carries vectors as JSON numbers: equal within float32 rounding.
            assert np.allclose(rec["vector"], np.frombuffer(ev["vector"], dtype="<f4"),
                               rtol=1e-6, atol=1e-7), key
        client: Any = sink.engine.client  # type: ignore[attr-defined]
        for coll, schema in catalog["collections"].items():
            hnsw = client.get_collection(coll, embedding_function=None
                                         ).configuration["hnsw"]
            assert hnsw["space"] == {"cosine": "cosine", "dot": "ip", "l2": "l2"}[schema["metric"]]
            assert hnsw["max_neighbors"] == schema["index"]["m"]
            assert hnsw["ef_construction"] == schema["index"]["ef_construct"]
    finally:
        sink.close()

    # Again: refused (nothing written); --replace recreates; --rename restores beside.
    code, _, err = restore_json(cfg, target, until, chroma_service.spec)
    assert code != 0 and "already has collection" in err and "--replace" in err, err[-2000:]
    code, report, err = restore_json(cfg, target, until, chroma_service.spec, "--replace")
    assert code == 0, err[-3000:]
    assert_validated_records(report, len(want))
    coll = sorted(k[0] for k in want)[0]
    code, report, err = restore_json(cfg, target, until, chroma_service.spec, "--collection",
                                     coll, "--rename", f"{coll}:{coll}-beside")
    assert code == 0, err[-3000:]
    assert_validated_records(report, sum(1 for k in want if k[0] == coll))

    # Corrupted after the load, before validation: validation fails and names the ids.
    repo = target.repository()
    plan_target = parse_target(str(until), int(time.time() * 1000))
    plan = make_plan(gather(repo, [target.topic], plan_target), plan_target, Scope())
    bad = open_sink(chroma_service.spec, Config(), prefix=f"bad{group_id[-8:]}-")
    assert isinstance(bad, EngineSink)
    try:
        result = execute(repo, plan, bad)
        assert validate(result, bad).ok, "the uncorrupted load validates"
        victim, tenant, lost = corrupt(bad, want)
        report2 = validate(result, bad)
        failed = {c.name: c.detail for c in report2.checks if not c.ok}
        assert not report2.ok
        assert f"{victim[1]}/{victim[2]}" in failed[f"{victim[0]}: vectors as written"], failed
        assert f"{victim[0]}: state digest" in failed
        assert f"{tenant}/{lost[0][2]}" in failed[f"{lost[0][0]}: acl kept"], failed
        assert "missing" in failed[f"{lost[0][0]}: acl 'g:{tenant}' selects its records"]
    finally:
        bad.cleanup()
        bad.close()

    # Chroma's embedded persistent mode in a directory.
    code, report, err = restore_json(cfg, target, until, f"chroma:{tmp_path / 'chroma-local'}")
    assert code == 0, err[-3000:]
    assert_validated_records(report, len(want))

    # A drill into the server: passes, recorded, its scratch collections dropped.
    proc = vecwal("drill", "--config", str(cfg), "--to", str(until), "--into",
                  chroma_service.spec, "--json", env=target.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    drill = json.loads(proc.stdout)
    assert drill["ok"] and drill["cleaned_up"] and drill["records"] == len(want), drill
    assert drill["checks"] > 20
    import chromadb
    from chromadb.config import Settings

    server = chroma_service.url.rsplit(":", 1)
    client = chromadb.HttpClient(host=server[0].split("//")[1], port=int(server[1]),
                                 settings=Settings(anonymized_telemetry=False))
    left = [c.name for c in client.list_collections() if c.name.startswith("vecwal_drill_")]
    assert not left, left


def corrupt(sink: EngineSink, want: dict[tuple[str, str, str], dict[str, Any]]
            ) -> tuple[tuple[str, str, str], str, list[tuple[str, str, str]]]:
    """Alter one record's vector; drop every acl of one tenant of one collection (in Chroma,
    through its own client: the metadata key removed)."""
    client: Any = sink.engine.client  # type: ignore[attr-defined]
    victim = sorted(want)[len(want) // 3]
    with_acl = sorted(k for k, r in want.items() if r["acl"] and k[1])
    coll, tenant = with_acl[0][0], with_acl[0][1]
    lost = [k for k in with_acl if k[:2] == (coll, tenant)]
    col = client.get_collection(sink.target(victim[0]), embedding_function=None)
    vec = np.frombuffer(want[victim]["vector"], dtype="<f4").copy()
    vec[::2] *= -1.0
    col.update(ids=[point_key(victim[1], victim[2])], embeddings=[vec])
    col = client.get_collection(sink.target(coll), embedding_function=None)
    keys = [point_key(t, i) for _, t, i in lost]
    col.update(ids=keys, metadatas=[{"acl": None} for _ in keys])  # None removes a key
    return victim, tenant, lost
