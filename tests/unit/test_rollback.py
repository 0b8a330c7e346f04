"""rollback's pure parts: the exclude filter (parsing, its refusals, matching scanned events
and decoded records), the base choice, the report's counts, and the message key read from a
segment's bytes; and the refusal when the log after the base was pruned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.changelog.scan import scan_segment
from daemon.changelog.segment import encode_segment
from daemon.events import EventParser
from daemon.objectstore import open_store
from daemon.rollback.base import RollbackRefused, choose_base, find_base
from daemon.rollback.filters import BadFilter, ExcludeFilter, OffsetRange
from daemon.rollback.fold import message_key
from daemon.rollback.report import RollbackReport
from daemon.snapshot.manifest import Manifest
from tests.oracle.history import TOPIC, generate, write_log


def parse(**kw: Any) -> ExcludeFilter:
    return ExcludeFilter.parse(time_ms=int, **kw)


def events(*values: dict[str, Any]) -> list[Any]:
    """Scanned events of a segment holding ``values`` (offsets 0.., timestamps 100..)."""
    parser = EventParser(1 << 20)
    recs = [parser.parse(orjson.dumps(v), "json", key=f"k{i}".encode(), offset=i,
                         timestamp=100 + i) for i, v in enumerate(values)]
    key = SegmentKey(TOPIC, 0, 0, len(recs))
    return scan_segment(key, encode_segment(key, recs))


def upsert(i: int, **more: Any) -> dict[str, Any]:
    return {"op": "upsert", "collection": "c", "tenant": "", "id": f"r{i}",
            "vector": [0.5, 0.25], **more}


def test_parse_refuses_with_hints(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "no exclude criterion"),
        ({"between": ["20", "10"]}, "after the second"),
        ({"offsets": ["ingest/0=9-3"]}, "FROM is after TO"),
        ({"offsets": ["ingest=1-3"]}, "topic/partition=FROM-TO"),
        ({"headers": ["novalue"]}, "NAME=VALUE"),
        ({"embedding_model": "m:"}, "NAME[:VERSION]"),
        ({"event_ids": str(tmp_path / "missing")}, "cannot read"),
    ]
    empty = tmp_path / "empty"
    empty.write_text("\n  \n")
    cases.append(({"event_ids": str(empty)}, "holds no event id"))
    for kw, message in cases:
        with pytest.raises(BadFilter, match=message.replace("[", r"\[")) as info:
            parse(**kw)
        assert info.value.hint and info.value.exit_code == 2


def test_every_criterion_must_match(tmp_path: Path) -> None:
    ids = tmp_path / "ids"
    ids.write_text("e1\ne2\n")
    evs = events(upsert(0, embedding_model={"name": "m", "version": "2"}, event_id="e1",
                        source={"uri": "s3://bad/doc.txt", "chunk": 1}),
                 upsert(1, embedding_model={"name": "m", "version": "1"}, event_id="e2"),
                 upsert(2, embedding_model={"name": "m", "version": "2"}, event_id="e3"))
    model = parse(embedding_model="m:2")
    assert [model(e, TOPIC, 0) for e in evs] == [True, False, True]
    assert model.needs_content and model.since_ms is None
    both = parse(embedding_model="m:2", event_ids=str(ids))
    assert [both(e, TOPIC, 0) for e in evs] == [True, False, False]
    timed = parse(between=["101", "102"])
    assert not timed.needs_content and timed.since_ms == 101
    assert [timed(e, TOPIC, 0) for e in evs] == [False, True, True]
    assert [parse(between=["101", "102"], embedding_model="m")(e, TOPIC, 0)
            for e in evs] == [False, True, True]
    src = parse(source_prefix="s3://bad/")
    assert [src(e, TOPIC, 0) for e in evs] == [True, False, False]
    offs = parse(offsets=[f"{TOPIC}/0=1-1", f"{TOPIC}/0=2-5"])
    assert offs.offsets == (OffsetRange(TOPIC, 0, 1, 1), OffsetRange(TOPIC, 0, 2, 5))
    assert [offs(e, TOPIC, 0) for e in evs] == [False, True, True]
    assert not any(offs(e, TOPIC, 1) for e in evs)


def test_headers_match_all_given_and_records_without_headers() -> None:
    filt = parse(headers=["batch=42", "src=etl"])
    assert filt.matches_record({"headers": [{"key": "batch", "value": b"42"},
                                            {"key": "src", "value": b"etl"}]})
    assert not filt.matches_record({"headers": [{"key": "batch", "value": b"42"}]})
    assert not filt.matches_record({"headers": None})
    assert not filt.matches_record({}), "a record of an older segment has no headers"


def test_message_key_read_from_the_segment() -> None:
    evs = events(upsert(0), upsert(1))
    assert [message_key(((0, TOPIC, 0, 0), e, TOPIC, 0)) for e in evs] == [b"k0", b"k1"]


def manifest(sid: str, cut_ms: int, cut: dict[str, int]) -> Manifest:
    return Manifest(sid, None, 0, cut_ms, {TOPIC: cut}, {})


def test_choose_base_takes_the_newest_safe_snapshot() -> None:
    older = manifest("a", 100, {"0": 10})
    newer = manifest("b", 200, {"0": 30})
    newest_first = [newer, older]
    assert choose_base(newest_first, parse(between=["150", "300"]), None) is older
    assert choose_base(newest_first, parse(between=["250", "300"]), None) is newer
    assert choose_base(newest_first, parse(between=["250", "300"]), 150) is older
    assert choose_base(newest_first, parse(offsets=[f"{TOPIC}/0=30-40"]), None) is newer
    assert choose_base(newest_first, parse(offsets=[f"{TOPIC}/0=29-40"]), None) is older
    assert choose_base(newest_first, parse(offsets=[f"{TOPIC}/0=5-40"]), None) is None
    assert choose_base(newest_first, parse(embedding_model="m"), None) is None
    # a target by offsets: no snapshot cut past it (restore --to topic/partition=offset)
    assert choose_base(newest_first, parse(between=["250", "300"]), None,
                       {TOPIC: {"0": 20}}) is older


def test_report_counts() -> None:
    report = RollbackReport()
    for i, kind in enumerate(["reverted"] * 12 + ["removed", "restored", "untouched"]):
        report.add(kind, "c", "t", f"r{i}")
    report.add("removed", "d", "", "x")
    out = report.to_dict()
    assert (out["affected"], out["changed"], out["untouched"]) == (16, 15, 1)
    tally = out["collections"]["c"]["t"]
    assert tally["reverted"] == 12 and len(tally["sample"]) == 10
    assert out["collections"]["d"][""]["sample"] == [{"id": "x", "change": "removed"}]
    assert any("15 records change" in line for line in report.lines())


def test_refused_when_the_log_is_pruned(tmp_path: Path) -> None:
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, generate(3, 60), 3)
    first = min((k for k in repo.store.list(f"log/{TOPIC}/p=00000/")
                 if k.key.endswith(".avro")), key=lambda k: k.key)
    repo.store.delete(first.key)
    with pytest.raises(RollbackRefused, match="no longer held") as info:
        find_base(repo, [TOPIC], parse(embedding_model="m"), None)
    assert "--between" in info.value.hint and info.value.exit_code == 4
