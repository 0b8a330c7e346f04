"""The ``milvus:`` sink against a real Milvus standalone server (2.3.5, from deploy/local; one
server per session, a fresh database per test): the collection as created there (the layout
for servers before 2.5: acl an ARRAY, missing fields stored empty and named in vecwal.nulls;
Strong consistency; the recorded index), validation that passes on a faithful load and names
the corruption done in the server afterwards, names the server refuses, and ``vecwal restore
--into milvus:http://...`` and ``vecwal drill`` through the real CLI: equal to the oracle,
``--replace``, ``--rename``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from daemon.restore.sinks.engine import EngineRefused, EngineSink, point_key
from daemon.restore.sinks.milvus import MilvusEngine
from tests.component.test_cli_engines import (
    assert_equals_oracle,
    engine_state,
    repo_config,  # noqa: F401  (the module fixture: a file:// repository with a history)
    restore,
    vecwal,
)
from tests.component.test_engine_sinks import catalog, failed, load, records, rewrite
from tests.oracle.history import generate, oracle
from tests.services_milvus import MilvusService

pytestmark = pytest.mark.integration

SEED, EVENTS = 11, 400  # as test_cli_engines' repository


def test_sink_layout_validation_and_corruption(milvus_service: MilvusService,
                                               milvus_database: str) -> None:
    recs = records(45)
    engine = MilvusEngine(milvus_database)
    sink = EngineSink(engine)
    try:
        assert not engine.nullable
        load(sink, recs)
        assert sink.notes == ["alias 'docs-live' created as 'docs_live': milvus:"
                              f"{milvus_database} does not take the name as it is"]
        checks = sink.probe()
        assert all(c.ok for c in checks), [c for c in checks if not c.ok]
        assert {"docs: kNN recall@10 vs brute force", "docs: acl 'g:acme' selects its records",
                "docs: tenant 'acme' search sees no other tenant"} <= {c.name for c in checks}

        desc = engine.client.describe_collection("docs")
        fields = {f["name"]: f for f in desc["fields"]}
        assert desc["consistency_level_name"] == "Strong" and desc["aliases"] == ["docs_live"]
        assert fields["acl"]["type"].name == "ARRAY" and fields["tenant"]["is_partition_key"]
        index = engine.client.describe_index("docs", "vector")
        assert (index["index_type"], index["metric_type"], index["M"],
                index["efConstruction"]) == ("HNSW", "COSINE", "8", "64")
        # A missing document/acl/metadata is stored empty, named in vecwal.nulls, read as None.
        bare = next(r for r in recs if r["acl"] is None and r["document"] is None)
        key = point_key(bare["tenant"], bare["id"])
        (row,) = engine.client.query("docs", filter=f'pk == "{key}"', output_fields=["*"])
        assert (row["document"], row["acl"]) == ("", [])
        assert {"document", "acl"} <= set(row["vecwal"]["nulls"])
        got = {k: f for k, f, _ in engine.scan("docs")}
        assert (got[key]["document"], got[key]["acl"]) == (None, None)

        # Corrupted in the server after the load: each check names what changed.
        vec = np.frombuffer(recs[7]["vector"], dtype="<f4").copy()
        vec[0] += 0.5
        rewrite(sink, point_key(recs[7]["tenant"], recs[7]["id"]), vector=vec)
        lost = [r for r in recs if r["tenant"] == "acme" and r["acl"]]
        for r in lost:
            rewrite(sink, point_key(r["tenant"], r["id"]), acl=None)
        bad = failed(sink)
        assert f"{recs[7]['tenant']}/{recs[7]['id']}" in bad["docs: vectors as written"], bad
        assert f"acme/{lost[0]['id']}" in bad["docs: acl kept"]
        assert "missing" in bad["docs: acl 'g:acme' selects its records"]
    finally:
        sink.close()

    # A collection name the server does not take is refused before anything is written.
    odd = EngineSink(MilvusEngine(milvus_database))
    try:
        cat = catalog()
        cat["collections"]["my-docs"] = cat["collections"].pop("docs")
        with pytest.raises(EngineRefused, match="my-docs") as refused:
            odd.write_catalog(cat)
        assert "--rename my-docs:my_docs" in (refused.value.hint or "")
        assert not odd.engine.exists("my_docs")
    finally:
        odd.close()


def test_cli_restore_replace_rename_and_drill(repo_config: Path,  # noqa: F811
                                              milvus_database: str) -> None:
    history = generate(SEED, EVENTS)
    spec = f"milvus:{milvus_database}"
    # docs alone first (each collection loaded costs seconds here), then both with --replace
    for i, to in enumerate((history.times[100], history.times[-40])):
        scope = ("--replace",) if i else ("--collection", "docs")
        code, report, err = restore(repo_config, str(to), spec, *scope)
        assert code == 0, err
        checks = report["validation"]["checks"]
        assert report["validation"]["ok"], [c for c in checks if not c["ok"]]
        assert any(c["name"].endswith("kNN recall@10 vs brute force") for c in checks)
        want = {k: r for k, r in oracle(history, to)[0].items() if i or k[0] == "docs"}
        assert report["records"] == len(want) > 0
        assert_equals_oracle(engine_state(spec, {"docs": "docs", "img": "img"}), want)

    code, _, err = restore(repo_config, "now", spec)
    assert code == 1 and "already has collection" in err and "--replace" in err

    code, report, err = restore(repo_config, str(history.times[60]), spec, "--collection", "docs",
                                "--rename", "docs:docs_then")
    assert code == 0 and report["validation"]["ok"], err
    then = {k: r for k, r in oracle(history, history.times[60])[0].items() if k[0] == "docs"}
    assert_equals_oracle(engine_state(spec, {"docs": "docs_then"}), then)

    proc = vecwal("drill", "--config", str(repo_config), "--into", spec, "--collection", "img",
                  "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    drill = json.loads(proc.stdout)
    assert drill["ok"] and drill["cleaned_up"] and not drill["failed_checks"], drill
    assert drill["checks"] > 10 and drill["records"] > 0
    # The drill's scratch collection is gone; what the restores made is untouched.
    last = oracle(history, history.times[-40])[0]
    assert_equals_oracle(engine_state(spec, {"docs": "docs", "img": "img"}), last)
    engine = MilvusEngine(milvus_database)
    try:
        assert sorted(engine.client.list_collections()) == ["docs", "docs_then", "img"]
    finally:
        engine.close()
