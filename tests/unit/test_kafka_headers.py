"""Kafka headers as the change log keeps them: bounded (count, bytes), in order, never refused;
and their encoding, appended to a datum, equal to fastavro's of the whole record."""

from __future__ import annotations

import io
from typing import Any

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.changelog.segment import RECORD_SCHEMA
from daemon.kafka_headers import MAX_HEADER_BYTES, MAX_HEADERS, NO_HEADERS_TAIL, bound, encode_tail


def test_no_headers_is_null_and_not_truncated() -> None:
    assert bound(None) == (None, False)
    assert bound([]) == ([], False)


def test_order_and_duplicate_keys_are_kept() -> None:
    raw = [("batch", b"b-1"), ("trace", None), ("batch", b"b-2"), ("", b"")]
    assert bound(raw) == ([{"key": "batch", "value": b"b-1"}, {"key": "trace", "value": None},
                           {"key": "batch", "value": b"b-2"}, {"key": "", "value": b""}], False)


def test_at_most_max_headers_are_kept() -> None:
    raw = [(f"h{i}", b"v") for i in range(MAX_HEADERS + 3)]
    kept, truncated = bound(raw)
    assert kept is not None and truncated
    assert [h["key"] for h in kept] == [f"h{i}" for i in range(MAX_HEADERS)]
    assert bound(raw[:MAX_HEADERS]) == (kept, False)


def test_bytes_bound_keeps_whole_headers_that_fit() -> None:
    """Keys' UTF-8 plus values, at most MAX_HEADER_BYTES: exactly that fits; a value that does
    not fit whole is dropped with its key (never cut), and later headers that fit are kept."""
    exact = [("k", b"x" * (MAX_HEADER_BYTES - 1))]
    assert bound(exact) == ([{"key": "k", "value": exact[0][1]}], False)
    raw = [("é", b"a" * 4000), ("big", b"b" * 200), ("small", b"c" * 10), ("n", None)]
    kept, truncated = bound(raw)
    assert truncated
    assert kept == [{"key": "é", "value": b"a" * 4000}, {"key": "small", "value": b"c" * 10},
                    {"key": "n", "value": None}]
    assert sum(len(h["key"].encode()) + len(h["value"] or b"") for h in kept) <= MAX_HEADER_BYTES
    assert bound([("k", b"v" * MAX_HEADER_BYTES)]) == ([], True), "none fits: empty, flagged"


def test_a_key_that_is_not_utf8_is_kept_replaced() -> None:
    kept, truncated = bound([(b"ba\xfftch", b"v"), ("ok", "text")])
    assert kept == [{"key": "ba\ufffdtch", "value": b"v"}, {"key": "ok", "value": b"text"}]
    assert not truncated


def datum(headers: list[dict[str, Any]] | None, truncated: bool) -> bytes:
    rec: dict[str, Any] = {f["name"]: None for f in RECORD_SCHEMA["fields"]}
    rec.update(offset=3, timestamp=4, op="delete", collection="c", tenant="t", id="x",
               document_is_json=False, headers=headers, headers_truncated=truncated)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, RECORD_SCHEMA, rec)
    return buf.getvalue()


RAW = st.none() | st.lists(st.tuples(
    st.text(max_size=12) | st.binary(max_size=12),
    st.none() | st.binary(max_size=300) | st.binary(min_size=1000, max_size=2500)), max_size=20)


@settings(max_examples=150, deadline=None)
@given(RAW)
def test_encode_tail_ends_the_record_as_fastavro_writes_it(raw: Any) -> None:
    """The record is its encoding without headers followed by the tail (the two fields are
    the last), byte for byte what fastavro writes for the bounded headers."""
    kept, truncated = bound(raw)
    want = datum(kept, truncated)
    assert datum(None, False)[:-len(NO_HEADERS_TAIL)] + encode_tail(raw) == want
