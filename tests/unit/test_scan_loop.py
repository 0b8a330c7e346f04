"""The scan loop's generator (``daemon/changelog/scan_loop.py``): constructs today's record
schema does not use are walked as fastavro encodes them, and constructs it cannot walk are
refused when the loop is built, not miswalked."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.changelog.scan_loop import CAPTURES, EMITTED, Damage, SchemaError, build

_REQUIRED = [  # the fields scan_loop's CAPTURES and MARKS name
    {"name": "offset", "type": "long"}, {"name": "timestamp", "type": "long"},
    {"name": "op", "type": "string"}, {"name": "collection", "type": "string"},
    {"name": "tenant", "type": "string"}, {"name": "id", "type": ["null", "string"]},
    {"name": "source", "type": ["string", "null"]}, {"name": "event_id", "type": "null"},
    {"name": "extra", "type": ["null", "string"]},
]
_OTHERS = [
    {"name": "flag", "type": "boolean"},
    {"name": "ratio", "type": ["null", "float"]}, {"name": "weight", "type": "double"},
    {"name": "small", "type": {"type": "int", "logicalType": "date"}},
    {"name": "grid", "type": {"type": "array", "items": {"type": "array", "items": "long"}}},
    {"name": "tags", "type": {"type": "array", "items": ["null", "bytes"]}},
    {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
        {"name": "n", "type": ["null", "long"]}, {"name": "text", "type": "string"}]}},
]
SCHEMA = fastavro.parse_schema({"type": "record", "name": "Variant",
                                "fields": _REQUIRED + _OTHERS})
texts = st.text(max_size=3) | st.text(min_size=60, max_size=200)
longs = st.integers(-(2**63), 2**63 - 1)
records = st.fixed_dictionaries({
    "offset": longs, "timestamp": longs, "op": st.sampled_from(["x", "delete", "x", "x"]),
    "collection": texts, "tenant": texts, "id": st.just("i") | st.none(),
    "source": st.none() | texts, "event_id": st.none(), "extra": st.none() | texts,
    "flag": st.booleans(),
    "ratio": st.none() | st.floats(width=32), "weight": st.floats(),
    "small": st.integers(-(2**31), 2**31 - 1),
    "grid": st.lists(st.lists(longs, max_size=3), max_size=3),
    "tags": st.lists(st.none() | st.binary(max_size=150), max_size=3),
    "inner": st.fixed_dictionaries({"n": st.none() | longs, "text": texts}),
})


@settings(max_examples=80, deadline=None)
@given(recs=st.lists(records, min_size=1, max_size=4))
def test_a_variant_schema_is_walked_as_fastavro_encodes_it(recs: list[dict[str, Any]]) -> None:
    _, scan = build(SCHEMA, "<test variant>")
    ends = []
    out = io.BytesIO()
    for rec in recs:
        fastavro.schemaless_writer(out, SCHEMA, rec)
        ends.append(out.tell())
    data = out.getvalue()
    got: list[tuple[Any, ...]] = []
    try:
        end = scan(data, 0, len(data), len(recs), memoryview(data), got.append, {}, tuple)
    except Damage as exc:
        assert any(r["op"] == "delete" and r["id"] is None for r in recs), exc
        return
    assert end == len(data)
    for rec, row, rec_end in zip(recs, got, ends, strict=True):
        assert dict(zip(CAPTURES, row, strict=False)) == {k: rec[k] for k in CAPTURES}
        assert dict(zip(EMITTED, row, strict=True))["end"] == rec_end


@pytest.mark.parametrize("field", [
    {"name": "m", "type": {"type": "map", "values": "string"}},
    {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
    {"name": "f", "type": {"type": "fixed", "name": "F", "size": 4}},
    {"name": "u", "type": ["null", "string", "long"]},
    {"name": "u", "type": ["string", "long"]},
    {"name": "r", "type": "Inner2"},
])
def test_unsupported_constructs_are_refused(field: dict[str, Any]) -> None:
    inner = {"name": "inner", "type": {"type": "record", "name": "Inner2", "fields": []}}
    schema = fastavro.parse_schema({"type": "record", "name": "V",
                                    "fields": [*_REQUIRED, inner, field]})
    with pytest.raises(SchemaError, match=f"V: .*{field['name']}"):
        build(schema, "<test unsupported>")


def test_a_schema_without_a_declared_field_is_refused() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "V", "fields": _REQUIRED[1:]})
    with pytest.raises(SchemaError, match="no field 'offset'"):
        build(schema, "<test missing>")
