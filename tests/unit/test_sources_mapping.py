"""[kafka.mapping.<topic>]: the user's JSON shape into the contract, by JMESPath."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.changelog.segment import record_datum
from daemon.config import config_from_mapping
from daemon.errors import BadEvent, ConfigError
from daemon.events import EventParser
from daemon.sources import Source, native_topics, sources_for
from daemon.sources.mapping import MAPPING_FAILED

RAW = {"op": "action", "op_map": {"index": "upsert", "remove": "delete"},
       "collection": "index_name", "tenant": "customer", "id": "doc_id", "vector": "embedding",
       "document": "text", "metadata": "attrs", "acl": "readers"}


def source(table: dict[str, Any], fmt: str = "json") -> Source:
    cfg = config_from_mapping({
        "kafka": {"bootstrap_servers": "x:9092", "topics": ["raw"], "format": fmt,
                  "mapping": {"raw": table}},
        "storage": {"url": "file:///tmp/x"}}, environ={})
    return sources_for(cfg.kafka)["raw"]


def parse(src: Source, event: Any) -> dict[str, Any] | None:
    return EventParser(1 << 20).parse_from(src, orjson.dumps(event), key=b"k", offset=7,
                                           timestamp=1234)


def test_the_issue_example_maps_to_the_contract() -> None:
    ev = {"action": "index", "index_name": "docs", "customer": "acme", "doc_id": 17,
          "embedding": [0.5, 1.0, 2.0], "text": "hello", "attrs": {"lang": "en"},
          "readers": ["alice", "group:eng"], "pipeline": "v2"}
    rec = parse(source(RAW), ev)
    assert rec is not None
    assert (rec["op"], rec["collection"], rec["tenant"], rec["id"]) == ("upsert", "docs",
                                                                        "acme", "17")
    assert np.frombuffer(rec["vector"], "<f4").tolist() == [0.5, 1.0, 2.0]
    assert rec["document"] == "hello" and rec["acl"] == ["alice", "group:eng"]
    assert orjson.loads(rec["metadata"]) == {"lang": "en"}
    assert orjson.loads(rec["extra"]) == {"pipeline": "v2"}  # nothing the producer sent is lost
    assert (rec["offset"], rec["timestamp"], rec["key"]) == (7, 1234, b"k")
    gone = parse(source(RAW), {"action": "remove", "index_name": "docs", "doc_id": "17",
                               "customer": "acme"})
    assert gone is not None and (gone["op"], gone["id"], gone["vector"]) == ("delete", "17", None)


def test_mapped_record_equals_the_native_one() -> None:
    native = {"op": "upsert", "collection": "docs", "tenant": "acme", "id": "d1",
              "vector": [0.25, -1.5], "document": "x", "metadata": {"a": 1}, "acl": ["u"]}
    user = {"action": "index", "index_name": "docs", "customer": "acme", "doc_id": "d1",
            "embedding": [0.25, -1.5], "text": "x", "attrs": {"a": 1}, "readers": ["u"]}
    want = EventParser(1 << 20).parse(orjson.dumps(native), "json", key=b"k", offset=7,
                                      timestamp=1234)
    got = parse(source(RAW), user)
    assert got is not None and record_datum(got) == record_datum(want)


@settings(max_examples=60, deadline=None)
@given(doc_id=st.one_of(st.text(min_size=1, max_size=20), st.integers(0, 2**62)),
       vector=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=16),
       tenant=st.one_of(st.none(), st.text(max_size=8)),
       form=st.sampled_from(["list", "pgvector", "base64"]))
def test_any_id_vector_and_tenant_form_maps_like_the_contract(
        doc_id: str | int, vector: list[float], tenant: str | None, form: str) -> None:
    f32 = np.asarray(vector, "<f4")
    shown: Any = {"list": f32.tolist(), "base64": base64.b64encode(f32.tobytes()).decode(),
                  "pgvector": "[" + ",".join(repr(float(x)) for x in f32) + "]"}[form]
    rec = parse(source({"id": "d.id", "vector": "d.v", "tenant": "t",
                        "collection_name": "docs"}), {"d": {"id": doc_id, "v": shown},
                                                      "t": tenant})
    assert rec is not None and rec["id"] == str(doc_id) and rec["tenant"] == (tenant or "")
    assert rec["vector"] == f32.tobytes()


def test_expressions_beyond_paths_constants_and_metadata_fields() -> None:
    table = {"id": "join('-', [kind, to_string(num)])", "collection": "'docs'",
             "vector": "vec[0]", "metadata_fields": ["lang", "score"], "acl": "acl.readers",
             "event_time": "ts", "embedding_model": "model", "keep_unmapped": False}
    rec = parse(source(table), {"kind": "faq", "num": 3, "vec": [[1, 2]], "lang": "de",
                                "score": 0.5, "acl": {"readers": ["a"]}, "ts": 1_700_000_000_000,
                                "model": "e5-large", "noise": 1})
    assert rec is not None and rec["id"] == "faq-3" and rec["collection"] == "docs"
    assert orjson.loads(rec["metadata"]) == {"lang": "de", "score": 0.5}
    assert rec["event_time"] == "2023-11-14T22:13:20.000+00:00"
    assert rec["embedding_model"] == {"name": "e5-large", "version": None}
    assert rec["extra"] is None


@pytest.mark.parametrize("event, reason, words", [
    ({"action": "reindex", "index_name": "d", "doc_id": "1"}, "unknown_op", "op_map"),
    ({"action": "index", "doc_id": "1"}, "missing_field", "index_name"),
    ({"action": "index", "index_name": "d"}, "missing_field", "doc_id"),
    ({"action": "index", "index_name": "d", "doc_id": [1]}, "bad_field", "doc_id"),
    ({"action": "index", "index_name": "d", "doc_id": "1", "embedding": "[1,x]"},
     "bad_vector", "pgvector"),
    ({"action": "index", "index_name": "d", "doc_id": "1", "embedding": [1, None]},
     "bad_vector", "vector"),
    ({"action": "index", "index_name": "d", "doc_id": "1", "attrs": [1]}, "bad_field", "attrs"),
    ({"action": "index", "index_name": "d", "doc_id": "1", "readers": "alice"}, "bad_field",
     "readers"),
])
def test_a_failed_mapping_names_the_expression(event: dict[str, Any], reason: str,
                                               words: str) -> None:
    with pytest.raises(BadEvent) as info:
        parse(source(RAW), event)
    assert info.value.reason == reason and words in info.value.detail


def test_an_expression_error_and_a_non_object() -> None:
    with pytest.raises(BadEvent) as info:
        parse(source({"id": "to_number(a) | abs(@)", "collection_name": "c"}), {"a": "x"})
    assert info.value.reason == MAPPING_FAILED and "to_number(a) | abs(@)" in info.value.detail
    with pytest.raises(BadEvent) as info:
        parse(source({"id": "a", "collection_name": "c"}), [1, 2])
    assert info.value.reason == MAPPING_FAILED
    with pytest.raises(BadEvent) as info:
        EventParser(1 << 20).parse_from(source({"id": "a", "collection_name": "c"}), b"{not",
                                        key=None, offset=0, timestamp=0)
    assert info.value.reason == "unparseable"


@pytest.mark.parametrize("table, words", [
    ({"id": "a"}, "no collection"),
    ({"collection_name": "c"}, "no id expression"),
    ({"id": "a[", "collection_name": "c"}, "not a JMESPath expression"),
    ({"id": "a", "collection_name": "c", "vectr": "v"}, "unknown mapping setting 'vectr'"),
    ({"id": "a", "collection_name": "c", "op_map": {"x": "upsert"}}, "op_map is set but op"),
    ({"id": "a", "collection_name": "c", "op": "o", "op_map": {"x": "insert"}}, "op_map must"),
    ({"id": "a", "collection": "c", "collection_name": "c"}, "both collection"),
    ({"id": 3, "collection_name": "c"}, "id must be a JMESPath expression"),
])
def test_mapping_settings_are_checked_at_start(table: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        source(table)


def test_formats_and_topics_agree() -> None:
    base = {"bootstrap_servers": "x:9092", "topics": ["raw", "native"]}
    with pytest.raises(ConfigError, match="schema_registry_url"):
        config_from_mapping({"kafka": {**base, "format": "avro-registry"},
                             "storage": {"url": "file:///x"}}, environ={})
    with pytest.raises(ConfigError, match="not in topics"):
        config_from_mapping({"kafka": {**base, "mapping": {"other": {"id": "a"}}},
                             "storage": {"url": "file:///x"}}, environ={})
    with pytest.raises(ConfigError, match="Debezium tables are set under"):
        config_from_mapping({"kafka": {**base, "formats": {"raw": "debezium"},
                                       "mapping": {"raw": {"id": "a", "collection_name": "c"}}},
                             "storage": {"url": "file:///x"}}, environ={})
    cfg = config_from_mapping({"kafka": {**base, "mapping": {"raw": {"id": "a",
                                                                     "collection_name": "c"}}},
                               "storage": {"url": "file:///x"}}, environ={})
    assert native_topics(cfg.kafka) == {"native": False}  # the mapped topic skips the codec
