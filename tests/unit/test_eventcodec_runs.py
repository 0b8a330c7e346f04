"""``encode_runs`` and the capture side of its runs (``RunIntake``, ``OpenSegment.add_run``):
the runs say what ``encode_batch`` says, message for message, and a partition's segments
made from runs are the ones adding the same events one by one makes (the per-event loop
capture ran before runs, kept here as the model): the same datums, ranges, time bounds, op
counts in the same order, ids, future-stamped counts and, on capture's timeline, stamps."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.capture.partition import PartitionState
from daemon.capture.runs import RunIntake
from daemon.capture.segment_buffer import OpenSegment, SealedSegment
from daemon.capture.timeline import CaptureClock, FutureStamps, restamp
from daemon.config import CaptureConfig
from daemon.kafka_headers import UNREADABLE, encode_tail, message_tail
from daemon.workload import to_avro
from tests.component.fakes import FakeMessage

eventcodec = pytest.importorskip("daemon.native.eventcodec",
                                 reason="native codec not built: run `make setup`")

MAX = 1 << 20
FORMATS = {"t": True, "u": False}  # t: Avro, u: JSON; other topics are not native
DIMS = {"a": 2, "b": 2}

# One message: (topic, partition, offset step, kind, collection, id, headers).
KINDS = ["upsert", "delete", "bad", "control", "barrier", "eof", "unknown_topic"]
messages = st.lists(st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 2),
                              st.integers(-1, 3), st.sampled_from(KINDS),
                              st.sampled_from(["a", "b"]), st.integers(0, 5), st.booleans()),
                    max_size=40)


def value(topic: str, kind: str, coll: str, rid: int) -> bytes:
    event: dict[str, Any] = {"op": "upsert", "collection": coll, "id": f"r{rid}",
                             "vector": [0.5, float(rid)]}
    if kind == "delete":
        event = {"op": "delete", "collection": coll, "id": f"r{rid}"}
    elif kind == "bad":
        event["vector"] = [1.0]  # wrong dimension: refused by the codec
    elif kind == "control":
        event = {"op": "alias.put", "alias": "x", "collection": coll}
    elif kind == "barrier":
        event = {"op": "collection.put", "collection": coll, "schema": {"dimension": 2}}
    return to_avro(event) if FORMATS[topic] else orjson.dumps(event)


def batch(spec: list[tuple[str, int, int, str, str, int, bool]]) -> list[FakeMessage]:
    out, offsets = [], {0: 10, 1: 10, 2: 10}
    for topic, p, step, kind, coll, rid, headers in spec:
        offsets[p] += step  # may repeat or go back: a redelivery
        out.append(FakeMessage("v" if kind == "unknown_topic" else topic, p, offsets[p],
                               value(topic, kind, coll, rid), f"k{rid}".encode(),
                               1_000 + offsets[p], kind == "eof",
                               [("h", b"x")] if headers else None))
    return out


def flattened(items: list[Any], msgs: list[FakeMessage]) -> list[Any]:
    """``encode_runs``' items as ``encode_batch`` gives them, one per message."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, int):
            assert item == len(out)
            out.append(None)
        elif len(item) == 8:
            out.append(item)
        else:
            first, topic, partition, coll, offsets, stamps, sizes, datums, ops, ids = item
            assert first == len(out) and len(offsets) >= 1
            assert all(len(x) == len(offsets) for x in (stamps, sizes, datums, ops, ids))
            assert all(a < b for a, b in pairwise(offsets))  # rising
            out += [(topic, partition, offsets[k], stamps[k], msgs[first + k].key(), sizes[k],
                     datums[k], ops[k], coll, ids[k]) for k in range(len(offsets))]
    return out


@settings(max_examples=150, deadline=None)
@given(messages, st.integers(0, 3))
def test_runs_say_what_encode_batch_says(spec: list[Any], start: int) -> None:
    msgs = batch(spec)
    start = min(start, len(msgs))
    want, want_stop = eventcodec.encode_batch(msgs, start, FORMATS, DIMS, MAX, encode_tail,
                                              UNREADABLE)
    items, stop = eventcodec.encode_runs(msgs, start, FORMATS, DIMS, MAX, encode_tail,
                                         UNREADABLE)
    assert stop == want_stop
    # `first` counts in the whole batch: as from `start`, the runs flatten to encode_batch's
    shifted = [i - start if isinstance(i, int) else (i[0] - start, *i[1:]) if len(i) == 10
               else i for i in items]
    assert flattened(shifted, msgs[start:]) == want
    # Runs are maximal: neighbouring runs differ in topic, partition or collection, or the
    # offset does not rise, or another message stands between them.
    runs = [i for i in items if isinstance(i, tuple) and len(i) == 10]
    for a, b in pairwise(runs):
        if b[0] == a[0] + len(a[4]):
            assert (a[1], a[2], a[3]) != (b[1], b[2], b[3]) or b[4][0] <= a[4][-1]


# -- segments: runs against the per-event model -------------------------------------------
def model_take(ps: PartitionState, events: list[tuple[Any, ...]], msgs: list[FakeMessage],
               seen_ms: int, now: float, cfg: CaptureConfig, future: FutureStamps,
               timeline: bool, sealed: list[SealedSegment]) -> None:
    """The per-event loop of ``CaptureLoop._take`` before runs (one Encoded tuple each, added
    by ``added``)."""
    for i, (_t, _p, offset, timestamp, _key, size, datum, op, coll, rid) in enumerate(events):
        if offset < ps.open.end:
            continue
        if timestamp > seen_ms:
            future.check(ps, offset, timestamp, seen_ms)
        if timeline:
            captured = CaptureClock.stamp(ps, seen_ms)
            datum, timestamp = restamp(datum, captured, timestamp, message_tail(msgs[i])), \
                captured
        added(ps.open, datum, offset, timestamp, op, coll, rid, size, now)
        if ps.open.full(cfg):
            seal(ps, now, sealed, timeline)


def added(seg: OpenSegment, datum: bytes, offset: int, timestamp: int, op: str, coll: str,
          rid: str | None, size: int, now: float) -> None:
    """``OpenSegment.add`` as it was before runs, one event at a time: the reference."""
    seg.datums.append(datum)
    seg.bytes += size
    seg.value_bytes += size
    if seg.min_timestamp is None or timestamp < seg.min_timestamp:
        seg.min_timestamp = timestamp
    if seg.max_timestamp is None or timestamp > seg.max_timestamp:
        seg.max_timestamp = timestamp
    seg.ops[op] = seg.ops.get(op, 0) + 1
    if rid is not None:
        seg.ids.setdefault(coll, set()).add(rid)
    seg.end = offset + 1
    if seg.opened_at is None:
        seg.opened_at = now


def seal(ps: PartitionState, now: float, sealed: list[SealedSegment], timeline: bool) -> None:
    seg = ps.open.seal("null", now)
    if timeline and seg.max_timestamp is not None:
        CaptureClock.close(ps, seg.max_timestamp)
    sealed.append(seg)
    ps.open = ps.open.successor()


def state(start: int) -> PartitionState:
    return PartitionState("t", 0, OpenSegment("t", 0, start), durable_through=start)


def summary(segs: list[SealedSegment], ps: PartitionState) -> list[Any]:
    return [(s.key, s.datums, s.count, s.min_timestamp, s.max_timestamp, list(s.ops.items()),
             s.ids, s.value_bytes, s.buffered_bytes) for s in segs] + [
        (ps.open.start, ps.open.end, ps.open.datums, list(ps.open.ops.items()), ps.open.ids,
         ps.open.bytes, ps.future_stamped, ps.last_future_stamped, ps.capture_clock_ms)]


# One event of partition 0, collection a: (offset step, op, id, timestamp step, extra bytes).
events = st.lists(st.tuples(st.integers(1, 2), st.sampled_from(["upsert", "delete"]),
                            st.integers(0, 9), st.integers(-2, 3), st.integers(0, 600)),
                  min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(events, st.integers(1, 12), st.integers(200, 3_000), st.integers(0, 25),
       st.booleans(), st.integers(995, 1_060))
def test_segments_from_runs_are_the_per_event_ones(spec: list[Any], max_records: int,
                                                   max_bytes: int, covered: int,
                                                   timeline: bool, seen_ms: int) -> None:
    msgs, offset, ts = [], 100, 1_000
    for step, op, rid, dt, extra in spec:
        offset, ts = offset + step, ts + dt
        event: dict[str, Any] = {"op": op, "collection": "a", "id": f"r{rid}"}
        if op == "upsert":
            event |= {"vector": [1.0, 2.0], "document": "d" * extra}
        msgs.append(FakeMessage("t", 0, offset, to_avro(event), b"k", ts, False,
                                [("h", b"1")] if rid % 3 == 0 else None))
    items, stop = eventcodec.encode_runs(msgs, 0, {"t": True}, DIMS, MAX, encode_tail,
                                         UNREADABLE)
    assert stop == len(msgs) and len(items) == 1 and len(items[0]) == 10  # one run
    per_event = flattened(items, msgs)
    cfg = CaptureConfig(segment_max_records=max_records, segment_max_bytes=max_bytes)
    start = 100 + covered  # the segment already covers some: those are redeliveries
    got_ps, want_ps = state(start), state(start)
    got: list[SealedSegment] = []
    want: list[SealedSegment] = []
    RunIntake(cfg, FutureStamps(5, lambda _t: None), timeline, None).take(
        got_ps, items[0], msgs, seen_ms, 1.0,
        lambda ps, now, _why: seal(ps, now, got, timeline),
        lambda _ps, _offset, exc: pytest.fail(f"held without a sealer: {exc}"))
    model_take(want_ps, per_event, msgs, seen_ms, 1.0, cfg, FutureStamps(5, lambda _t: None),
               timeline, want)
    assert summary(got, got_ps) == summary(want, want_ps)
