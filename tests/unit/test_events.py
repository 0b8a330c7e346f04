"""The ingestion contract: every field kept, every kind of bad input named."""

from __future__ import annotations

import base64
import io
import math

import fastavro
import numpy as np
import orjson
import pytest

from daemon.errors import BadEvent
from daemon.events import CHANGE_EVENT_SCHEMA, EventParser


def parse(parser: EventParser, event: object, fmt: str = "json") -> dict[str, object]:
    raw = orjson.dumps(event) if fmt == "json" else event
    assert isinstance(raw, bytes)
    return parser.parse(raw, fmt, key=b"k", offset=7, timestamp=1000)


def avro_bytes(event: dict[str, object]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, CHANGE_EVENT_SCHEMA, event)
    return buf.getvalue()


FULL = {
    "op": "upsert", "collection": "docs", "tenant": "acme", "id": "doc-17#3",
    "vector": [0.5, -0.25, 1.0], "document": "text of the chunk",
    "metadata": {"lang": "en", "rank": 3}, "acl": ["g:eng", "u:ann"],
    "embedding_model": {"name": "all-MiniLM-L6-v2", "version": "2"},
    "source": {"uri": "s3://corpus/doc-17.pdf", "chunk": 3, "content_sha256": "ab"},
    "event_id": "6f1c", "event_time": "2026-11-25T14:03:07.120Z",
}


def test_upsert_keeps_every_field() -> None:
    rec = parse(EventParser(1 << 20), {**FULL, "custom": {"x": 1}})
    assert rec["op"] == "upsert" and rec["collection"] == "docs" and rec["tenant"] == "acme"
    assert rec["id"] == "doc-17#3" and rec["offset"] == 7 and rec["timestamp"] == 1000
    assert rec["key"] == b"k"
    assert rec["dimension"] == 3
    assert np.frombuffer(rec["vector"], "<f4").tolist() == [0.5, -0.25, 1.0]  # type: ignore[arg-type]
    assert rec["document"] == "text of the chunk" and rec["document_is_json"] is False
    assert orjson.loads(rec["metadata"]) == {"lang": "en", "rank": 3}  # type: ignore[arg-type]
    assert rec["acl"] == ["g:eng", "u:ann"]
    assert rec["embedding_model"] == {"name": "all-MiniLM-L6-v2", "version": "2"}
    assert orjson.loads(rec["source"]) == FULL["source"]  # type: ignore[arg-type]
    assert rec["event_id"] == "6f1c" and rec["event_time"] == FULL["event_time"]
    assert orjson.loads(rec["extra"]) == {"custom": {"x": 1}}  # type: ignore[arg-type]


def test_base64_vector_equals_list_vector() -> None:
    vec = np.array([0.1, 0.2, 0.3], dtype="<f4")
    p = EventParser(1 << 20)
    a = parse(p, {**FULL, "vector": base64.b64encode(vec.tobytes()).decode()})
    b = parse(p, {**FULL, "vector": vec.tolist()})
    assert a["vector"] == b["vector"] == vec.tobytes()


def test_structured_document_and_empty_acl_are_kept() -> None:
    rec = parse(EventParser(1 << 20), {**FULL, "document": {"title": "t"}, "acl": []})
    assert rec["document_is_json"] is True and orjson.loads(rec["document"]) == {"title": "t"}  # type: ignore[arg-type]
    assert rec["acl"] == []


def test_avro_input_matches_json_input() -> None:
    p = EventParser(1 << 20)
    vec = np.array(FULL["vector"], dtype="<f4").tobytes()
    avro_event = {**FULL, "vector": vec, "metadata": orjson.dumps(FULL["metadata"]).decode(),
                  "sparse": None, "alias": None, "schema": None, "settings": None}
    a = parse(p, avro_bytes(avro_event), "avro")
    j = parse(p, FULL)
    for field in ("op", "collection", "tenant", "id", "vector", "dimension", "document", "acl",
                  "embedding_model", "event_id", "event_time"):
        assert a[field] == j[field], field
    assert orjson.loads(a["metadata"]) == orjson.loads(j["metadata"])  # type: ignore[arg-type]
    assert orjson.loads(a["source"]) == orjson.loads(j["source"])  # type: ignore[arg-type]


def test_collection_put_learns_dimension_and_drop_forgets_it() -> None:
    p = EventParser(1 << 20)
    rec = parse(p, {"op": "collection.put", "collection": "docs",
                    "schema": {"dimension": 3, "metric": "cosine",
                               "index": {"type": "hnsw", "m": 16, "ef_construct": 100}}})
    assert orjson.loads(rec["schema"])["index"]["m"] == 16  # type: ignore[arg-type]
    assert rec["id"] is None and p.dimensions == {"docs": 3}
    # A list's length is checked before its values: wrong_dimension even with junk inside.
    for vector, n in (([1.0, 2.0], 2), ([1.0, "2", None, 4.0], 4),
                      (base64.b64encode(b"\0" * 8).decode(), 2)):
        with pytest.raises(BadEvent) as bad:
            parse(p, {**FULL, "vector": vector})
        assert (bad.value.reason, bad.value.detail) == (
            "wrong_dimension", f"vector has {n} values, collection 'docs' has dimension 3")
    parse(p, {"op": "collection.drop", "collection": "docs"})
    assert parse(p, {**FULL, "vector": [1.0, 2.0]})["dimension"] == 2


def test_unknown_collection_is_captured_with_its_dimension() -> None:
    rec = parse(EventParser(1 << 20), {**FULL, "collection": "new", "vector": [1.0] * 5})
    assert rec["dimension"] == 5


def test_control_ops() -> None:
    p = EventParser(1 << 20)
    assert parse(p, {"op": "alias.put", "collection": "docs", "alias": "live"})["alias"] == "live"
    t = parse(p, {"op": "tenant.put", "collection": "docs", "tenant": "acme",
                  "settings": {"tier": "gold"}})
    assert orjson.loads(t["settings"]) == {"tier": "gold"}  # type: ignore[arg-type]
    assert parse(p, {"op": "delete", "collection": "docs", "tenant": "acme", "id": "x"})["id"] == "x"


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "unparseable"),
    (b"[1,2]", "unparseable"),
    (orjson.dumps({**FULL, "op": "merge"}), "unknown_op"),
    (orjson.dumps({k: v for k, v in FULL.items() if k != "id"}), "missing_field"),
    (orjson.dumps({**FULL, "collection": ""}), "missing_field"),
    (orjson.dumps({**FULL, "vector": [1.0, 1e39, 2.0]}), "non_finite"),
    (orjson.dumps({**FULL, "vector": ["a", "b"]}), "bad_vector"),
    (orjson.dumps({**FULL, "vector": ["1", "1", "1"]}), "bad_vector"),
    (orjson.dumps({**FULL, "vector": [1.0, "2.5", 3.0]}), "bad_vector"),
    (orjson.dumps({**FULL, "vector": [1.0, None, 3.0]}), "bad_vector"),
    (orjson.dumps({**FULL, "vector": [[1.0], [2.0]]}), "bad_vector"),
    (orjson.dumps({**FULL, "sparse": {"indices": ["1"], "values": [0.5]}}), "bad_field"),
    (orjson.dumps({**FULL, "sparse": {"indices": [1], "values": ["0.5"]}}), "bad_vector"),
    (orjson.dumps({**FULL, "vector": "***"}), "bad_vector"),
    (orjson.dumps({**FULL, "metadata": [1]}), "bad_field"),
    (orjson.dumps({**FULL, "acl": "g:eng"}), "bad_field"),
    (orjson.dumps({"op": "collection.put", "collection": "c", "schema": {"dimension": 0}}),
     "bad_field"),
    (orjson.dumps({"op": "tenant.put", "collection": "c"}), "missing_field"),
])
def test_bad_input_is_named(raw: bytes, reason: str) -> None:
    with pytest.raises(BadEvent) as bad:
        EventParser(1 << 20).parse(raw, "json", key=None, offset=0, timestamp=0)
    assert bad.value.reason == reason


def test_nan_in_base64_vector_and_oversize_and_tombstone() -> None:
    p = EventParser(200)
    nan = base64.b64encode(np.array([1.0, math.nan], dtype="<f4").tobytes()).decode()
    with pytest.raises(BadEvent) as bad:
        p.parse(orjson.dumps({"op": "upsert", "collection": "c", "id": "1", "vector": nan}),
                "json", key=None, offset=0, timestamp=0)
    assert bad.value.reason == "non_finite"
    with pytest.raises(BadEvent) as bad:
        p.parse(b"x" * 201, "json", key=None, offset=0, timestamp=0)
    assert bad.value.reason == "oversize"
    with pytest.raises(BadEvent) as bad:
        p.parse(None, "json", key=None, offset=0, timestamp=0)
    assert bad.value.reason == "unparseable"


def test_garbage_avro_is_unparseable() -> None:
    with pytest.raises(BadEvent) as bad:
        EventParser(1 << 20).parse(b"\xff\xff\xff\xff\xff", "avro", key=None, offset=0, timestamp=0)
    assert bad.value.reason == "unparseable"
