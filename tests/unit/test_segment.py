"""Segments: self-describing, deterministic, and keyed so LIST alone plans a restore."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from daemon.capture.segment_buffer import OpenSegment
from daemon.changelog.keys import SegmentKey, quarantine_key, watermark_key
from daemon.changelog.quarantine import QuarantineEntry
from daemon.changelog.segment import decode_segment, encode_segment, read_header
from daemon.config import CaptureConfig
from daemon.errors import IntegrityError
from daemon.events import EventParser


def records(n: int, start: int = 0) -> list[dict[str, object]]:
    p = EventParser(1 << 20)
    return [p.parse(orjson.dumps({"op": "upsert", "collection": "c", "tenant": "t", "id": f"r{i}",
                                  "vector": [float(i), 1.0], "metadata": {"i": i}}),
                    "json", key=f"r{i}".encode(), offset=start + i, timestamp=1000 + i // 2)
            for i in range(n)]


def test_key_roundtrip_and_order() -> None:
    k = SegmentKey("ingest.v1", 3, 120, 250)
    assert k.avro == "log/ingest.v1/p=00003/00000000000000000120-00000000000000000250.avro"
    assert k.sidecar.endswith("-00000000000000000250.idx")
    assert SegmentKey.parse(k.avro) == k and SegmentKey.parse(k.sidecar) is None
    keys = [SegmentKey("t", 0, s, s + 10).avro for s in (5, 100, 20, 1_000_000)]
    assert [SegmentKey.parse(x).start for x in sorted(keys)] == [5, 20, 100, 1_000_000]  # type: ignore[union-attr]
    assert watermark_key("t", 2) == "state/watermark/t/p=00002.json"
    assert quarantine_key("t", 2, 9) == "quarantine/t/p=00002/00000000000000000009.json"


@pytest.mark.parametrize("codec", ["null", "zstandard", "deflate"])
def test_encode_decode_roundtrip(codec: str) -> None:
    key = SegmentKey("t", 1, 10, 20)
    recs = records(10, start=10)
    data = encode_segment(key, recs, codec)
    header, it = decode_segment(data)
    assert header.key == key and header.count == 10
    assert header.min_timestamp == 1000 and header.max_timestamp == 1004
    assert list(it) == recs


def test_encoding_is_deterministic() -> None:
    key = SegmentKey("t", 0, 0, 5)
    a, b = encode_segment(key, records(5)), encode_segment(key, records(5))
    assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    assert encode_segment(SegmentKey("t", 0, 0, 6), records(5)) != a


def test_empty_segment_and_truncation() -> None:
    data = encode_segment(SegmentKey("t", 0, 4, 9), [])
    assert read_header(data).count == 0 and read_header(data).min_timestamp is None
    with pytest.raises(IntegrityError):
        read_header(data[:10])


def test_open_segment_due_and_seal() -> None:
    cfg = CaptureConfig(segment_max_records=5, segment_max_age_s=2.0)
    seg = OpenSegment("t", 0, start=100)
    assert seg.is_empty and seg.due(0.0, cfg) is None
    for r in records(3, start=100):
        seg.add_record(r, 10, now=1.0)
    bad = QuarantineEntry("t", 0, 103, 1, "unparseable", "x", None, b"{")
    seg.add_quarantined(bad, 1, now=1.0)
    seg.extend_to(106, now=1.0)  # offsets Kafka never delivers (markers)
    assert seg.due(2.5, cfg) is None and seg.due(3.0, cfg) == "age"
    sealed = seg.seal("null", now=3.0)
    assert sealed.key == SegmentKey("t", 0, 100, 106)
    assert sealed.sidecar.count == 3 and sealed.sidecar.quarantined == 1
    assert sealed.sidecar.ids == {"c": ["r0", "r1", "r2"]}
    assert sealed.sidecar.sha256 == hashlib.sha256(sealed.data).hexdigest()
    assert seg.successor().start == 106


@pytest.mark.parametrize("codec", ["null", "zstandard"])
def test_a_sealed_segment_frames_into_pieces_that_are_its_bytes(codec: str) -> None:
    """Capture stores a segment as pieces (the framing and, with the null codec, the datums
    themselves, not copied): joined, they are the segment's bytes, decoded back to its
    records, and its sidecar's size and digest are those of the bytes."""
    from daemon.changelog.segment import encode_segment_datums, record_datum
    from daemon.spans import Gathered

    seg = OpenSegment("t", 0, 0)
    recs = records(3000)
    for r in recs:
        seg.add(record_datum(r), int(r["offset"]), int(r["timestamp"]),  # type: ignore[call-overload]
                "upsert", "c", str(r["id"]), 64, 0.0)
    sealed = seg.seal(codec, 1.0)
    datums = list(sealed.datums)
    pieces, sidecar = sealed.frame()
    assert isinstance(pieces, Gathered) and len(pieces.pieces) > 1
    data = pieces.join()
    assert data == encode_segment_datums(sealed.key, datums, sealed.min_timestamp,
                                         sealed.max_timestamp, codec)
    assert [r["id"] for r in decode_segment(data)[1]] == [r["id"] for r in recs]
    assert sidecar.size == len(data) == len(pieces)
    assert sidecar.sha256 == hashlib.sha256(data).hexdigest() == pieces.sha256().hex()
    if codec == "null":  # the datums are pieces as they are: no copy
        assert any(p is datums[0] for p in pieces.pieces)
    assert sealed.frame()[0] is pieces and sealed.data == data
