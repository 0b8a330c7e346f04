"""Scanned segments: the spliced snapshot row of every upsert and delete equals what the
decode + ``record_from_event`` + ``Row.of`` path encodes, byte for byte; catalog events
decode as fastavro decodes them; damage raises IntegrityError."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.changelog.keys import SegmentKey
from daemon.changelog.scan import DecodedEvent, ScannedEvent, scan_segment
from daemon.changelog.segment import RECORD_SCHEMA, encode_segment, read_records
from daemon.errors import IntegrityError
from daemon.rows import Row, record_from_event

CODECS = ["null", "deflate", "zstandard"]
TOPIC, PARTITION = "ingest.v1", 7
KEY = SegmentKey(TOPIC, PARTITION, 0, 1)

longs = st.integers(-(2**63), 2**63 - 1)
# Short and long (a length of two or three varint bytes), ASCII and not, empty.
texts = st.text(max_size=6) | st.text(min_size=60, max_size=300) | \
    st.text(alphabet="aé€𝄞", min_size=0, max_size=40)
names = st.sampled_from(["docs", "", "ü-coll"]) | texts
maybe = st.none().__or__


def change(op: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({
        "op": st.just(op), "key": maybe(st.binary(max_size=70)),
        "collection": names, "tenant": names,
        "id": texts if op in ("upsert", "delete") else maybe(texts),
        "dimension": maybe(st.integers(-(2**31), 2**31 - 1)),
        "vector": maybe(st.binary(max_size=40) | st.binary(min_size=3000, max_size=9000)),
        "sparse_indices": maybe(st.binary(max_size=80)),
        "sparse_values": maybe(st.binary(max_size=80)),
        "document": maybe(texts), "document_is_json": st.booleans(),
        "metadata": maybe(texts), "acl": maybe(st.lists(texts, max_size=4)),
        "embedding_model": maybe(st.fixed_dictionaries(
            {"name": texts, "version": maybe(texts)})),
        "source": maybe(texts), "alias": maybe(texts), "schema": maybe(texts),
        "settings": maybe(texts), "event_id": maybe(texts), "event_time": maybe(texts),
        "extra": maybe(texts),
        "producer_timestamp": maybe(st.integers(-(2**63), 2**63 - 1)),
        "headers": maybe(st.lists(st.fixed_dictionaries(
            {"key": texts, "value": maybe(st.binary(max_size=300))}), max_size=3)),
        "headers_truncated": st.booleans()})


ops = st.sampled_from(["upsert", "upsert", "delete", "collection.put", "alias.put",
                       "tenant.put", "collection.drop", "alias.drop", "tenant.drop"])
events = ops.flatmap(change)


@st.composite
def segments(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Records with offsets and timestamps near each other (what a segment holds: the
    scanner caches varint tails) or anywhere in the long range."""
    recs = draw(st.lists(events, max_size=25))
    near = draw(st.booleans())
    base_offset, base_ts = draw(longs), draw(longs)
    for i, rec in enumerate(recs):
        if near:
            rec["offset"] = min(2**63 - 1, abs(base_offset) + i)
            rec["timestamp"] = min(2**63 - 1, abs(base_ts) + draw(st.integers(0, 300)))
        else:
            rec["offset"], rec["timestamp"] = draw(longs), draw(longs)
    return recs


def spliced_equals_encoded(data: bytes, key: SegmentKey = KEY) -> int:
    scanned = scan_segment(key, data)
    decoded = read_records(key, data)
    assert len(scanned) == len(decoded)
    for ev, d in zip(scanned, decoded, strict=True):
        assert isinstance(ev, ScannedEvent)
        assert (ev.offset, ev.timestamp, ev.op, ev.collection, ev.tenant, ev.id) == \
            (d["offset"], d["timestamp"], d["op"], d["collection"], d["tenant"], d["id"])
        assert ev.event() == d
        if d["op"] in ("upsert", "delete"):
            got = ev.row(key.topic, key.partition)
            rec = record_from_event(d, key.topic, key.partition)
            want = Row.of(rec)
            assert isinstance(got.raw, bytes) and got.rec is None
            assert (got.raw, got.content_len, got.hash, got.key, got.version, got.deleted) == \
                (want.raw, want.content_len, want.hash, want.key, want.version, want.deleted)
            rec.pop("deleted", None)
            assert got.record() == rec
    return len(scanned)


@pytest.mark.parametrize("codec", CODECS)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(recs=segments())
def test_spliced_rows_equal_row_of(codec: str, recs: list[dict[str, Any]]) -> None:
    assert spliced_equals_encoded(encode_segment(KEY, recs, codec)) == len(recs)


def sample(n: int = 3) -> list[dict[str, Any]]:
    recs = []
    for i in range(n):
        rec = dict.fromkeys(f["name"] for f in RECORD_SCHEMA["fields"])
        rec.update(offset=1_000 + i, timestamp=1_764_079_200_000 + i, op="upsert",
                   collection="docs", tenant="acme", id=f"doc-{i}", dimension=2,
                   vector=b"\x00\x00\x80?" * 2, document="abcdef", document_is_json=False,
                   acl=["g:a", "u:b"], embedding_model={"name": "m", "version": None})
        recs.append(rec)
    return recs


def test_sample_and_empty_segment_scan() -> None:
    data = encode_segment(KEY, sample())
    assert spliced_equals_encoded(data) == 3
    assert scan_segment(KEY, encode_segment(KEY, [])) == []


@pytest.mark.parametrize("codec", CODECS)
def test_every_truncation_raises(codec: str) -> None:
    data = encode_segment(KEY, sample(), codec)
    for cut in range(len(data)):
        with pytest.raises(IntegrityError):
            scan_segment(KEY, data[:cut])


def block_start(data: bytes) -> int:
    """Where the first block starts: after the header's sync marker (the segment's last 16
    bytes, repeated after every block)."""
    return data.index(data[-16:]) + 16


def test_damaged_lengths_counts_and_sync_raise() -> None:
    data = encode_segment(KEY, sample(1))
    doc = data.index(b"abcdef")
    assert data[doc - 1] == 12  # the document's length: 6, zigzag
    for length in (10, 14, 2, 0x7E, 13):  # shorter, longer, negative
        bad = bytearray(data)
        bad[doc - 1] = length
        with pytest.raises(IntegrityError):
            scan_segment(KEY, bytes(bad))
    start = block_start(data)
    assert data[start] == 2  # one record
    for count in (0, 4, 1):  # 0 records, 2 records, -1 records
        bad = bytearray(data)
        bad[start] = count
        with pytest.raises(IntegrityError):
            scan_segment(KEY, bytes(bad))
    bad = bytearray(data)
    bad[-1] ^= 1  # the sync marker after the block
    with pytest.raises(IntegrityError, match="sync"):
        scan_segment(KEY, bytes(bad))
    bad = bytearray(data)
    bad[doc] = 0xFF  # not UTF-8
    with pytest.raises(IntegrityError, match="UTF-8"):
        scan_segment(KEY, bytes(bad))


def test_header_count_and_key_are_checked() -> None:
    data = encode_segment(KEY, sample(3))
    entry = b"\x18vecwal.count\x02"
    assert data.count(entry + b"3") == 1
    with pytest.raises(IntegrityError, match="header says 4"):
        scan_segment(KEY, data.replace(entry + b"3", entry + b"4"))
    with pytest.raises(IntegrityError, match="says it holds"):
        scan_segment(SegmentKey(TOPIC, PARTITION, 0, 2), data)
    with pytest.raises(IntegrityError, match="not a readable Avro file"):
        scan_segment(KEY, b"Obj\x02" + data[4:])


def test_record_op_without_id_is_refused() -> None:
    recs = sample(1)
    recs[0]["id"] = None
    with pytest.raises(IntegrityError, match="no id"):
        scan_segment(KEY, encode_segment(KEY, recs))


def segment_without(field: str, recs: list[dict[str, Any]]) -> bytes:
    """``recs`` as a segment of an older record schema: today's without ``field``, its header
    naming another schema fingerprint."""
    raw = json.loads(fastavro.schema.to_parsing_canonical_form(RECORD_SCHEMA))
    assert any(f["name"] == field for f in raw["fields"])
    raw["fields"] = [f for f in raw["fields"] if f["name"] != field]
    meta = {k: v for k, v in fastavro.reader(io.BytesIO(encode_segment(KEY, recs))).metadata.items()
            if k.startswith("vecwal.")}
    meta["vecwal.schema_fingerprint"] = f"the schema before {field}"
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(raw),
                    [{k: v for k, v in r.items() if k != field} for r in recs], metadata=meta)
    return buf.getvalue()


def test_foreign_schema_falls_back_to_decoding() -> None:
    """A segment of an older record schema (here: one without ``extra``) is decoded with
    schema resolution, and folded the old way."""
    recs = sample(2)
    recs[1]["op"] = "delete"
    events = scan_segment(KEY, segment_without("extra", recs))
    assert all(isinstance(e, DecodedEvent) for e in events)
    for ev, rec in zip(events, recs, strict=True):
        got, want = ev.row(TOPIC, PARTITION), Row.of(record_from_event(rec, TOPIC, PARTITION))
        assert (got.raw, got.hash, got.version, got.deleted) == \
            (want.raw, want.hash, want.version, want.deleted)


def test_segments_written_before_producer_timestamp_fold_to_the_same_rows() -> None:
    """The record schema before ``producer_timestamp`` (capture.timeline) was added: its
    segments are still read (with schema resolution), and fold to the same snapshot rows as
    today's, so snapshots and content hashes written before stay equal."""
    recs = sample(3)
    recs[2]["op"] = "delete"
    old_data = segment_without("producer_timestamp", recs)
    old_events, new_events = scan_segment(KEY, old_data), scan_segment(KEY, encode_segment(KEY, recs))
    assert all(isinstance(e, DecodedEvent) for e in old_events)
    assert not any(isinstance(e, DecodedEvent) for e in new_events), "today's are scanned"
    for old, new in zip(old_events, new_events, strict=True):
        a, b = old.row(TOPIC, PARTITION), new.row(TOPIC, PARTITION)
        assert (a.raw, a.hash, a.version, a.deleted) == (b.raw, b.hash, b.version, b.deleted)
    assert [r["producer_timestamp"] for r in read_records(KEY, old_data)] == [None] * 3


def test_headers_do_not_reach_the_snapshot_row() -> None:
    """The splice ends at extra: a record's Kafka headers (last in the record) are history's,
    not the snapshot's, and the scanned record still ends where its headers end."""
    plain, headed = sample(2), sample(2)
    headed[0]["headers"] = [{"key": "batch", "value": b"b-1"}, {"key": "batch", "value": None}]
    headed[1].update(headers=[], headers_truncated=True)
    for a, b in zip(scan_segment(KEY, encode_segment(KEY, plain)),
                    scan_segment(KEY, encode_segment(KEY, headed)), strict=True):
        ra, rb = a.row(TOPIC, PARTITION), b.row(TOPIC, PARTITION)
        assert (ra.raw, ra.hash, ra.version) == (rb.raw, rb.hash, rb.version)
    got = [e.event() for e in scan_segment(KEY, encode_segment(KEY, headed))]
    assert [(e["headers"], e["headers_truncated"]) for e in got] == \
        [(headed[0]["headers"], False), ([], True)]
