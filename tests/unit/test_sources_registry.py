"""The schema registry wire format: framing, writer schemas by id, and the difference between
an unknown id (the event's fault: quarantined) and a registry that does not answer (not the
event's fault: capture holds the partition)."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import httpx
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from daemon.errors import BadEvent
from daemon.events import EventParser
from daemon.sources import MappedSource
from daemon.sources.mapping import RecordMapping
from daemon.sources.registry import (
    UNKNOWN_SCHEMA,
    RegistryUnavailable,
    SchemaCache,
    decode_framed,
    split_frame,
)

USER_SCHEMA = {"type": "record", "name": "Doc", "fields": [
    {"name": "doc_id", "type": "string"}, {"name": "customer", "type": "string"},
    {"name": "embedding", "type": {"type": "array", "items": "float"}},
    {"name": "text", "type": ["null", "string"], "default": None}]}


class FakeRegistry:
    """A registry client: ``schemas`` by id; ``down`` raises what httpx raises."""

    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self.schemas = schemas
        self.down = False
        self.calls = 0

    def get_schema(self, schema_id: int) -> Schema:
        self.calls += 1
        if self.down:
            raise httpx.ConnectError("connection refused")
        if schema_id == 404:  # a wrong URL: a bare 404, not the registry's "unknown id"
            raise SchemaRegistryError(404, -1, "Not Found")
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return Schema(json.dumps(self.schemas[schema_id]), "AVRO")


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + buf.getvalue()


DOC = {"doc_id": "d1", "customer": "acme", "embedding": [1.0, 2.0], "text": "hi"}


def test_framing_and_decoding_by_id() -> None:
    value = framed(42, USER_SCHEMA, DOC)
    schema_id, body = split_frame(value)
    assert schema_id == 42 and bytes(body) == value[5:]
    client = FakeRegistry({42: USER_SCHEMA})
    cache = SchemaCache("http://registry", client=client)
    for _ in range(3):
        record, raw = decode_framed(value, cache)
        assert record == DOC and raw == USER_SCHEMA
    assert client.calls == 1  # an id names one schema forever: fetched once


@pytest.mark.parametrize("value", [b"", b"\x00\x00", b'{"doc_id": "d1"}', b"\x01\x00\x00\x00\x01x"])
def test_a_value_without_the_magic_byte_is_a_bad_event(value: bytes) -> None:
    with pytest.raises(BadEvent, match="magic byte") as info:
        split_frame(value)
    assert info.value.reason == "unparseable"


def test_unknown_id_is_quarantined_and_not_asked_again_at_once() -> None:
    client = FakeRegistry({})
    cache = SchemaCache("http://registry", client=client)
    for _ in range(50):  # a flood of one bad id: one request
        with pytest.raises(BadEvent) as info:
            decode_framed(framed(7, USER_SCHEMA, DOC), cache)
        assert info.value.reason == UNKNOWN_SCHEMA and "schema id 7" in info.value.detail
    assert client.calls == 1


def test_a_registry_that_does_not_answer_is_not_the_events_fault() -> None:
    client = FakeRegistry({42: USER_SCHEMA})
    client.down = True
    cache = SchemaCache("http://registry", client=client)
    with pytest.raises(RegistryUnavailable, match="did not answer"):
        decode_framed(framed(42, USER_SCHEMA, DOC), cache)
    client.down = False  # once it answers, the same event decodes
    assert decode_framed(framed(42, USER_SCHEMA, DOC), cache)[0] == DOC


def test_a_bare_404_is_a_wrong_url_not_an_unknown_id() -> None:
    cache = SchemaCache("http://registry/wrong", client=FakeRegistry({404: USER_SCHEMA}))
    with pytest.raises(RegistryUnavailable, match="answered 404"):
        decode_framed(framed(404, USER_SCHEMA, DOC), cache)


def test_bytes_of_another_schema_and_trailing_bytes() -> None:
    cache = SchemaCache("http://r", client=FakeRegistry({1: USER_SCHEMA, 2: {"type": "int"}}))
    with pytest.raises(BadEvent, match="not Avro of its schema id"):
        decode_framed(b"\x00\x00\x00\x00\x01\xff\xff\xff", cache)
    with pytest.raises(BadEvent, match="bytes after the record"):
        decode_framed(framed(2, {"type": "int"}, 5) + b"xx", cache)  # type: ignore[arg-type]


def test_a_mapped_registry_record_is_a_record() -> None:
    mapping = RecordMapping.compile("raw", {"id": "doc_id", "tenant": "customer",
                                            "vector": "embedding", "document": "text",
                                            "collection_name": "docs"}, "[m]")
    src = MappedSource(mapping, SchemaCache("http://r", client=FakeRegistry({42: USER_SCHEMA})))
    rec = EventParser(1 << 20).parse_from(src, framed(42, USER_SCHEMA, DOC), key=None,
                                          offset=0, timestamp=0)
    assert rec is not None and (rec["id"], rec["tenant"], rec["dimension"]) == ("d1", "acme", 2)


def test_avro_values_json_cannot_hold_are_kept_not_a_crash() -> None:
    schema = {"type": "record", "name": "Priced", "fields": [
        {"name": "doc_id", "type": "string"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 6,
                                   "scale": 2}},
        {"name": "blob", "type": "bytes"}, {"name": "embedding", "type":
                                            {"type": "array", "items": "double"}}]}
    mapping = RecordMapping.compile("raw", {"id": "doc_id", "vector": "embedding",
                                            "metadata_fields": ["price"],
                                            "collection_name": "docs"}, "[m]")
    src = MappedSource(mapping, SchemaCache("http://r", client=FakeRegistry({5: schema})))
    from decimal import Decimal
    value = framed(5, schema, {"doc_id": "p1", "price": Decimal("12.50"), "blob": b"\x01\x02",
                               "embedding": [1.0, 2.0]})
    rec = EventParser(1 << 20).parse_from(src, value, key=None, offset=0, timestamp=0)
    assert rec is not None
    assert json.loads(rec["metadata"]) == {"price": 12.5}
    assert json.loads(rec["extra"]) == {"blob": "AQI="}  # bytes as base64


def test_a_source_that_fails_unexpectedly_rejects_the_event() -> None:
    class Broken:
        name = "broken"

        def decode(self, key: bytes | None, value: bytes | None) -> Any:
            raise RecursionError("deep")

    with pytest.raises(BadEvent, match="could not be read as broken: RecursionError"):
        EventParser(1 << 20).parse_from(Broken(), b"x", key=None, offset=0, timestamp=0)
