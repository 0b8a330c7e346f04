"""A registry record's Avro logical types (timestamp-millis, decimal, date, uuid), which fastavro
decodes to Python objects, reach the mapping and the record as JSON holds them: before, a
timestamp-millis event time was rejected as "not a time", and a decimal anywhere in the
metadata or in the unmapped fields raised TypeError out of the parser (capture stopped on
it, and again on the same event after a restart)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

from daemon.events import EventParser
from daemon.sources import MappedSource, RegistryContractSource
from daemon.sources.mapping import RecordMapping
from daemon.sources.registry import SchemaCache
from tests.unit.test_sources_registry import FakeRegistry, framed

SCHEMA: dict[str, Any] = {"type": "record", "name": "Priced", "fields": [
    {"name": "doc_id", "type": "string"},
    {"name": "embedding", "type": {"type": "array", "items": "float"}},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 8,
                               "scale": 2}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "seen", "type": {"type": "long", "logicalType": "timestamp-micros"}},
]}
REF = uuid.UUID("12345678-1234-5678-1234-567812345678")
RECORD = {"doc_id": "a", "embedding": [1.0, 2.0],
          "ts": dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC),
          "price": Decimal("12.50"), "day": dt.date(2026, 1, 2), "ref": REF,
          "seen": dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)}


def parse(table: dict[str, Any]) -> dict[str, Any]:
    mapping = RecordMapping.compile("t", {"id": "doc_id", "vector": "embedding",
                                          "collection_name": "c", **table}, "[m]")
    source = MappedSource(mapping, SchemaCache("http://r", client=FakeRegistry({7: SCHEMA})))
    rec = EventParser(1 << 20).parse_from(source, framed(7, SCHEMA, RECORD), key=None,
                                          offset=0, timestamp=0)
    assert rec is not None
    return rec


def test_a_timestamp_millis_event_time_is_kept() -> None:
    rec = parse({"event_time": "ts"})
    assert rec["event_time"] == "2026-01-02T03:04:05.678+00:00"


def test_logical_values_in_the_unmapped_fields_are_json() -> None:
    rec = parse({"event_time": "ts"})
    assert json.loads(rec["extra"]) == {
        "price": 12.5, "day": "2026-01-02", "ref": str(REF),
        "seen": "2026-01-02T03:04:05.678901+00:00"}


def test_logical_values_in_the_metadata_are_json() -> None:
    rec = parse({"metadata_fields": ["price", "day", "ref"], "keep_unmapped": False})
    assert json.loads(rec["metadata"]) == {"price": 12.5, "day": "2026-01-02", "ref": str(REF)}
    assert rec["extra"] is None


def test_the_contract_over_the_registry_takes_them_too() -> None:
    schema = {"type": "record", "name": "Ev", "fields": [
        {"name": "op", "type": "string"}, {"name": "collection", "type": "string"},
        {"name": "id", "type": "string"},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal",
                                   "precision": 4, "scale": 1}}]}
    source = RegistryContractSource(SchemaCache("http://r", client=FakeRegistry({3: schema})))
    value = framed(3, schema, {"op": "delete", "collection": "c", "id": "x",
                               "price": Decimal("2.5")})
    rec = EventParser(1 << 20).parse_from(source, value, key=None, offset=0, timestamp=0)
    assert rec is not None and json.loads(rec["extra"]) == {"price": 2.5}


def test_history_identifies_a_rejected_record_by_a_uuid_id() -> None:
    mapping = RecordMapping.compile("t", {"id": "ref", "vector": "doc_id",
                                          "collection_name": "c"}, "[m]")
    src = MappedSource(mapping, SchemaCache("http://r", client=FakeRegistry({9: SCHEMA})))
    value = framed(9, SCHEMA, RECORD)  # its "vector" is text: rejected, yet named
    who = src.identify(None, value)
    assert who is not None and who["id"] == str(REF) and who["collection"] == "c"
