"""The vector-database sinks against the real embedded engines (Qdrant local mode, Milvus
Lite): what they create, what they store, and validation that passes on a faithful load and
fails, naming the check and the ids, when the engine's contents are corrupted after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from daemon.restore.sinks.engine import EngineSink, TargetExists, point_key
from daemon.rows import StateDigest

DIM = 8
TENANTS = ("acme", "globex", "")


def records(n: int, seed: int = 1, collection: str = "docs") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tenant = TENANTS[i % len(TENANTS)]
        acl = None if i % 5 == 0 else [] if i % 5 == 1 else [f"g:{tenant or 'all'}", "u:ann"]
        out.append({
            "collection": collection, "tenant": tenant, "id": f"r{i}", "dimension": DIM,
            "vector": rng.standard_normal(DIM).astype("<f4").tobytes(),
            "sparse_indices": None, "sparse_values": None,
            "document": f"text {i}" if i % 3 else None, "document_is_json": False,
            "metadata": orjson.dumps({"lang": ["en", "de"][i % 2], "rank": i % 4}).decode()
            if i % 7 else None,
            "acl": acl, "embedding_model": {"name": "e5", "version": str(1 + i % 2)},
            "source": '{"uri": "s3://c/x.pdf"}' if i % 2 else None,
            "event_id": f"ev-{i}", "event_time": None, "extra": None,
            "last_offset": i, "last_timestamp": 1000 + i, "last_partition": 0,
            "last_topic": "ingest"})
    return sorted(out, key=lambda r: (r["tenant"], r["id"]))


def catalog(metric: str = "cosine") -> dict[str, Any]:
    return {"collections": {"docs": {"dimension": DIM, "metric": metric,
                                     "index": {"type": "hnsw", "m": 8, "ef_construct": 64}}},
            "aliases": {"docs-live": "docs"},
            "tenants": {"docs": {"acme": {"tier": "gold"}, "globex": {}}},
            "restored_to": {"target": "now"}}


def qdrant(tmp_path: Path) -> Callable[..., EngineSink]:
    from daemon.restore.sinks.qdrant import QdrantEngine

    return lambda **kw: EngineSink(QdrantEngine(str(tmp_path / "qdrant")), **kw)


def milvus(tmp_path: Path) -> Callable[..., EngineSink]:
    from daemon.restore.sinks.milvus import MilvusEngine

    return lambda **kw: EngineSink(MilvusEngine(str(tmp_path / "milvus.db")), **kw)


@pytest.fixture(params=["qdrant", "milvus"])
def make_sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., EngineSink]]:
    opened: list[EngineSink] = []
    factory = {"qdrant": qdrant, "milvus": milvus}[request.param](tmp_path)

    def make(**kw: Any) -> EngineSink:
        # Embedded engines lock their files: one open client at a time.
        for s in opened:
            s.close()
        opened.clear()
        opened.append(factory(**kw))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


def load(sink: EngineSink, recs: list[dict[str, Any]], metric: str = "cosine") -> str:
    sink.begin()
    sink.write_catalog(catalog(metric))
    state = sink.write_bucket("docs", 0, iter(recs))
    sink.finish()
    digest = StateDigest()
    for r in recs:
        digest.add(r)
    assert state.records == len(recs) and state.digest == digest.hex
    return state.digest


def failed(sink: EngineSink) -> dict[str, str]:
    sink.read_back()
    return {c.name: c.detail for c in sink.probe() if not c.ok}


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_faithful_load_passes_every_check(make_sink: Callable[..., EngineSink],
                                          metric: str) -> None:
    recs = records(120)
    sink = make_sink()
    digest = load(sink, recs, metric)
    held = sink.read_back()
    assert held["docs"].records == 120 and held["docs"].digest == digest
    assert held["docs"].tenants == {"": 40, "acme": 40, "globex": 40}
    checks = sink.probe()
    names = {c.name for c in checks}
    for want in ("docs: engine count", "docs: engine count per tenant", "docs: kNN nearest first",
                 "docs: kNN recall@10 vs brute force", "docs: vectors as written",
                 "docs: acl kept", "docs: tenant 'acme' search sees no other tenant",
                 "docs: acl 'g:acme' selects its records"):
        assert want in names, (want, names)
    assert any(n.startswith("docs: filter metadata.") for n in names)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_existing_collection_is_refused_unless_replace(make_sink: Callable[..., EngineSink]) -> None:
    load(make_sink(), records(10))
    with pytest.raises(TargetExists, match="docs"):
        make_sink().write_catalog(catalog())
    sink = make_sink(replace=True)
    load(sink, records(6, seed=2))
    assert sink.engine.count("docs") == 6
    # Beside the original: both there, the original untouched.
    beside = make_sink(rename={"docs": "docs_restored"})
    load(beside, records(4, seed=3))
    assert beside.engine.count("docs_restored") == 4 and beside.engine.count("docs") == 6
    assert beside.read_back()["docs"].records == 4
    assert all(c.ok for c in beside.probe())


def test_an_altered_vector_fails_validation_naming_it(make_sink: Callable[..., EngineSink]) -> None:
    recs = records(60)
    sink = make_sink()
    load(sink, recs)
    victim = recs[17]
    key = point_key(victim["tenant"], victim["id"])
    vec = np.frombuffer(victim["vector"], dtype="<f4").copy()
    vec[0] += 0.5
    rewrite(sink, key, vector=vec)
    bad = failed(sink)
    assert "docs: vectors as written" in bad, bad
    assert f"{victim['tenant']}/{victim['id']}" in bad["docs: vectors as written"]
    assert sink.read_back()["docs"].digest != StateDigest().hex


def test_a_tenants_dropped_acl_fails_validation(make_sink: Callable[..., EngineSink]) -> None:
    recs = records(60)
    sink = make_sink()
    load(sink, recs)
    lost = [r for r in recs if r["tenant"] == "acme" and r["acl"]]
    for r in lost:
        rewrite(sink, point_key(r["tenant"], r["id"]), acl=None)
    bad = failed(sink)
    assert "docs: acl kept" in bad and "docs: acl 'g:acme' selects its records" in bad, bad
    assert f"acme/{lost[0]['id']}" in bad["docs: acl kept"]
    assert "missing" in bad["docs: acl 'g:acme' selects its records"]


def test_a_record_moved_to_another_tenant_fails_validation(
        make_sink: Callable[..., EngineSink]) -> None:
    recs = records(60)
    sink = make_sink()
    load(sink, recs)
    victim = next(r for r in recs if r["tenant"] == "globex")
    rewrite(sink, point_key(victim["tenant"], victim["id"]), tenant="acme")
    bad = failed(sink)
    assert "docs: engine count per tenant" in bad, bad
    assert "docs: tenant 'acme' selects its own" in bad
    assert f"globex/{victim['id']}" in bad["docs: tenant 'acme' selects its own"]


def rewrite(sink: EngineSink, key: str, **change: Any) -> None:
    """Corrupt one point in the engine itself, keeping everything else as loaded."""
    found = [(f, v) for k, f, v in sink.engine.scan("docs") if k == key]
    assert found, f"{key} not in the engine"
    fields, vec = found[0]
    vector = np.asarray(change.pop("vector", vec), dtype=np.float32)
    fields.update(change)
    if hasattr(sink.engine, "client") and type(sink.engine).__name__ == "MilvusEngine":
        engine: Any = sink.engine
        engine.client.upsert("docs", engine.rows([key], vector[None], [fields]))  # as stored
    else:
        from qdrant_client import models as m

        sink.engine.client.upsert("docs", points=[m.PointStruct(id=key, vector=vector.tolist(),
                                                                payload=fields)])
