"""The chroma: sink against Chroma's embedded persistent mode (chroma:PATH, the real engine in
the process): every check passes on a faithful load under each metric; the record survives
Chroma's flat metadata exactly (acl absent, empty or a list; nested, null, mixed and large
metadata values; the model) and a changed plain value shows; index types Chroma lacks are
mapped with a note; names Chroma refuses are refused with the fix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.restore.sinks.chroma import ChromaEngine, from_metadata, to_metadata
from daemon.restore.sinks.engine import EngineRefused, EngineSink, from_payload, to_payload
from tests.component.test_engine_sinks import catalog, load, records


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ChromaEngine]:
    e = ChromaEngine(str(tmp_path / "chroma"))
    yield e
    e.close()


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_faithful_load_passes_every_check(engine: ChromaEngine, metric: str) -> None:
    recs = records(120)
    sink = EngineSink(engine)
    digest = load(sink, recs, metric)
    held = sink.read_back()
    assert held["docs"].records == 120 and held["docs"].digest == digest
    assert held["docs"].tenants == {"": 40, "acme": 40, "globex": 40}
    checks = sink.probe()
    names = {c.name for c in checks}
    for want in ("docs: engine count per tenant", "docs: kNN recall@10 vs brute force",
                 "docs: vectors as written", "docs: acl kept",
                 "docs: tenant 'acme' search sees no other tenant",
                 "docs: acl 'g:acme' selects its records"):
        assert want in names, (want, names)
    assert any(n.startswith("docs: filter metadata.") for n in names)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    space = engine.client.get_collection("docs", embedding_function=None).configuration
    assert space["hnsw"]["space"] == {"cosine": "cosine", "dot": "ip", "l2": "l2"}[metric]
    assert space["hnsw"]["max_neighbors"] == 8 and space["hnsw"]["ef_construction"] == 64
    assert "alias docs-live -> docs not created: Chroma has no aliases" in sink.notes


def _record(acl: Any, metadata: Any, model: Any) -> dict[str, Any]:
    rec = records(1)[0]
    rec.update(acl=acl, metadata=None if metadata is None else orjson.dumps(metadata).decode(),
               embedding_model=model)
    return rec


@pytest.mark.parametrize("acl", [None, [], ["g:a"], ["g:a", "u:b"]])
@pytest.mark.parametrize("metadata", [
    None, {"lang": "en", "n": 3, "f": 0.25, "ok": True},
    {"nested": {"a": [1, {"b": None}]}, "none": None, "mixed": [1, "x"], "empty": [],
     "big": 2**64 - 1, "tags": ["a", "b"], "neg": -(2**63)},
])
def test_record_survives_chromas_flat_metadata(acl: Any, metadata: Any) -> None:
    rec = _record(acl, metadata, {"name": "e5", "version": None})
    payload = to_payload(rec)
    meta = to_metadata(payload)
    assert all(isinstance(v, str | int | float | bool | list) for v in meta.values()), meta
    assert all(v for v in meta.values() if isinstance(v, list)), "Chroma refuses empty lists"
    back = from_payload("docs", from_metadata(meta, payload["document"]))
    for name in ("id", "tenant", "document", "metadata", "acl", "embedding_model", "source",
                 "event_id", "last_offset", "last_timestamp"):
        assert back[name] == rec[name], (name, back[name], rec[name])


def test_a_changed_plain_value_shows() -> None:
    rec = _record(["g:a"], {"lang": "en", "deep": {"x": 1}}, {"name": "e5", "version": "2"})
    meta = to_metadata(to_payload(rec))
    assert meta["metadata.lang"] == "en" and "metadata.deep" not in meta
    assert meta["embedding_model.name"] == "e5" and meta["acl"] == ["g:a"]
    changed = {**meta, "metadata.lang": "de", "embedding_model.version": "3"}
    del changed["acl"]
    back = from_payload("docs", from_metadata(changed, None))
    assert orjson.loads(back["metadata"]) == {"lang": "de", "deep": {"x": 1}}
    assert back["embedding_model"] == {"name": "e5", "version": "3"}
    assert back["acl"] is None
    gone = {k: v for k, v in meta.items() if k != "metadata.lang"}
    assert orjson.loads(from_payload("docs", from_metadata(gone, None))["metadata"]) == {
        "deep": {"x": 1}}


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "diskann"])
def test_an_index_chroma_lacks_is_mapped_with_a_note(engine: ChromaEngine, kind: str) -> None:
    sink = EngineSink(engine)
    cat = catalog("dot")
    cat["collections"]["docs"]["index"] = {"type": kind, "nlist": 4}
    sink.write_catalog(cat)
    sink.write_bucket("docs", 0, iter(records(30)))
    sink.finish()
    assert any(f"index {kind!r} has no equivalent in Chroma; created as Chroma's HNSW "
               "(space ip" in n for n in sink.notes), sink.notes
    sink.read_back()
    assert all(c.ok for c in sink.probe())


@pytest.mark.parametrize("name", ["ab", "-docs", "my docs", "a..b"])
def test_a_name_chroma_refuses_is_refused_with_the_fix(engine: ChromaEngine, name: str) -> None:
    sink = EngineSink(engine, rename={"docs": name})
    with pytest.raises(EngineRefused, match="not a Chroma collection name") as err:
        sink.write_catalog(catalog())
    assert "--rename" in (err.value.hint or "")
    assert engine.client.list_collections() == []


def test_edge_values_come_back_from_chroma_as_written(engine: ChromaEngine) -> None:
    recs = records(9)
    edge = [{"f": 0.1, "neg": -(2**63), "top": 2**63 - 1, "tags": ["a", "b"], "fs": [0.5, 1e-9],
             "flags": [True, False], "deep": {"a": [1, None]}, "none": None, "empty": []},
            {"big": 2**64 - 1, "mixed": [1, "x"], "unicode": "é\u2603", "": "blank key"}]
    for i, rec in enumerate(recs):
        rec["metadata"] = orjson.dumps(edge[i % 2]).decode()
        rec["acl"] = [None, [], ["g:x"]][i % 3]
    sink = EngineSink(engine)
    digest = load(sink, recs)
    assert sink.read_back()["docs"].digest == digest
