"""history and diff end to end: events through the real Kafka broker, captured by `vecwal run`
into the real S3 server, a compaction between two captures, `vecwal index`, then `vecwal
history` and `vecwal diff` as real processes, checked against the produced events and the
oracle's replayed states."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.audit.diff import PARTS
from daemon.kafka_headers import MAX_HEADERS
from daemon.workload import GeneratedEvent, Produced
from tests.integration.harness import Target, vecwal
from tests.integration.test_restore import (
    Story,
    capture,
    compact,
    inventory,
    produce_batches,
    times_of,
    to_history,
    write_config,
)
from tests.oracle.history import History, oracle

pytestmark = pytest.mark.integration


def cli_rows(target: Target, *args: str) -> list[dict[str, Any]]:
    proc = vecwal(*args, "--format", "json", env=target.env)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def events_of(history: History, coll: str, rid: str) -> list[tuple[int, int, str, str]]:
    evs = sorted((e["timestamp"], p, e["offset"], e["op"], e["tenant"])
                 for p, events in enumerate(history.events) for e in events
                 if e["id"] == rid and e["collection"] == coll)
    return [(p, off, op, tenant) for _, p, off, op, tenant in evs]


def oracle_diff(history: History, t1: int, t2: int) -> dict[str, set[tuple[str, str, str]]]:
    s1, s2 = oracle(history, t1)[0], oracle(history, t2)[0]
    updated = {k for k in set(s1) & set(s2)
               if any(s1[k].get(n) != s2[k].get(n) for names in PARTS.values() for n in names)}
    return {"added": set(s2) - set(s1), "deleted": set(s1) - set(s2), "updated": updated}


def test_history_and_diff_through_broker_and_s3(s3_target: Target, tmp_path: Path,
                                                group_id: str) -> None:
    target = s3_target
    story = Story(seed=77)
    cfg = write_config(target, tmp_path, group_id, segment_max_records=20)
    b1, b2 = produce_batches(target, [story.preamble() + story.batch(150), story.batch(150)])
    capture(cfg, target)
    t1 = times_of(b2)[len(b2) // 2]
    snap = compact(cfg, target, to=t1)
    history = to_history(b1 + b2)
    # The id with the most events, and a rejected event for it (a vector that is not one).
    (coll, rid), _ = Counter((e["collection"], e["id"]) for p in history.events for e in p
                             if e["id"]).most_common(1)[0]
    bad = {"op": "upsert", "collection": coll, "id": rid, "vector": "not a vector"}
    rejected_event = GeneratedEvent(rid.encode(), orjson.dumps(bad), bad)
    # b3 carries Kafka headers (a batch id, a value that is not UTF-8, a null one), and two
    # more upserts of the id: one with them, one with more headers than capture keeps
    last = next(e.event for e in reversed([p.event for p in b1 + b2]) if e.event and
                (e.event["op"], e.event["collection"], e.event.get("id")) == ("upsert", coll, rid))
    assert last is not None
    again = [GeneratedEvent(rid.encode(), orjson.dumps(last), last) for _ in range(2)]
    third = [*story.batch(100), again[0], rejected_event, again[1]]
    batch_headers: list[tuple[str, str | bytes | None]] = [
        ("batch", b"bad-7"), ("trace", b"\xff\x00"), ("note", None)]
    headers = {id(ev): batch_headers for ev in third}
    headers[id(again[1])] = [(f"h{i}", b"v") for i in range(MAX_HEADERS + 4)]
    b3, b4 = produce_batches(target, [third, story.batch(100)], headers=headers)
    capture(cfg, target)
    good: list[Produced] = [p for p in b1 + b2 + b3 + b4 if p.event.value != orjson.dumps(bad)]
    history = to_history(good)
    rejected = [p for p in b3 if p.event.value == orjson.dumps(bad)]
    index = vecwal("index", "--config", str(cfg), "--json", env=target.env)
    assert sum(u["indexed_now"] for u in json.loads(index.stdout)) > 0

    rows = cli_rows(target, "history", "--config", str(cfg), "--collection", coll, "--id", rid)
    captured = [(r["partition"], r["offset"], r["op"], r["tenant"]) for r in rows
                if r["status"] == "captured"]
    assert captured == events_of(history, coll, rid)
    assert [(r["partition"], r["offset"]) for r in rows if r["status"] == "rejected"] == \
        [(rejected[0].partition, rejected[0].offset)]
    assert [r["timestamp_ms"] for r in rows] == sorted(r["timestamp_ms"] for r in rows)
    sent = {(p.partition, p.offset): headers.get(id(p.event)) for p in b3}
    shown_batch = [{"key": "batch", "value": "bad-7", "encoding": "utf-8"},
                   {"key": "trace", "value": "/wA=", "encoding": "base64"},
                   {"key": "note", "value": None, "encoding": None}]
    by_place = {(p.partition, p.offset): p.event.event for p in good}
    for r in (r for r in rows if r["status"] == "captured"):
        given = sent.get((r["partition"], r["offset"]))
        ev = by_place[(r["partition"], r["offset"])] or {}
        assert r["event_id"] == ev.get("event_id"), r
        if given is None:
            assert (r["headers"], r["headers_truncated"]) == (None, False), r
        elif given is batch_headers:
            assert (r["headers"], r["headers_truncated"]) == (shown_batch, False), r
        else:
            assert r["headers_truncated"] is True, r
            assert [h["key"] for h in r["headers"]] == [f"h{i}" for i in range(MAX_HEADERS)]
    assert sum(1 for r in rows if r["headers"]) >= 2, "both upserts with headers are shown"
    assert sum(1 for r in rows if r["headers_truncated"]) == 1
    some = sorted({(e["collection"], e["id"]) for p in history.events for e in p if e["id"]})
    for other in some[::max(1, len(some) // 6)]:
        got = cli_rows(target, "history", "--config", str(cfg), "--collection", other[0],
                       "--id", other[1])
        assert [(r["partition"], r["offset"], r["op"], r["tenant"]) for r in got
                if r["status"] == "captured"] == events_of(history, *other), other

    valid = inventory(cfg, target)["restorable_to_ms"]
    before = times_of(b1)[len(b1) // 2]
    for t_from, t_to in ((before, t1), (t1, valid), (before, valid)):
        rows = cli_rows(target, "diff", "--config", str(cfg), "--from", str(t_from),
                        "--to", str(t_to))
        got: dict[str, set[tuple[str, str, str]]] = {"added": set(), "deleted": set(),
                                                     "updated": set()}
        for r in rows:
            if r["kind"] == "record":
                got[r["change"]].add((r["collection"], r["tenant"], r["id"]))
        assert got == oracle_diff(history, t_from, t_to), (t_from, t_to)
        total = rows[-1]["detail"]
        assert total["records_to"] == len(oracle(history, t_to)[0])
    assert snap["records"] == len(oracle(history, t1)[0])
