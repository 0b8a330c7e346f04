"""The C record codec against its references: encode_record equals fastavro byte for byte,
loads equals orjson.loads (with the vectors at the given paths as the contract's float32
bytes) or refuses; a refusal sends the caller to the reference, so it is never wrong."""

from __future__ import annotations

import io
import math
import struct
from typing import Any

import fastavro
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.changelog.segment import RECORD_SCHEMA, record_datum
from daemon.errors import BadEvent
from daemon.native.records import record_codec
from daemon.sources import fastjson

CODEC = record_codec()
pytestmark = pytest.mark.skipif(CODEC is None, reason="the record codec is not built: make setup")

TEXT = st.text(max_size=30)
OPT_TEXT = st.one_of(st.none(), TEXT)
RECORDS = st.fixed_dictionaries({
    "offset": st.integers(0, 2**63 - 1), "timestamp": st.integers(-2**63, 2**63 - 1),
    "key": st.one_of(st.none(), st.binary(max_size=20)), "op": st.sampled_from(
        ["upsert", "delete", "collection.put", "tenant.drop"]),
    "collection": TEXT, "tenant": TEXT, "id": OPT_TEXT,
    "dimension": st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)),
    "vector": st.one_of(st.none(), st.binary(max_size=64)),
    "sparse_indices": st.one_of(st.none(), st.binary(max_size=16)),
    "sparse_values": st.one_of(st.none(), st.binary(max_size=16)),
    "document": OPT_TEXT, "document_is_json": st.booleans(), "metadata": OPT_TEXT,
    "acl": st.one_of(st.none(), st.lists(TEXT, max_size=4)),
    "embedding_model": st.one_of(st.none(), st.fixed_dictionaries(
        {"name": TEXT, "version": OPT_TEXT})),
    "source": OPT_TEXT, "alias": OPT_TEXT, "schema": OPT_TEXT, "settings": OPT_TEXT,
    "event_id": OPT_TEXT, "event_time": OPT_TEXT, "extra": OPT_TEXT,
    "producer_timestamp": st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)),
    "headers": st.one_of(st.none(), st.lists(st.fixed_dictionaries(
        {"key": TEXT, "value": st.one_of(st.none(), st.binary(max_size=40))}), max_size=5)),
    "headers_truncated": st.booleans(),
})


def fastavro_datum(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, RECORD_SCHEMA, record)
    return buf.getvalue()


@settings(max_examples=400, deadline=None)
@given(RECORDS)
def test_encode_record_is_fastavro_byte_for_byte(record: dict[str, Any]) -> None:
    assert CODEC is not None
    assert CODEC.encode_record(record) == fastavro_datum(record)


@pytest.mark.parametrize("change", [
    {"offset": 1.5}, {"offset": True}, {"tenant": None}, {"dimension": 2**31},
    {"acl": ("a",)}, {"acl": ["a", 1]}, {"embedding_model": {"name": 1}},
    {"document_is_json": 1}, {"key": "text"}, {"id": "\ud800"},
    {"headers": ({"key": "a", "value": None},)}, {"headers": [{"key": 1, "value": None}]},
    {"headers": [{"key": "a", "value": "text"}]}, {"headers": [("a", b"v")]},
    {"headers_truncated": 1},
])
def test_what_the_writer_does_not_take_goes_to_fastavro(change: dict[str, Any]) -> None:
    assert CODEC is not None
    record = {f["name"]: None for f in RECORD_SCHEMA["fields"]}
    record.update({"offset": 1, "timestamp": 2, "op": "upsert", "collection": "c",
                   "tenant": "", "document_is_json": False, **change})
    with pytest.raises((TypeError, ValueError, OverflowError, UnicodeError)):
        CODEC.encode_record(record)
    try:  # record_datum is fastavro's answer, whatever it is
        want: Any = fastavro_datum(record)
    except Exception as exc:
        want = type(exc)
    try:
        got: Any = record_datum(record)
    except Exception as exc:
        got = type(exc)
    assert got == want


def test_headers_fields_left_out_take_their_defaults() -> None:
    """A record without the newest fields (headers, headers_truncated), or a header without
    its value, is written with their defaults, as fastavro writes it."""
    assert CODEC is not None
    record = {f["name"]: None for f in RECORD_SCHEMA["fields"]
              if f["name"] not in ("headers", "headers_truncated")}
    record.update({"offset": 1, "timestamp": 2, "op": "upsert", "collection": "c",
                   "tenant": "", "document_is_json": False})
    assert CODEC.encode_record(record) == fastavro_datum(record)
    assert CODEC.encode_record(record).endswith(b"\x00\x00")
    record["headers"] = [{"key": "batch"}, {"key": "", "value": b""}]
    assert CODEC.encode_record(record) == fastavro_datum(record)


NUMBERS = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans())
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**64, 2**64),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)),
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=15)


def expected(value: bytes, path: tuple[str, ...]) -> Any:
    """orjson's reading, with the array at ``path`` as the contract makes it float32."""
    obj = orjson.loads(value)
    parent = obj
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if isinstance(parent, dict) and isinstance(parent.get(path[-1]), list):
        arr = parent[path[-1]]
        if arr and all(isinstance(x, int | float) and not isinstance(x, bool) for x in arr) \
                and all(abs(float(x)) <= 3.4028234663852886e38 for x in arr):
            parent[path[-1]] = np.asarray(arr, np.float64).astype("<f4").tobytes()
    return obj


@settings(max_examples=400, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["a", "embedding", "after", "x"]), JSON, max_size=4),
       vec=st.lists(NUMBERS, max_size=12), where=st.sampled_from(
           [("embedding",), ("after", "embedding"), ("missing",)]))
def test_loads_is_orjson_with_float32_vectors(doc: dict[str, Any], vec: list[Any],
                                              where: tuple[str, ...]) -> None:
    assert CODEC is not None
    if where == ("after", "embedding"):
        doc["after"] = {"id": 1, "embedding": vec}
    else:
        doc["embedding"] = vec
    try:
        value = orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return  # an integer JSON (and orjson) cannot hold
    try:
        got = CODEC.loads(value, (where,))
    except (ValueError, UnicodeError):
        return  # refused: the caller reads it with orjson
    assert got == expected(value, where)


@pytest.mark.parametrize("text", [
    b'{"v": [1e400]}', b'{"v": [1, 2]} x', b'{"v": "\\ud800"}', b'{"v": [NaN]}',
    b'{"v": [1,]}', b"{'v': 1}", b'{"v": [100000000000000000000000000]}', b'\xff',
    b'{"v": [3.5e38]}', b'{"v": [true, 1]}', b'{"v": []}', b'{"v": [-0.0, 1e-46]}',
    b'{"v": 1, "v": [1.5]}', b'{"a": {"v": [2]}, "a": {"v": [3]}}',
])
def test_odd_texts_are_read_as_orjson_reads_them(text: bytes) -> None:
    try:
        want: Any = expected(text, ("v",))
    except orjson.JSONDecodeError:
        want = BadEvent
    try:
        got: Any = fastjson.loads(text, (("v",), ("a", "v")))
    except BadEvent:
        got = BadEvent
    if isinstance(want, dict) and isinstance(want.get("a"), dict):
        want["a"] = expected(orjson.dumps(want["a"]), ("v",))
    assert got == want


def test_float32_rounding_matches_the_contract() -> None:
    values = [0.1, 1 / 3, 3.4028234663852886e38, -1e-45, 16777217, 2**63 - 1, math.pi]
    got = fastjson.loads(orjson.dumps({"v": values}), (("v",),))["v"]
    assert got == struct.pack("<7f", *values)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["schema", "payload", "x"]), JSON, max_size=3))
def test_raw_paths_give_the_json_text_of_the_value(doc: dict[str, Any]) -> None:
    assert CODEC is not None
    try:
        value = orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return
    try:
        got = CODEC.loads(value, (), (("schema",),))
    except (ValueError, UnicodeError):
        return
    want = orjson.loads(value)
    if "schema" in want:
        assert isinstance(got["schema"], bytes)
        assert orjson.loads(got["schema"]) == want.pop("schema")
        got.pop("schema")
    assert got == want


def test_debezium_records_are_the_same_with_or_without_the_codec(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.unit.test_sources_debezium import ITEMS, messages, parse_all, source

    for name, take in (("schemas_true.jsonl", 4), ("schemas_false.jsonl", 5),
                       ("toast_schemas_false.jsonl", 1)):
        msgs = messages(name)[:take]
        fast = [record_datum(r) for r in parse_all(source(ITEMS), msgs) if r]
        monkeypatch.setattr(fastjson, "_CODEC", None)
        slow = [record_datum(r) for r in parse_all(source(ITEMS), msgs) if r]
        monkeypatch.undo()
        assert fast == slow and fast


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(width=32), max_size=20).map(lambda v: struct.pack(f"<{len(v)}f", *v)))
def test_f32_finite_is_numpys(raw: bytes) -> None:
    assert CODEC is not None
    assert CODEC.f32_finite(raw) == bool(np.isfinite(np.frombuffer(raw, "<f4")).all())
    assert not CODEC.f32_finite(raw + b"\x00")  # not whole float32 values
