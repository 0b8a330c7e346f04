"""Floods of odd input: whatever JSON a topic carries, a mapped or Debezium source gives a
record the change log can encode, or a BadEvent naming the reason; never another error."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.changelog.segment import record_datum
from daemon.config import config_from_mapping
from daemon.errors import BadEvent
from daemon.events import EventParser
from daemon.sources import sources_for
from tests.unit.test_sources_debezium import messages

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=5), st.dictionaries(st.text(max_size=8), kids, max_size=5)),
    max_leaves=20)
FIELDS = ["op", "action", "index_name", "doc_id", "embedding", "customer", "text", "attrs",
          "readers", "ts", "model", "id", "tenant", "doc", "tags", "meta"]

CONFIG = config_from_mapping({
    "kafka": {"bootstrap_servers": "x:9092", "topics": ["raw", "cdc"],
              "formats": {"cdc": "debezium"},
              "debezium": {"items": {"tenant": "tenant", "document": "doc", "acl": "tags",
                                     "embedding_model": "model"}},
              "mapping": {"raw": {"op": "action", "op_map": {"index": "upsert", "remove":
                                                             "delete"},
                                  "collection": "index_name", "id": "doc_id",
                                  "vector": "embedding", "tenant": "customer",
                                  "document": "text", "metadata": "attrs", "acl": "readers",
                                  "event_time": "ts", "embedding_model": "model"}}},
    "storage": {"url": "file:///x"}}, environ={})
SOURCES = sources_for(CONFIG.kafka)
BASE = orjson.loads(messages("schemas_false.jsonl")[2][1] or b"{}")


def check(topic: str, key: bytes | None, value: bytes | None) -> None:
    try:
        rec = EventParser(1 << 20).parse_from(SOURCES[topic], value, key=key, offset=1,
                                              timestamp=2)
    except BadEvent as bad:
        assert bad.reason and bad.detail
        assert "could not be read as" not in bad.detail, bad.detail  # a foreseen check
        return
    if rec is not None:
        record_datum(rec)  # the change log can hold it


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=10))
def test_any_json_event_through_a_mapping(event: dict[str, Any]) -> None:
    check("raw", b"k", orjson.dumps(event))


@settings(max_examples=300, deadline=None)
@given(after=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8),
       op=st.sampled_from(["c", "r", "u", "d", "t", "x", None]),
       key=st.one_of(st.none(), st.dictionaries(st.sampled_from(["id", "tenant"]), JSON,
                                                max_size=2)))
def test_any_debezium_envelope(after: dict[str, Any], op: str | None,
                               key: dict[str, Any] | None) -> None:
    env = {**BASE, "op": op, "after": after, "before": after if op in ("d", "u") else None}
    check("cdc", None if key is None else orjson.dumps(key), orjson.dumps(env))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes(value: bytes) -> None:
    check("raw", None, value)
    check("cdc", value, value)
