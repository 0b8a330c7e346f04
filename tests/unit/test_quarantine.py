"""Quarantine objects: one per segment with rejected events, keyed by the segment's range,
written create-only; objects of the older per-event layout stay readable; the log lines of a
flood are rate limited per (topic, reason)."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from daemon.avro_container import zstd as _zstd
from daemon.capture.quarantine_log import QuarantineLog
from daemon.changelog import quarantine
from daemon.changelog.keys import QuarantineKey, SegmentKey, quarantine_key
from daemon.changelog.quarantine import MAGIC, QuarantineEntry, SegmentQuarantine
from daemon.changelog.repository import Repository
from daemon.errors import IntegrityError
from daemon.objectstore import open_store
from tests.component.legacy import put_per_event

SEG = SegmentKey("ingest.v1", 2, 100, 250)


def entries(offsets: list[int], topic: str = "ingest.v1", partition: int = 2
            ) -> list[QuarantineEntry]:
    reasons = ["unparseable", "wrong_dimension", "unknown_op"]
    return [QuarantineEntry(topic, partition, o, 1_000 + o, reasons[i % 3], f"detail {o}",
                            None if i % 4 == 0 else f"k{o}".encode(),
                            None if i % 5 == 4 else b"\xff\x00{raw " + bytes([i % 256]) * i)
            for i, o in enumerate(offsets)]


def repo_at(tmp_path: Path) -> Repository:
    return Repository(open_store(f"file://{tmp_path / 'repo'}"))


def test_keys_of_both_layouts() -> None:
    key = QuarantineKey.of_segment(SEG)
    assert key.object_key == ("quarantine/ingest.v1/p=00002/"
                              "00000000000000000100-00000000000000000250.vwq")
    assert QuarantineKey.parse(key.object_key) == key
    old = QuarantineKey.parse(quarantine_key("ingest.v1", 2, 9))
    assert old == QuarantineKey("ingest.v1", 2, 9, 10, per_event=True)
    assert old is not None and old.object_key == quarantine_key("ingest.v1", 2, 9)
    for other in (SEG.avro, SEG.sidecar, "quarantine/t/p=00002/x.json",
                  "quarantine/t/p=2/00000000000000000009.json",
                  "quarantine/t/p=00002/00000000000000000009.vwq",
                  "quarantine/t/p=00002/00000000000000000009-00000000000000000019.json"):
        assert QuarantineKey.parse(other) is None, other
    assert QuarantineKey.pattern("t", 1, 7) == "quarantine/t/p=00001/00000000000000000007-*.vwq"


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, raw bytes, decompressed) of an object of the segment layout."""
    assert data.startswith(MAGIC)
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    at = len(MAGIC) + 4
    head = orjson.loads(data[at:at + n])
    assert head["compression"] == "zstd"
    return head, _zstd().decompress(data[at + n:])


def join(head: dict[str, Any], raw: bytes) -> bytes:
    header = orjson.dumps(head)
    payload = _zstd().compress(raw) if head["compression"] == "zstd" else raw
    return MAGIC + struct.pack("<I", len(header)) + header + payload


@pytest.mark.parametrize("level", [1, -5, None])
def test_any_level_or_none_reads_back(level: int | None, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    """Objects written at another zstd level, or uncompressed (``ZSTD_LEVEL`` None), read
    back the same: the level is the writer's choice, not part of the format."""
    monkeypatch.setattr(quarantine, "ZSTD_LEVEL", level)
    es = entries([100, 101, 140, 249])
    key = QuarantineKey.of_segment(SEG)
    data = SegmentQuarantine(key, es).encode()
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    head = orjson.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + n])
    assert head["compression"] == ("none" if level is None else "zstd")
    assert list(SegmentQuarantine.decode(key, data).entries) == es


def test_roundtrip_keeps_every_byte_and_coordinate() -> None:
    es = entries([100, 101, 140, 249])
    obj = SegmentQuarantine(QuarantineKey.of_segment(SEG), es)
    data = obj.encode()
    back = SegmentQuarantine.decode(obj.key, data)
    assert list(back.entries) == es
    assert back.reasons() == {"unknown_op": 1, "unparseable": 2, "wrong_dimension": 1}
    assert SegmentQuarantine(obj.key, entries([100, 101, 140, 249])).encode() == data, \
        "deterministic: a re-upload of the same events compares equal"
    head, raw = split(data)
    assert (head["format"], head["topic"], head["partition"], head["start"], head["end"],
            head["count"], head["reasons"]) == (1, "ingest.v1", 2, 100, 250, 4, back.reasons())
    assert head["entries"][0] == [100, 1100, "unparseable", "detail 100", None, 7]
    assert raw == b"".join((e.key or b"") + (e.value or b"") for e in es), "raw, in order"
    empty = SegmentQuarantine(QuarantineKey("t", 0, 5, 9), [])
    assert list(SegmentQuarantine.decode(empty.key, empty.encode()).entries) == []


def test_the_per_event_layout_is_read() -> None:
    (e,) = entries([9])
    key = QuarantineKey.parse(quarantine_key(e.topic, e.partition, 9))
    assert key is not None
    data = e.to_json()
    assert orjson.loads(data)["value_b64"] == base64.b64encode(e.value or b"").decode()
    assert list(SegmentQuarantine.decode(key, data).entries) == [e]


@pytest.mark.parametrize("damage", ["range", "outside", "order", "count", "length", "short",
                                    "trailing", "magic", "header", "per_event", "compression",
                                    "torn"])
def test_an_object_that_contradicts_its_key_is_an_integrity_error(damage: str) -> None:
    key = QuarantineKey.of_segment(SEG)
    head, raw = split(SegmentQuarantine(key, entries([100, 200])).encode())
    if damage == "range":
        head["end"] = 251
    elif damage == "outside":
        head["entries"][1][0] = 250
    elif damage == "order":
        head["entries"].reverse()
    elif damage == "count":
        head["count"] = 3
    elif damage == "length":
        head["entries"][1][5] += 1
    elif damage == "short":
        raw = raw[:-1]
    elif damage == "trailing":
        raw += b"x"
    elif damage == "compression":
        head["compression"] = "lz4"
    data = join(head, raw)
    if damage == "torn":
        data = data[:-3]
    if damage == "magic":
        data = b"X" + data[1:]
    elif damage == "header":
        data = data[:len(MAGIC) + 4] + b"[" + data[len(MAGIC) + 5:]
    elif damage == "per_event":
        key, data = QuarantineKey("ingest.v1", 2, 100, 101, per_event=True), b'{"topic": 1}'
    with pytest.raises(IntegrityError, match="not a valid quarantine object"):
        SegmentQuarantine.decode(key, data)


def test_an_uncompressed_payload_is_read() -> None:
    key = QuarantineKey.of_segment(SEG)
    head, raw = split(SegmentQuarantine(key, entries([100, 200])).encode())
    data = join({**head, "compression": "none"}, raw)
    assert list(SegmentQuarantine.decode(key, data).entries) == entries([100, 200])


def test_put_is_create_only_identical_is_success_different_is_integrity_error(
        tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    key = QuarantineKey.of_segment(SEG)
    repo.put_quarantine(SegmentQuarantine(key, entries([100, 101])))
    repo.put_quarantine(SegmentQuarantine(key, entries([100, 101])))  # a retried upload
    with pytest.raises(IntegrityError, match="different content"):
        repo.put_quarantine(SegmentQuarantine(key, entries([100, 102])))
    assert list(repo.read_quarantine(key).entries) == entries([100, 101])
    # The same events in other bytes (another zstd version compressed them): success.
    other = QuarantineKey.of_segment(SegmentKey("ingest.v1", 2, 250, 300))
    head, raw = split(SegmentQuarantine(other, entries([260])).encode())
    repo.store.put(other.object_key, join({**head, "compression": "none"}, raw))
    repo.put_quarantine(SegmentQuarantine(other, entries([260])))
    with pytest.raises(IntegrityError, match="different content"):
        repo.put_quarantine(SegmentQuarantine(other, entries([261])))


def test_listing_finds_both_layouts(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    new = QuarantineKey.of_segment(SEG)
    repo.put_quarantine(SegmentQuarantine(new, entries([100, 101])))
    for e in entries([7, 8], partition=0):
        put_per_event(repo, e)
    repo.store.put("quarantine/ingest.v1/README", b"not one of ours")
    listed = [k for k, _ in repo.list_quarantine("ingest.v1")]
    assert [(k.partition, k.start, k.end, k.per_event) for k in listed] == [
        (0, 7, 8, True), (0, 8, 9, True), (2, 100, 250, False)]
    offsets = [e.offset for k in listed for e in repo.read_quarantine(k).entries]
    assert offsets == [7, 8, 100, 101]


def test_log_lines_are_rate_limited_per_topic_and_reason() -> None:
    qlog = QuarantineLog(interval_s=10.0)
    flood = [QuarantineEntry("t", o % 3, o, 0, "unparseable" if o % 2 else "unknown_op", "d",
                             b"k", b"v") for o in range(2_000)]
    with capture_logs() as logs:
        logged = [qlog.note(e, 0, now=o / 1000) for o, e in enumerate(flood)]  # 2 s
        assert logged.count(True) == 2, "the first of each reason, in full"
        qlog.note(flood[0], 1_990, now=12.5)  # unknown_op after the interval: 999 + this one
    lines = [x for x in logs if x["event"] == "event quarantined"]
    assert [(x["reason"], x["offset"], x["count"]) for x in lines] == [
        ("unknown_op", 0, 1), ("unparseable", 1, 1), ("unknown_op", 0, 1_000)]
    assert lines[-1]["since_s"] == 12.5
    assert lines[-1]["object"] == QuarantineKey.pattern("t", 0, 1_990)
    assert lines[0]["key"] == "k" and lines[0]["detail"] == "d"
    assert QuarantineLog(interval_s=10.0).note(flood[1], 0, 0.0), "one log per loop"
