"""`vecwal restore --into lancedb:PATH` and `vecwal drill` with LanceDB (embedded: the
engine is the library, on a real directory). The repository is the random history of
tests/component/test_cli_engines.py (file://, no broker needed): the tables hold exactly the
oracle's state, validation passes in the engine, an existing collection is refused unless
--replace, --rename restores beside it, a drill cleans up, and rows altered after the load
make validation fail, naming the checks and ids. A load with the vector index built (the
threshold lowered) validates through the index; l2, dot and cosine searches agree with
numpy; index types map as the sink's docstring says."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from daemon.restore.executor import execute
from daemon.restore.planner import Scope, gather, make_plan
from daemon.restore.sinks.engine import CollectionSpec, EngineSink, Where, point_key, to_payload
from daemon.restore.sinks.lancedb import LanceDBEngine
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


def table_names(path: Path) -> set[str]:
    return set(lancedb.connect(str(path)).list_tables(limit=1000).tables)


def test_restore_into_lancedb(repo_config: Path, tmp_path: Path) -> None:  # noqa: F811
    history = generate(SEED, EVENTS)
    where = tmp_path / "lance"
    spec = f"lancedb:{where}"
    early, late = history.times[100], history.times[-40]
    for i, to in enumerate((early, late)):
        code, report, err = restore(repo_config, str(to), spec, *(("--replace",) if i else ()))
        assert code == 0, err
        assert_validated(report)
        catalog = assert_restored_as_oracle(report, history, to, spec)
        for alias, coll in catalog["aliases"].items():  # no aliases in LanceDB: noted
            if coll not in catalog["collections"]:
                continue
            assert (f"alias {alias!r} not created: LanceDB has no aliases; its collection is "
                    f"table {coll!r}") in report["notes"], report["notes"]

    db = lancedb.connect(str(where))
    for coll, schema in catalog["collections"].items():
        table = db.open_table(coll)
        fields = {f.name: f.type for f in table.schema}
        assert fields["vector"] == pa.list_(pa.float32(), schema["dimension"])
        assert fields["acl"] == pa.list_(pa.string()) and fields["tenant"] == pa.string()
        assert table.list_indices() == []  # small tables: searched exactly
    want, _ = oracle(history, late)
    assert table_names(where) == set(catalog["collections"]) | {k[0] for k in want}

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

    # A drill: scratch tables, validated, dropped.
    before = table_names(where)
    proc = vecwal("drill", "--config", str(repo_config), "--into", spec, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    drill = json.loads(proc.stdout)
    assert drill["ok"] and drill["cleaned_up"] and drill["records"] > 0 and drill["checks"] > 20
    assert table_names(where) == before


def test_indexed_load_validates_and_tampering_fails(repo_config: Path,  # noqa: F811
                                                    tmp_path: Path) -> None:
    """Adds of 64 rows in the writer thread, then the vector, tenant and acl indexes built
    (threshold 1): validation passes through the index. Then one vector altered and one
    tenant's acls dropped in LanceDB: validation fails, naming the ids."""
    history = generate(SEED, EVENTS)
    to = history.times[-40]
    want, _ = oracle(history, to)
    repo = Repository(open_store(f"file://{repo_config.parent / 'repo'}"))
    target = parse_target(str(to), int(time.time() * 1000))
    plan = make_plan(gather(repo, [TOPIC], target), target, Scope())
    engine = LanceDBEngine(str(tmp_path / "lance"), index_min_rows=1, flush_rows=64)
    sink = EngineSink(engine)
    result = execute(repo, plan, sink)
    report = validate(result, sink)
    assert report.ok, [c for c in report.checks if not c.ok]
    for coll in sink.truth:
        assert len(engine.db.open_table(coll).list_versions()) > 2  # several adds
        kinds = {ix.columns[0]: ix.index_type for ix in engine.db.open_table(coll).list_indices()}
        assert kinds == {"vector": "IvfHnswSq", "tenant": "Bitmap", "acl": "LabelList"}, kinds
    assert any("index hnsw mapped to LanceDB IVF_HNSW_SQ" in n for n in sink.notes), sink.notes

    victim = sorted(want)[len(want) // 3]
    with_acl = sorted(k for k, r in want.items() if r["acl"] and k[1])
    coll, tenant = with_acl[0][:2]
    lost = [k for k in with_acl if k[:2] == (coll, tenant)]
    vec = np.frombuffer(want[victim]["vector"], dtype="<f4").copy()
    vec[::2] *= -1.0
    db = lancedb.connect(str(tmp_path / "lance"))
    db.open_table(victim[0]).update(where=f"key = '{point_key(victim[1], victim[2])}'",
                                    values={"vector": vec.tolist()})
    db.open_table(coll).update(where=f"tenant = '{tenant}'", values_sql={"acl": "NULL"})
    report = validate(result, sink)
    failed = {c.name: c.detail for c in report.checks if not c.ok}
    assert not report.ok
    assert f"{victim[1]}/{victim[2]}" in failed[f"{victim[0]}: vectors as written"], failed
    assert f"{victim[0]}: state digest" in failed
    assert f"{tenant}/{lost[0][2]}" in failed[f"{coll}: acl kept"], failed
    assert "missing" in failed[f"{coll}: acl 'g:{tenant}' selects its records"], failed


def test_metrics_filters_and_index_types(tmp_path: Path) -> None:
    """l2, dot and cosine searches agree with numpy, exactly and through the index; a metadata
    filter tells 2 from "2"; flat builds no index, ivf_flat IVF_FLAT, a type LanceDB lacks
    IVF_PQ with a note naming the mapping."""
    engine = LanceDBEngine(str(tmp_path / "lance"), index_min_rows=256)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((600, 32)).astype(np.float32)
    recs: list[dict[str, Any]] = [
        {"id": f"r{i}", "tenant": f"t{i % 3}", "acl": [f"g{i % 4}"], "vector": None,
         "metadata": '{"n": 2}' if i % 5 == 0 else '{"n": "2"}' if i % 5 == 1 else None,
         "document": None, "embedding_model": None, "source": None}
        for i in range(len(x))]
    keys = [point_key(r["tenant"], r["id"]) for r in recs]
    cases: dict[str, tuple[dict[str, Any], str | None]] = {
        "l2": ({"type": "ivf_flat", "nlist": 4}, "IvfFlat"),
        "dot": ({"type": "flat"}, None),
        "cosine": ({"type": "diskann"}, "IvfPq")}
    for metric, (index, made) in cases.items():
        name = f"m_{metric}"
        engine.create(name, CollectionSpec(32, metric, index, [], {}))
        engine.insert(name, keys, x, [to_payload(r) for r in recs])
        engine.finish()
        got = [ix.index_type for ix in engine.db.open_table(name).list_indices()
               if ix.columns == ["vector"]]
        assert got == ([made] if made else []), (metric, got)
        q = x[7] + 0.01
        near = {"l2": -((x - q) ** 2).sum(1), "dot": x @ q,
                "cosine": (x @ q) / np.linalg.norm(x, axis=1)}[metric]
        want = [keys[i] for i in np.argsort(-near)[:5]]
        assert engine.search(name, q, 5) == want, metric
        scoped = engine.search(name, q, 10, Where(tenant="t1", principal="g1"))
        assert len(scoped) == 10 and set(scoped) <= {
            k for k, r in zip(keys, recs, strict=True) if r["tenant"] == "t1"
            and r["acl"] == ["g1"]}
        assert engine.select(name, Where(metadata=("n", 2))) == set(keys[0::5])
        assert engine.select(name, Where(metadata=("n", "2"))) == set(keys[1::5])
        assert engine.count(name, Where(tenant="t2")) == 200
    assert engine.notes == ["m_cosine: index diskann mapped to LanceDB IVF_PQ"]
