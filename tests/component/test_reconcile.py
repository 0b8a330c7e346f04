"""`vecwal reconcile` and `vecwal restore --preview` against embedded engines (Qdrant local
mode, Milvus Lite), on a file:// repository with a random history compacted once: a restored
engine reconciles with no drift (exit 0); an extra point, a deleted one, a changed vector, a
changed acl and a changed payload are each reported in their kind and part (exit 6); a tenant
filter reports that tenant's only; a preview reports what a restore would add, remove and
change, and leaves the engine as it was."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.audit.reconcile import against_plan, compare, reconcile
from daemon.changelog.repository import Repository
from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.metrics import Metrics
from daemon.objectstore import open_store
from daemon.reconcile_scheduler import ReconcileScheduler
from daemon.restore.executor import execute
from daemon.restore.planner import RestorePlan, Scope, gather, make_plan
from daemon.restore.sinks.engine import EngineSink
from daemon.restore.sinks.open import open_engine
from daemon.restore.target import parse_target
from daemon.snapshot.compactor import Compactor
from tests.oracle.history import TOPIC, generate, oracle, write_log

ROOT = Path(__file__).resolve().parents[2]
SEED, EVENTS = 23, 300


def vecwal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI run in this process (no interpreter and engine client start-up to pay)."""
    from daemon.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def repo_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[Repository, Path]:
    tmp = tmp_path_factory.mktemp("reconcile")
    repo = Repository(open_store(f"file://{tmp / 'repo'}"))
    history = generate(SEED, EVENTS)
    write_log(repo, history, SEED)
    cfg = tmp / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "file://{tmp / "repo"}"\n[compaction]\nmin_buckets = 2\n')
    Compactor.from_config(repo, load_config(str(cfg))).compact(history.times[len(history.times) // 2])
    return repo, cfg


def plan_now(repo: Repository, scope: Scope | None = None) -> RestorePlan:
    target = parse_target("now", int(time.time() * 1000))
    return make_plan(gather(repo, [TOPIC], target), target, scope or Scope())


@pytest.fixture(scope="module", params=["qdrant", "milvus"])
def restored(request: pytest.FixtureRequest, repo_config: tuple[Repository, Path],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(kind, spec) of an engine restored to valid-through, closed (a CLI may open it)."""
    repo, _ = repo_config
    tmp = tmp_path_factory.mktemp(request.param)
    spec = f"qdrant:{tmp / 'q'}" if request.param == "qdrant" else f"milvus:{tmp / 'm.db'}"
    sink = EngineSink(open_engine(spec))
    try:
        execute(repo, plan_now(repo), sink)
    finally:
        sink.close()
    yield request.param, spec


def points(engine: Any, collection: str) -> dict[str, tuple[dict[str, Any], bytes]]:
    return {k: (f, v.tobytes()) for k, f, v in engine.scan(collection)}


def upsert(kind: str, engine: Any, collection: str, key: str, fields: dict[str, Any],
           vec: np.ndarray) -> None:
    if kind == "qdrant":
        from qdrant_client import models as m

        engine.client.upsert(collection, [m.PointStruct(id=key, vector=vec.tolist(),
                                                        payload=fields)])
    else:
        engine.client.upsert(collection, engine.rows([key], vec[None, :], [fields]))


def delete(kind: str, engine: Any, collection: str, key: str) -> None:
    if kind == "qdrant":
        from qdrant_client import models as m

        engine.client.delete(collection, m.PointIdsList(points=[key]))
    else:
        engine.client.delete(collection, ids=[key])


def drift_of(result: Any) -> dict[str, dict[str, Any]]:
    """kind -> {tenant/id: parts} over every collection."""
    out: dict[str, dict[str, Any]] = {"extra": {}, "missing": {}, "changed": {}}
    for c in result.collections.values():
        for kind, sample in c.samples.items():
            for s in sample:
                out[kind][f"{c.collection}:{s['tenant']}/{s['id']}"] = s.get("parts")
    return out


def test_reconcile_and_preview(repo_config: tuple[Repository, Path],
                               restored: tuple[str, str],
                               capsys: pytest.CaptureFixture[str]) -> None:
    repo, cfg = repo_config
    kind, spec = restored
    want, _ = oracle(generate(SEED, EVENTS), plan_now(repo).until_ms or 0)
    engine: Any = open_engine(spec)  # its client, to write around vecwal
    try:
        # The restored engine: no drift, every record compared.
        clean = reconcile(repo, [TOPIC], engine, Scope())
        assert clean.drift == 0, clean.to_dict()
        assert sum(c.state_records for c in clean.collections.values()) == len(want)
        assert sum(c.engine_records for c in clean.collections.values()) == len(want)

        # Drift of each kind, in one collection of the engine.
        name = "docs"
        held = points(engine, name)
        by_tenant = sorted(held, key=lambda k: (held[k][0]["tenant"], k))
        gone, vec_k, acl_k, meta_k = by_tenant[:4]
        f0 = held[gone][0]
        delete(kind, engine, name, gone)
        f, v = held[vec_k]
        upsert(kind, engine, name, vec_k, f,
               np.frombuffer(v, dtype=np.float32) + np.float32(0.25))
        f, v = held[acl_k]
        upsert(kind, engine, name, acl_k, {**f, "acl": ["mallory"]},
               np.frombuffer(v, dtype=np.float32))
        f, v = held[meta_k]
        upsert(kind, engine, name, meta_k, {**f, "metadata": {"bypassed": True}},
               np.frombuffer(v, dtype=np.float32))
        intruder = "00000000-0000-5000-8000-000000000001"
        upsert(kind, engine, name, intruder, {**f, "id": "intruder"},
               np.frombuffer(v, dtype=np.float32))
        if kind == "milvus":
            engine.client.flush(name)

        def who(key: str) -> str:
            return f"{name}:{held[key][0]['tenant']}/{held[key][0]['id']}"

        before = points(engine, name)
        got = reconcile(repo, [TOPIC], engine, Scope())
        d = drift_of(got)
        assert d["missing"] == {who(gone): None}
        assert d["extra"] == {f"{name}:{f['tenant']}/intruder": None}
        assert d["changed"] == {who(vec_k): ["vector"], who(acl_k): ["acl"],
                                who(meta_k): ["payload"]}
        c = got.collections[name]
        assert (c.counts, c.parts) == ({"extra": 1, "missing": 1, "changed": 3},
                                       {"vector": 1, "payload": 1, "acl": 1})
        assert got.collections["img"].drift == 0

        # One tenant: that tenant's drift only.
        tenant = f0["tenant"]
        one = reconcile(repo, [TOPIC], engine, Scope(frozenset({name}), frozenset({tenant})))
        assert set(one.collections) == {name}
        assert {k.split(":")[1].split("/")[0] for ks in drift_of(one).values() for k in ks} \
            == {tenant}
        assert one.collections[name].state_records == sum(
            1 for k in want if k[0] == name and k[1] == tenant)

        # A preview of the restore to now: what it would add (the deleted), remove (the
        # intruder), change; the engine is as it was.
        pre = against_plan(repo, plan_now(repo), engine)
        assert drift_of(pre) == d
        assert points(engine, name) == before
    finally:
        engine.close()

    # Through the CLI: exit 6 and the same counts; preview's labels, the engine unchanged
    # (as re-read from its files: qdrant-client's local mode gives back the vectors as
    # uploaded, not normalised, once opened again).
    engine = open_engine(spec)
    try:
        before = points(engine, name)
    finally:
        engine.close()
    proc = vecwal("reconcile", "--config", str(cfg), "--engine", spec, "--collection", name,
                  "--collection", "img", "--json")
    assert proc.returncode == 6, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["drift"], out["extra"], out["missing"], out["changed"]) == (5, 1, 1, 3)
    assert out["collections"][name]["parts"] == {"vector": 1, "payload": 1, "acl": 1}
    code, out_text, err = in_process(capsys, "restore", "--config", str(cfg), "--to", "now",
                                     "--into", spec, "--preview")
    assert code == 0, err
    assert "removed 1" in out_text and "added 1" in out_text \
        and "changed 3" in out_text and "intruder" in out_text
    engine = open_engine(spec)
    try:
        assert points(engine, name) == before
    finally:
        engine.close()


def test_reconcile_cli_clean_and_refusals(repo_config: tuple[Repository, Path],
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    repo, cfg = repo_config
    spec = f"qdrant:{tmp_path / 'q'}"
    sink = EngineSink(open_engine(spec))
    try:
        execute(repo, plan_now(repo, Scope(frozenset({"img"}))), sink)
    finally:
        sink.close()
    code, out_text, err = in_process(capsys, "reconcile", "--config", str(cfg), "--engine",
                                     spec, "--collection", "img")
    assert code == 0, err
    assert "drift from the backup: 0 records" in out_text
    # A collection the engine lacks: every backup record missing.
    code, out_text, err = in_process(capsys, "reconcile", "--config", str(cfg), "--engine",
                                     spec, "--collection", "docs", "--json")
    out = json.loads(out_text)
    assert code == 6 and out["missing"] == out["drift"] > 0
    code, _, err = in_process(capsys, "restore", "--config", str(cfg), "--to", "now", "--into",
                              f"dir:{tmp_path / 'd'}", "--preview")
    assert code == 1 and "--preview compares with a vector database" in err
    assert not (tmp_path / "d").exists()

    # Scheduled in `vecwal run`: the drift per collection and kind as gauges.
    config = load_config(str(cfg), {"VECWAL_RECONCILE_INTERVAL_S": "3600",
                                    "VECWAL_RECONCILE_ENGINE": spec,
                                    "VECWAL_RECONCILE_COLLECTIONS": "img,docs"})
    metrics = Metrics()
    result = ReconcileScheduler(config, repo, metrics).run_once()
    assert result is not None
    drift = {(c, k): metrics.registry.get_sample_value(
        "vecwal_reconcile_drift_records", {"collection": c, "kind": k})
        for c in ("img", "docs") for k in ("extra", "missing", "changed")}
    assert drift == {**dict.fromkeys(drift, 0.0), ("docs", "missing"): out["missing"]}
    with pytest.raises(ConfigError, match=r"\[reconcile\]"):
        load_config(str(cfg), {"VECWAL_RECONCILE_INTERVAL_S": "60"})


@pytest.mark.parametrize("kind", ["lancedb", "chroma"])
def test_other_embedded_engines_reconcile_clean(repo_config: tuple[Repository, Path],
                                                tmp_path: Path, kind: str) -> None:
    """LanceDB and Chroma (local) read back by the same path: a restore reconciles with no
    drift (Chroma gives some vectors back a bit off: re-read and compared within rounding)."""
    repo, _ = repo_config
    spec = f"{kind}:{tmp_path / kind}"
    sink = EngineSink(open_engine(spec))
    try:
        execute(repo, plan_now(repo), sink)
    finally:
        sink.close()
    engine: Any = open_engine(spec)
    try:
        got = reconcile(repo, [TOPIC], engine, Scope())
        assert got.drift == 0 and sum(c.state_records for c in got.collections.values()) > 0, \
            got.to_dict()

        # ``compare``, for a caller that builds the state itself (rollback): the oracle's
        # replay is the same state; one record's acl changed in it is reported.
        want, catalog = oracle(generate(SEED, EVENTS), plan_now(repo).until_ms or 0)
        names = sorted({k[0] for k in want})
        states = {n: [dict(r, tenant=k[1], id=k[2]) for k, r in sorted(want.items())
                      if k[0] == n] for n in names}
        assert all(c.drift == 0 for c in compare(engine, states.items(), catalog).values())
        first = states[names[0]][0]
        first["acl"] = ["someone-else"]
        drift = compare(engine, states.items(), catalog)[names[0]]
        assert drift.samples["changed"] == [
            {"tenant": first["tenant"], "id": first["id"], "parts": ["acl"]}]
        assert drift.drift == 1
    finally:
        engine.close()
