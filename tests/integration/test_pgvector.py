"""`vecwal restore --into pgvector:postgresql://...` and `vecwal drill` against the real
PostgreSQL 18 + pgvector server (``postgres_service``, session scope; a fresh database per
test). The repository is the random history of tests/component/test_cli_engines.py (file://,
no broker needed): the tables hold exactly the oracle's state, validation passes in the
engine, an existing collection is refused unless --replace, --rename restores beside it,
and rows altered after the load make validation fail, naming the checks and ids."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from daemon.changelog.repository import Repository
from daemon.config import Config
from daemon.objectstore import open_store
from daemon.restore.executor import execute
from daemon.restore.planner import Scope, gather, make_plan
from daemon.restore.sinks.engine import CollectionSpec, EngineSink, Where, point_key
from daemon.restore.sinks.open import open_sink
from daemon.restore.target import parse_target
from daemon.restore.validate import validate
from tests.component.test_cli_engines import (  # noqa: F401  (repo_config is a fixture)
    assert_equals_oracle,
    assert_restored_as_oracle,
    assert_validated,
    engine_state,
    repo_config,
    restore,
    vecwal,
)
from tests.oracle.history import TOPIC, generate, oracle

pytestmark = pytest.mark.integration

SEED, EVENTS = 11, 400  # as repo_config writes it


def tables(conn: Any) -> dict[str, str]:
    """Relations of the public schema: name -> 'r' (table) or 'v' (view)."""
    rows = conn.execute("SELECT relname, relkind FROM pg_class c JOIN pg_namespace n ON "
                        "n.oid = c.relnamespace WHERE nspname = 'public' AND relkind IN "
                        "('r', 'v')").fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def test_restore_into_pgvector(repo_config: Path, postgres_service: Any,  # noqa: F811
                               postgres_database: str) -> None:
    history = generate(SEED, EVENTS)
    dsn = postgres_service.dsn(postgres_database)
    spec = f"pgvector:{dsn}"
    early, late = history.times[100], history.times[-40]
    for i, to in enumerate((early, late)):
        code, report, err = restore(repo_config, str(to), spec, *(("--replace",) if i else ()))
        assert code == 0, err
        assert_validated(report)
        assert "***@" in report["sink"] and postgres_service.password not in report["sink"]
        catalog = assert_restored_as_oracle(report, history, to, spec)

    with psycopg.connect(dsn, autocommit=True) as conn:
        rels = tables(conn)
        for coll, schema in catalog["collections"].items():
            assert rels[coll] == "r"
            comment = conn.execute("SELECT obj_description(%s::regclass, 'pg_class')",
                                   (f'"{coll}"',)).fetchone()
            assert comment is not None
            assert json.loads(comment[0])["vecwal"]["metric"] == schema["metric"]
            defs = " ".join(r[0] for r in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (coll,)))
            ops = {"cosine": "vector_cosine_ops", "dot": "vector_ip_ops"}[schema["metric"]]
            assert f"USING hnsw (vector {ops}) WITH (m='16', ef_construction='" in defs, defs
            assert "USING gin (acl)" in defs and "(tenant)" in defs and "(key)" in defs
        for alias, coll in catalog["aliases"].items():  # views, counting as their table
            assert rels[alias] == "v"
            assert (conn.execute(f'SELECT count(*) FROM "{alias}"').fetchone()
                    == conn.execute(f'SELECT count(*) FROM "{coll}"').fetchone())

    # The collections exist now: refused without --replace, and nothing changes.
    code, _, err = restore(repo_config, "now", spec)
    assert code == 1 and "already has collection" in err and "--replace" in err

    # Beside the original, under new names; the original keeps its state at the last target.
    code, report, err = restore(repo_config, str(history.times[60]), spec,
                                "--rename", "docs:docs_then", "--rename", "img:img_then")
    assert code == 0 and report["validation"]["ok"], err
    assert_equals_oracle(engine_state(spec, {"docs": "docs_then", "img": "img_then"}),
                         oracle(history, history.times[60])[0])
    assert_equals_oracle(engine_state(spec, {"docs": "docs", "img": "img"}),
                         oracle(history, late)[0])

    # A drill: scratch tables, validated, dropped; the record keeps no password.
    before = tables(psycopg.connect(dsn, autocommit=True))
    proc = vecwal("drill", "--config", str(repo_config), "--into", spec, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    drill = json.loads(proc.stdout)
    assert drill["ok"] and drill["cleaned_up"] and drill["records"] > 0 and drill["checks"] > 20
    assert postgres_service.password not in proc.stdout and "***@" in drill["into"]
    assert tables(psycopg.connect(dsn, autocommit=True)) == before


def test_tampered_rows_fail_validation(repo_config: Path, postgres_service: Any,  # noqa: F811
                                       postgres_database: str) -> None:
    """Loaded, validated, then one vector altered and one tenant's acls dropped in SQL:
    validation fails, naming the ids."""
    dsn = postgres_service.dsn(postgres_database)
    history = generate(SEED, EVENTS)
    want, _ = oracle(history, history.times[-40])
    repo = Repository(open_store(f"file://{repo_config.parent / 'repo'}"))
    target = parse_target(str(history.times[-40]), int(time.time() * 1000))
    plan = make_plan(gather(repo, [TOPIC], target), target, Scope())
    sink = open_sink(f"pgvector:{dsn}", Config())
    assert isinstance(sink, EngineSink)
    try:
        result = execute(repo, plan, sink)
        assert validate(result, sink).ok, "the untouched load validates"
        victim = sorted(want)[len(want) // 3]
        with_acl = sorted(k for k, r in want.items() if r["acl"] and k[1])
        coll, tenant = with_acl[0][:2]
        lost = [k for k in with_acl if k[:2] == (coll, tenant)]
        vec = np.frombuffer(want[victim]["vector"], dtype="<f4").copy()
        vec[::2] *= -1.0
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'UPDATE "{victim[0]}" SET vector = %s::vector WHERE key = %s',
                         ("[" + ",".join(map(repr, vec.tolist())) + "]",
                          point_key(victim[1], victim[2])))
            conn.execute(f'UPDATE "{coll}" SET acl = NULL WHERE tenant = %s', (tenant,))
        report = validate(result, sink)
        failed = {c.name: c.detail for c in report.checks if not c.ok}
        assert not report.ok
        assert f"{victim[1]}/{victim[2]}" in failed[f"{victim[0]}: vectors as written"], failed
        assert f"{victim[0]}: state digest" in failed
        assert f"{tenant}/{lost[0][2]}" in failed[f"{coll}: acl kept"], failed
        assert "missing" in failed[f"{coll}: acl 'g:{tenant}' selects its records"], failed
    finally:
        sink.close()


def test_metrics_and_index_types(postgres_service: Any, postgres_database: str) -> None:
    """l2 and dot searches agree with numpy; ivf_flat becomes IVFFlat, flat no index, and a
    type pgvector lacks becomes HNSW with a note naming the mapping."""
    from daemon.restore.sinks.engine import to_payload
    from daemon.restore.sinks.pgvector import PgvectorEngine

    engine = PgvectorEngine(postgres_service.dsn(postgres_database))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    recs: list[dict[str, Any]] = [
        {"id": f"r{i}", "tenant": f"t{i % 3}", "acl": [f"g{i % 4}"], "vector": None,
         "metadata": None, "document": None, "embedding_model": None, "source": None}
        for i in range(len(x))]
    keys = [point_key(r["tenant"], r["id"]) for r in recs]
    cases: dict[str, tuple[dict[str, Any], str | None]] = {
        "l2": ({"type": "ivf_flat", "nlist": 4, "nprobe": 4},  # l2: the default class, unnamed
               "ivfflat (vector) WITH (lists='4')"),
        "dot": ({"type": "flat"}, None),
        "cosine": ({"type": "diskann"}, "hnsw (vector vector_cosine_ops)")}
    try:
        for metric, (index, made) in cases.items():
            name = f"m_{metric}"
            engine.create(name, CollectionSpec(16, metric, index, [], {}))
            engine.insert(name, keys, x, [to_payload(r) for r in recs])
            engine.finish()
            defs = " ".join(r[0] for r in engine.conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (name,)))
            assert (made in defs) if made else ("hnsw" not in defs and "ivfflat" not in defs), defs
            q = x[7] + 0.01
            near = {"l2": -((x - q) ** 2).sum(1), "dot": x @ q,
                    "cosine": (x @ q) / np.linalg.norm(x, axis=1)}[metric]
            want = [keys[i] for i in np.argsort(-near)[:5]]
            assert engine.search(name, q, 5) == want, metric
            scoped = engine.search(name, q, 10, Where(tenant="t1", principal="g1"))
            assert len(scoped) == 10 and set(scoped) <= {
                k for k, r in zip(keys, recs, strict=True) if r["tenant"] == "t1"
                and r["acl"] == ["g1"]}
        assert engine.notes == ["m_cosine: index type 'diskann' has no pgvector equivalent; "
                                "mapped to HNSW (m=16, ef_construction=64)"]
    finally:
        engine.close()
