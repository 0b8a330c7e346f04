"""The native event codec against the Python parser, its reference: for every event the codec
encodes, its datum must equal what ``EventParser`` and fastavro make of the same message, byte
for byte; for every bad event it refuses, its reason and detail must be the parser's, character
for character; every other event it must leave to the parser (None)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import fastavro
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.changelog.segment import RECORD_SCHEMA, record_datum
from daemon.errors import BadEvent
from daemon.events import CHANGE_EVENT_SCHEMA, EventParser
from daemon.kafka_headers import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    UNREADABLE,
    encode_tail,
    message_headers,
)
from daemon.sources import ContractSource
from daemon.workload import BAD_KINDS, Workload, to_avro
from tests.component.fakes import FakeMessage

eventcodec = pytest.importorskip("daemon.native.eventcodec",
                                 reason="native codec not built: run `make setup`")

MAX = 1 << 20


def message(value: bytes | None, key: bytes | None = b"k", offset: int = 7,
            topic: str = "t", eof: bool = False,
            headers: list[tuple[str, bytes | None]] | None = None) -> FakeMessage:
    """A message of partition 2 (``eof``: one carrying a Kafka error, end of partition)."""
    return FakeMessage(topic, 2, offset, value, key, 1_700_000_000_123, eof, headers)


def verdict(msg: FakeMessage, fmt: str, dims: dict[str, int], limit: int = MAX
            ) -> bytes | tuple[str, str]:
    """The parser's: the record datum, or the (reason, detail) it refuses the event with."""
    parser = EventParser(limit, dims)
    try:
        rec = parser.parse_from(ContractSource(fmt), msg.value(), key=msg.key(),
                                offset=msg.offset(), timestamp=msg.timestamp()[1],
                                headers=message_headers(msg))
    except BadEvent as bad:
        return bad.reason, bad.detail
    assert rec is not None
    return record_datum(rec)


def reference(msg: FakeMessage, fmt: str, dims: dict[str, int]) -> bytes | None:
    want = verdict(msg, fmt, dims)
    return want if isinstance(want, bytes) else None


def native(msgs: list[FakeMessage], fmt: str, dims: dict[str, int]
           ) -> tuple[list[Any], int]:
    results, stop = eventcodec.encode_batch(msgs, 0, {"t": fmt == "avro"}, dims, MAX,
                                            encode_tail, UNREADABLE)
    return results, stop


def check_agrees(msg: FakeMessage, fmt: str, dims: dict[str, int]) -> str | None:
    """"taken" or "refused" when the codec judged the event (and then it must agree with the
    parser); None when it left it."""
    results, stop = native([msg], fmt, dims)
    assert stop == 1 and len(results) == 1
    want = verdict(msg, fmt, dims)
    got = results[0]
    if got is None:
        return None
    if len(got) == 8:  # refused: the fields of its QuarantineEntry
        assert got[4:6] == want, f"the codec refused {msg.value()!r} as {got[4:6]}, the " \
                                 f"parser {'as ' + str(want) if isinstance(want, tuple) else 'took it'}"
        assert got[:4] + got[6:] == ("t", 2, msg.offset(), msg.timestamp()[1], msg.key(),
                                     msg.value())
        return "refused"
    assert isinstance(want, bytes), \
        f"the codec accepted an event the parser refuses: {msg.value()!r} ({want})"
    assert got[6] == want, f"datums differ for {msg.value()!r}"
    topic, partition, offset, ts, key, size, _datum, op, coll, rid = got
    rec = fastavro.schemaless_reader(io.BytesIO(want), RECORD_SCHEMA, None)
    assert (topic, partition, offset, ts, key, size) == ("t", 2, msg.offset(),
                                                        msg.timestamp()[1], msg.key(),
                                                        len(msg.value() or b""))
    assert (op, coll, rid) == (rec["op"], rec["collection"], rec["id"])
    return "taken"


# -- what every stream is made of: the fast path takes it all ----------------------------
@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_workload_events_are_all_encoded_natively(fmt: str) -> None:
    w = Workload(seed=5, collections={"docs": 16}, tenants=["acme", "globex"])
    events = [w.upsert("docs", w.tenants[i % 2], f"doc-{i}#{i % 3}") for i in range(40)]
    events += [{"op": "delete", "collection": "docs", "tenant": "acme", "id": "doc-1#1"},
               {"op": "delete", "collection": "docs", "id": "x"}]
    for i, ev in enumerate(events):
        value = to_avro(ev) if fmt == "avro" else orjson.dumps(ev)
        assert check_agrees(message(value, f"doc-{i}".encode(), offset=i), fmt, {"docs": 16})


def test_json_reserialised_like_orjson() -> None:
    """Whitespace, escapes, unicode, nested documents, extra fields: the same text as the
    parser's orjson.dumps."""
    value = json.dumps({
        "op": "upsert", "collection": "c", "tenant": None, "id": "é\u2028\x01\"\\/",
        "vector": [1, -2, 0.5, 3.4028234663852886e38, 1e-45], "document": {"a": [1, {"b": None}]},
        "metadata": {"k\n": "v\t\u0000", "n": -9223372036854775808, "u": 18446744073709551615,
                     "b": [True, False, None], "e": {}},
        "acl": [], "embedding_model": {"name": "m", "version": None, "other": 1},
        "source": {"uri": "s3://x/y", "chunk": 0}, "zz": {"x": "y"}, "aa": [1],
    }, indent=2, ensure_ascii=True).encode()
    assert check_agrees(message(value), "json", {})


def test_avro_arrays_in_negative_count_blocks() -> None:
    """Avro lets an array come in blocks, a negative count followed by the block's size; the
    record holds it as one block, as fastavro writes it."""
    ev = {"op": "upsert", "collection": "c", "tenant": "t", "id": "i", "acl": ["a", "bb"]}
    plain = to_avro(ev)
    canonical = b"\x02\x04\x02a\x04bb\x00"  # branch 1, count 2, "a", "bb", end
    assert canonical in plain
    blocked = b"\x02\x01\x04\x02a\x01\x06\x04bb\x00"  # count -1 size 2 "a", -1 size 3 "bb"
    value = plain.replace(canonical, blocked)
    assert check_agrees(message(value), "avro", {})


def test_left_to_the_parser() -> None:
    """Control ops, the bad events whose words only Python can write, Kafka errors, unknown
    topics and tombstones are the parser's to judge."""
    good = orjson.dumps({"op": "upsert", "collection": "c", "id": "x", "vector": [1.0, 2.0]})
    cases = [
        message(orjson.dumps({"op": "alias.put", "collection": "c", "alias": "a"})),
        message(orjson.dumps({"op": "upsert", "collection": "c", "id": "x", "vector": [True]})),
        message(orjson.dumps({"op": "upsert", "collection": "c", "id": "x",
                              "vector": [[1.0], "x"]})),  # str() of a list: Python's
        message(orjson.dumps({"op": "upsert", "collection": "c", "id": "x",
                              "vector": ["\u00e9"]})),  # repr() of non-ASCII text: Python's
        message(orjson.dumps({"op": "m\u00e9rge", "collection": "c", "id": "x"})),
        message(orjson.dumps({"op": 2.5, "collection": "c", "id": "x"})),  # repr() of a real
        message(orjson.dumps({"op": "upsert", "collection": "c", "id": "x",
                              "metadata": {"score": 0.5}})),
        message(orjson.dumps({"op": "upsert", "collection": "c", "id": "x",
                              "sparse": {"indices": [1], "values": [0.5]}})),
        message(good, eof=True),
        message(good, topic="unknown"),
        message(None),
    ]
    results, stop = eventcodec.encode_batch(cases, 0, {"t": False}, {}, MAX, encode_tail,
                                            UNREADABLE)
    assert stop == len(cases) and results == [None] * len(cases)
    for msg in cases[:-3]:
        assert isinstance(verdict(msg, "json", {}), tuple | bytes)  # the parser judges them


OPS_LISTED = ("alias.drop, alias.put, collection.drop, collection.put, delete, tenant.drop, "
              "tenant.put, upsert")
REFUSED_JSON = [  # (event, dimensions, reason, detail): the parser's words
    ({"op": "merge", "collection": "c", "id": "x"}, {},
     "unknown_op", f"op 'merge' is not one of {OPS_LISTED}"),
    ({"collection": "c", "id": "x"}, {}, "unknown_op", f"op None is not one of {OPS_LISTED}"),
    ({"op": True}, {}, "unknown_op", f"op True is not one of {OPS_LISTED}"),
    ({"op": -3}, {}, "unknown_op", f"op -3 is not one of {OPS_LISTED}"),
    ({"op": "it's \"x\"\t\x01\\"}, {}, "unknown_op",
     f"op 'it\\'s \"x\"\\t\\x01\\\\' is not one of {OPS_LISTED}"),
    ({"op": "it's"}, {}, "unknown_op", f"op \"it's\" is not one of {OPS_LISTED}"),
    ({"op": "upsert", "collection": "", "id": "x"}, {},
     "missing_field", "upsert needs a non-empty 'collection'"),
    ({"op": "delete", "collection": "c"}, {}, "missing_field", "delete needs a non-empty 'id'"),
    ({"op": "upsert", "collection": "c", "id": ""}, {},
     "missing_field", "upsert needs a non-empty 'id'"),
    ({"op": "upsert", "collection": "c", "id": 7}, {}, "bad_field", "id must be a string, got int"),
    ({"op": "upsert", "collection": ["c"], "id": "x"}, {},
     "bad_field", "collection must be a string, got list"),
    ({"op": "upsert", "collection": "c", "tenant": 1.5, "id": "x"}, {},
     "bad_field", "tenant must be a string, got float"),
    ({"op": "upsert", "collection": "c", "event_time": False, "id": "x"}, {},
     "bad_field", "event_time must be a string, got bool"),
    ({"op": "upsert", "collection": "c", "id": "x", "embedding_model": "m"}, {},
     "bad_field", "embedding_model must be {name, version}"),
    ({"op": "upsert", "collection": "c", "id": "x", "embedding_model": {"version": "1"}}, {},
     "bad_field", "embedding_model must be {name, version}"),
    ({"op": "upsert", "collection": "c", "id": "x", "source": "s3://x"}, {},
     "bad_field", "source must be a JSON object, got str"),
    ({"op": "upsert", "collection": "c", "id": "x", "vector": [1.0, 2.0, 3.0]}, {"c": 2},
     "wrong_dimension", "vector has 3 values, collection 'c' has dimension 2"),
    ({"op": "upsert", "collection": "c", "id": "x", "vector": []}, {"c": 2},
     "wrong_dimension", "vector has 0 values, collection 'c' has dimension 2"),
    ({"op": "upsert", "collection": "c", "id": "x", "vector": []}, {},
     "bad_vector", "vector is empty"),
    ({"op": "upsert", "collection": "c", "id": "x", "vector": {"a": 1}}, {},
     "bad_vector", "vector must be a list of numbers or base64 float32"),
    ({"op": "upsert", "collection": "c", "id": "x", "vector": [1.0, "0.12345678901234567890123"]},
     {}, "bad_vector",
     "vector must be a flat list of numbers, got a string ('0.123456789012345678')"),
    ({"op": "upsert", "collection": "c", "id": "x", "vector": [None, "1"]}, {},
     "bad_vector", "vector must be a flat list of numbers, got a null ('None')"),
    ({"op": "upsert", "collection": "c", "id": "x", "vector": [1e39, "1"]}, {},
     "bad_vector", "vector must be a flat list of numbers, got a string ('1')"),
    ({"op": "upsert", "collection": "c", "id": "x", "vector": [1.0, -3.5e38]}, {},
     "non_finite", "vector holds a value beyond float32 range"),
]


@pytest.mark.parametrize(("event", "dims", "reason", "detail"), REFUSED_JSON)
def test_refused_in_the_parsers_words(event: dict[str, Any], dims: dict[str, int], reason: str,
                                      detail: str) -> None:
    """The common bad events the codec refuses itself, with the parser's reason and detail
    (the event is not parsed twice); the same kinds in Avro where it can carry them."""
    msg = message(orjson.dumps(event))
    (got,), _ = native([msg], "json", dims)
    assert got is not None and got[4:6] == (reason, detail)
    assert verdict(msg, "json", dims) == (reason, detail)


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_workload_bad_events_refused_natively(fmt: str) -> None:
    """Every kind of bad event ``daemon/workload.py`` makes but the unparseable is refused by
    the codec, in the parser's words (the unparseable is left to the parser), and none stops
    the pass."""
    limit = 4096
    w = Workload(seed=3, collections={"docs": 16}, tenants=["acme"], fmt=fmt,
                 oversize_bytes=limit)
    with np.errstate(over="ignore"):
        bad = [w.bad_event(kind) for kind in BAD_KINDS]
    msgs = [message(b.value, b.key, offset=i) for i, b in enumerate(bad)]
    results, stop = eventcodec.encode_batch(msgs, 0, {"t": fmt == "avro"}, {"docs": 16}, limit,
                                            encode_tail, UNREADABLE)
    assert stop == len(msgs)
    for b, msg, got in zip(bad, msgs, results, strict=True):
        want = verdict(msg, fmt, {"docs": 16}, limit)
        assert isinstance(want, tuple) and want[0] == b.bad
        if b.bad == "unparseable":
            assert got is None
        else:
            assert got is not None and got[4:6] == want, (b.bad, got, want)


@pytest.mark.parametrize("vector", [["1", "1"], [1.0, "2"], [None, 1.0], [[1.0], [2.0]]])
def test_a_vector_of_non_numbers_is_quarantined_on_both_paths(vector: list[Any]) -> None:
    """JSON strings (or nulls, lists) in a vector are a producer bug, not numbers: the codec
    refuses the event as the parser does, bad_vector (it coerced "1" before), or leaves it to
    the parser where only Python can write the detail (a list)."""
    msg = message(orjson.dumps({"op": "upsert", "collection": "docs", "id": "x",
                                "vector": vector}))
    (got,), stop = native([msg], "json", {"docs": 2})
    want = verdict(msg, "json", {"docs": 2})
    assert stop == 1 and isinstance(want, tuple) and want[0] == "bad_vector"
    assert (got is None) == isinstance(vector[0], list)
    assert got is None or got[4:6] == want


def test_wrong_dimension_refused_in_both_formats() -> None:
    vec = np.ones(4, dtype="<f4")
    for fmt, value in (("json", orjson.dumps({"op": "upsert", "collection": "c", "id": "x",
                                             "vector": vec.tolist()})),
                       ("avro", to_avro({"op": "upsert", "collection": "c", "id": "x",
                                         "vector": vec.tolist()}))):
        (got,), _ = native([message(value)], fmt, {"c": 3})
        assert got[4:6] == ("wrong_dimension", "vector has 4 values, collection 'c' has "
                                               "dimension 3")
        assert native([message(value)], fmt, {"c": 4})[0][0][6] is not None
        assert native([message(value)], fmt, {"other": 3})[0][0][6] is not None


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_pass_stops_after_a_collection_op(fmt: str) -> None:
    """A collection.put may change the dimension the next events are checked against: the
    pass stops right after it, and capture calls again once the parser has seen it."""
    enc = (lambda e: to_avro(e)) if fmt == "avro" else orjson.dumps
    up = {"op": "upsert", "collection": "c", "id": "x", "vector": [1.0, 2.0]}
    put = {"op": "collection.put", "collection": "c", "schema": {"dimension": 3}}
    msgs = [message(enc(up)), message(enc(put)), message(enc(up))]
    results, stop = eventcodec.encode_batch(msgs, 0, {"t": fmt == "avro"}, {}, MAX,
                                            encode_tail, UNREADABLE)
    assert stop == 2 and results[0] is not None and results[1] is None
    results, stop = eventcodec.encode_batch(msgs, 2, {"t": fmt == "avro"}, {"c": 3}, MAX,
                                            encode_tail, UNREADABLE)
    assert stop == 3 and results[0][4] == "wrong_dimension"  # now


@pytest.mark.parametrize(("fmt", "value", "stops"), [
    ("json", b"{not json", False),
    ("json", b'{"op": "collection.put", "collection": "c", "schema": {"dimension": 3}', True),
    ("json", b'{"op": "\\u0063ollection.drop", "collection": "c"', True),  # may spell it
    ("avro", b"{not avro", False),
    ("avro", b"\xff\xff\xffcollection.put", True),
])
def test_an_unreadable_value_stops_the_pass_if_it_may_be_a_collection_op(
        fmt: str, value: bytes, stops: bool) -> None:
    """A value the codec cannot read is the parser's to judge; if it may name a collection op
    (what it learns from one must hold for the next events), the pass stops right after it.
    Garbage does not stop it: a flood of it costs no codec call each."""
    after = {"op": "delete", "collection": "c", "id": "x"}
    msgs = [message(value), message(to_avro(after) if fmt == "avro" else orjson.dumps(after))]
    results, stop = eventcodec.encode_batch(msgs, 0, {"t": fmt == "avro"}, {}, MAX,
                                            encode_tail, UNREADABLE)
    assert results[0] is None and stop == (1 if stops else 2)
    assert isinstance(verdict(msgs[0], fmt, {}), tuple)  # refused by the parser


# -- random events, valid and not, in both formats ---------------------------------------
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
ids = texts.filter(bool)
json_scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | texts | \
    st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(texts, inner, max_size=3), max_leaves=6)
# What the fast path takes: no reals inside JSON objects.
plain_scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | texts
plain_objects = st.dictionaries(texts, st.recursive(
    plain_scalars, lambda inner: st.lists(inner, max_size=3) |
    st.dictionaries(texts, inner, max_size=3), max_leaves=5), max_size=3)
float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)
# Finite in JSON, beyond float32: non_finite (3.4028235e38 is just above float32's largest)
beyond_float32 = st.lists(float32s | st.sampled_from([3.5e38, -1e300, 3.4028235e38]) |
                          st.integers(-2**64, 2**64), min_size=1, max_size=3)


def mostly(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Valid values nine times in ten: random events would almost never be valid."""
    return st.integers(0, 9).flatmap(lambda n: wild if n == 0 else valid)


@st.composite
def json_events(draw: st.DrawFn) -> bytes:
    dim = draw(st.sampled_from([2, 2, 3]))
    ev: dict[str, Any] = {}
    choices = {
        "op": mostly(st.sampled_from(["upsert", "delete"]),
                     st.sampled_from(["alias.put", "collection.drop", "merge", 3, None, True,
                                      2.5, "it's", "m\u00e9rge", [1]]) | texts),
        "collection": mostly(st.sampled_from(["docs", "c\u00e9", "it's \"x\""]),
                             st.sampled_from(["", 5, None, 1.5, [], {}])),
        "tenant": mostly(st.none() | texts, json_scalars),
        "id": mostly(ids, st.sampled_from(["", 7, None, False, ["x"]])),
        "vector": mostly(st.lists(float32s | st.integers(-2**24, 2**24), min_size=dim,
                                  max_size=dim),
                         st.lists(st.floats() | st.integers(-2**64, 2**64), max_size=3) |
                         st.lists(json_scalars, max_size=3) | json_scalars |
                         st.lists(float32s.map(str), min_size=dim, max_size=dim) |
                         st.lists(json_values, max_size=3) | beyond_float32),
        "sparse": mostly(st.none(), st.just({"indices": [1], "values": [0.5]})),
        "document": mostly(st.none() | texts | plain_objects | st.lists(plain_scalars, max_size=2),
                           json_values),
        "metadata": mostly(st.none() | plain_objects, json_values),
        "acl": mostly(st.none() | st.lists(texts, max_size=3), json_values),
        "embedding_model": mostly(st.fixed_dictionaries(
            {"name": texts}, optional={"version": st.none() | texts}),
            st.fixed_dictionaries({"name": json_scalars}, optional={"version": json_scalars}) |
            json_values),
        "source": mostly(st.none() | plain_objects, json_values),
        "event_id": mostly(st.none() | texts, json_scalars),
        "event_time": mostly(st.none() | texts, json_scalars),
        "alias": json_values,
    }
    for name, strat in choices.items():
        if draw(st.integers(0, 4)) or name in ("op", "collection", "id"):
            ev[name] = draw(strat)
    ev.update(draw(st.dictionaries(texts, mostly(plain_scalars, json_values), max_size=2)))
    try:
        return orjson.dumps(ev)
    except (TypeError, orjson.JSONEncodeError):  # ints beyond 64 bits
        return json.dumps(ev).encode()


JSON_DIMS = {"docs": 2, "it's \"x\"": 3}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_events())
def test_json_events_agree_with_the_parser(value: bytes) -> None:
    msg = message(value)
    check_agrees(msg, "json", JSON_DIMS)
    ev = orjson.loads(value) if value.startswith(b"{") else {}
    vector = ev.get("vector") if ev.get("op") == "upsert" else None
    if isinstance(vector, list) and reference(msg, "json", JSON_DIMS) is not None:
        assert all(isinstance(x, int | float) for x in vector), \
            f"a vector of non-numbers was accepted: {vector!r}"


@settings(max_examples=400, deadline=None)
@given(st.one_of(beyond_float32, st.lists(json_scalars, max_size=4),
                 st.lists(float32s, min_size=1, max_size=3), json_values),
       st.sampled_from([{}, {"docs": 2}]))
def test_json_vectors_agree_with_the_parser(vector: Any, dims: dict[str, int]) -> None:
    """Vectors alone, the rest of the event valid: every way a list of numbers goes wrong."""
    try:
        value = orjson.dumps({"op": "upsert", "collection": "docs", "id": "x", "vector": vector})
    except (TypeError, orjson.JSONEncodeError):  # ints beyond 64 bits
        value = json.dumps({"op": "upsert", "collection": "docs", "id": "x", "vector": vector}
                           ).encode()
    check_agrees(message(value), "json", dims)


avro_strings = st.none() | texts


@st.composite
def avro_events(draw: st.DrawFn) -> bytes:
    dim = draw(st.sampled_from([2, 2, 3]))
    vec = draw(mostly(st.none() | st.lists(float32s, min_size=dim, max_size=dim).map(
        lambda v: np.asarray(v, dtype="<f4").tobytes()),
        st.binary(max_size=17) | st.lists(st.floats(width=32) | st.sampled_from(
            [float("inf"), float("nan")]), min_size=1, max_size=4).map(
            lambda v: np.asarray(v, dtype="<f4").tobytes())))
    ev = {
        "op": draw(mostly(st.sampled_from(["upsert", "delete"]),
                          st.sampled_from(["tenant.put", "x", "collection.put", "it's",
                                           "m\u00e9rge"]) | texts)),
        "collection": draw(mostly(st.sampled_from(["docs", "c", "it's"]), st.just(""))),
        "tenant": draw(avro_strings), "id": draw(mostly(ids, st.sampled_from([None, ""]))),
        "vector": vec,
        "sparse": draw(mostly(st.none(), st.just({"indices": [1], "values": b"\0\0\0\0"}))),
        "document": draw(avro_strings),
        "metadata": draw(mostly(st.none() | plain_objects.map(json.dumps),
                                texts | json_values.map(json.dumps))),
        "acl": draw(st.none() | st.lists(texts, max_size=3)),
        "embedding_model": draw(st.none() | st.fixed_dictionaries(
            {"name": texts, "version": avro_strings})),
        "source": draw(st.none() | st.fixed_dictionaries(
            {"uri": avro_strings, "chunk": st.none() | st.integers(-2**63, 2**63 - 1),
             "content_sha256": avro_strings})),
        "alias": draw(avro_strings), "schema": None, "settings": None,
        "event_id": draw(avro_strings), "event_time": draw(avro_strings),
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, CHANGE_EVENT_SCHEMA, ev)
    raw = buf.getvalue()
    cut = draw(mostly(st.none(), st.sampled_from([-1, 5])))  # truncated or trailing bytes
    if cut == -1:
        return raw[:-1]
    return raw + b"\x00" if cut == 5 else raw


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(avro_events())
def test_avro_events_agree_with_the_parser(value: bytes) -> None:
    check_agrees(message(value), "avro", {"docs": 2, "it's": 3})


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_random_events_reach_the_fast_path(fmt: str) -> None:
    """The agreement tests above pass trivially if the codec leaves every event to the
    parser: a good share of their events must go through it, taken or refused."""
    judged: list[str | None] = []

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(json_events() if fmt == "json" else avro_events())
    def run(value: bytes) -> None:
        judged.append(check_agrees(message(value), fmt, {"docs": 2}))

    run()
    for how, share in (("taken", 0.15), ("refused", 0.1)):
        n = judged.count(how)
        assert n >= share * len(judged), f"{n} of {len(judged)} {how}"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_never_encoded_differently(value: bytes) -> None:
    for fmt in ("json", "avro"):
        check_agrees(message(value), fmt, {})


@pytest.mark.parametrize("dup", [
    b'{"op": "upsert", "op": "collection.put", "collection": "c", "schema": {"dimension": 3}}',
    b'{"op": "upsert", "collection": "c", "id": "x", "id": "y"}',
])
def test_duplicate_keys_stop_the_pass(dup: bytes) -> None:
    """A key given twice: orjson keeps the last value, and with the op twice that may be a
    collection op's. The parser judges it, and the pass stops right after it."""
    up = orjson.dumps({"op": "upsert", "collection": "c", "id": "x", "vector": [1.0, 2.0]})
    results, stop = eventcodec.encode_batch([message(dup), message(up)], 0,
                                            {"t": False}, {}, MAX, encode_tail,
                                            UNREADABLE)
    assert (results, stop) == ([None], 1)


N_EVENTS = 400


def drive(msgs: list[FakeMessage], fmt: str
          ) -> tuple[list[bytes | tuple[str, str]], int, int]:
    """What capture's ``_take`` does: the codec first, the parser for what it leaves, calling
    the codec again after a stop. Returns each message's datum (or the reason and detail it
    was refused with), the number of codec calls and how many events the codec judged."""
    parser = EventParser(MAX, {})
    out: list[bytes | tuple[str, str]] = []
    start = calls = taken = 0
    while start < len(msgs):
        results, stop = eventcodec.encode_batch(msgs, start, {"t": fmt == "avro"},
                                                parser.dimensions, MAX, encode_tail,
                                                UNREADABLE)
        calls += 1
        for i, res in enumerate(results, start):
            if res is not None:
                out.append(res[4:6] if len(res) == 8 else res[6])
                taken += 1
                continue
            m = msgs[i]
            try:
                out.append(record_datum(parser.parse(m.value(), fmt, key=m.key(),
                                                     offset=m.offset(),
                                                     timestamp=m.timestamp()[1],
                                                     headers=m.headers())))
            except BadEvent as bad:
                out.append((bad.reason, bad.detail))
        start = stop
    return out, calls, taken


@pytest.mark.parametrize("fmt", ["json", "avro"])
@pytest.mark.parametrize("barrier_at", [40, 330, None])
def test_batch_with_a_collection_op_agrees_with_the_parser(fmt: str, barrier_at: int | None
                                                          ) -> None:
    """Capture's way through a batch (``drive``): a collection.put that makes every later
    upsert of its collection the wrong dimension stops the codec's pass right after it, and
    every message ends as the parser alone would have it (the codec refuses the later ones,
    with the parser's reason and detail)."""
    w = Workload(seed=9, collections={"docs": 768}, tenants=["acme"])
    enc = (lambda e: to_avro(e)) if fmt == "avro" else orjson.dumps
    events: list[dict[str, Any]] = [w.upsert("docs", "acme", f"d{i}#0") for i in range(N_EVENTS)]
    if barrier_at is not None:  # docs becomes 4-dimensional: later 768-dim upserts are bad
        events[barrier_at] = {"op": "collection.put", "collection": "docs",
                              "schema": {"dimension": 4}}
    msgs = [message(enc(e), offset=i, headers=[("batch", b"%d" % (i // 50))] if i % 3 else None)
            for i, e in enumerate(events)]
    got, calls, taken = drive(msgs, fmt)
    serial = EventParser(MAX, {})
    want: list[bytes | tuple[str, str]] = []
    for m in msgs:
        try:
            want.append(record_datum(serial.parse(m.value(), fmt, key=m.key(),
                                                  offset=m.offset(), timestamp=m.timestamp()[1],
                                                  headers=m.headers())))
        except BadEvent as bad:
            want.append((bad.reason, bad.detail))
    assert got == want
    assert calls == (1 if barrier_at is None else 2)
    assert taken == N_EVENTS - (barrier_at is not None)  # all but the collection.put
    if barrier_at is not None:  # wrong dimension now
        assert want[barrier_at + 1:] == [
            ("wrong_dimension", "vector has 768 values, collection 'docs' has dimension 4")
        ] * (N_EVENTS - 1 - barrier_at)


class CountingMessage(FakeMessage):
    """Counts how often the codec looks at it (``error()`` is the first thing it asks)."""

    looks = 0

    def error(self) -> Any:
        CountingMessage.looks += 1
        return super().error()


@pytest.mark.parametrize("every", [1, 2, 10, 15, 16, 17, 100])
def test_a_stream_of_barriers_is_read_in_linear_time(every: int) -> None:
    """An event the codec cannot read that may be a collection op ends its pass (only the
    parser may judge it), so a flood of them means a call per event; each call must not read
    the whole rest of the batch again (that made a 1,000-message batch with 100 such events
    50,000 reads)."""
    w = Workload(seed=4, collections={"docs": 8}, tenants=["acme"])
    barrier = b'{"op": "collection.drop", garbage'
    values = [barrier if i % every == every - 1 else orjson.dumps(w.upsert("docs", "acme",
              f"d{i}#0")) for i in range(1_000)]
    msgs: list[FakeMessage] = [CountingMessage("t", 2, i, v, b"k", 1_700_000_000_123)
                               for i, v in enumerate(values)]
    CountingMessage.looks = 0
    got, calls, taken = drive(msgs, "json")
    assert calls == 1_000 // every + (1_000 % every > 0), "a pass ends after each bad event"
    assert taken == 1_000 - 1_000 // every
    assert [not isinstance(d, bytes) for d in got] == [v == barrier for v in values]
    assert CountingMessage.looks <= 2 * 1_000 + 16 * calls, CountingMessage.looks


def encoder(fmt: str) -> Callable[[dict[str, Any]], bytes]:
    return to_avro if fmt == "avro" else orjson.dumps


HEADERS: list[list[tuple[str, bytes | None]] | None] = [
    None, [], [("batch", b"b-7")], [("batch", b"b-7"), ("batch", None), ("", b"")],
    [(f"h{i}", b"v" * i) for i in range(MAX_HEADERS + 4)],
    [("big", b"x" * (MAX_HEADER_BYTES + 1)), ("small", b"s")],
    [("\u00e9t\u00e9", "\U0001d11e".encode() * 100)],
]


@pytest.mark.parametrize("fmt", ["json", "avro"])
@pytest.mark.parametrize("headers", HEADERS)
def test_a_messages_headers_end_its_datum_as_the_parser_keeps_them(
        fmt: str, headers: list[tuple[str, bytes | None]] | None) -> None:
    """Headers (none, duplicates, over either bound) end the codec's datum byte for byte as
    the parser keeps them."""
    enc = encoder(fmt)
    w = Workload(seed=3, collections={"docs": 8}, tenants=["acme"])
    for ev in (w.upsert("docs", "acme", "d1#0"), {"op": "delete", "collection": "docs",
                                                  "tenant": "acme", "id": "d1"}):
        assert check_agrees(message(enc(ev), headers=headers), fmt, {"docs": 8}) == "taken"


class UndecodableHeaders(FakeMessage):
    """confluent-kafka on a header key that is not UTF-8: ``headers()`` raises, and would
    then hand out the half-built list it kept, unless ``set_headers`` replaced it."""

    def headers(self) -> Any:
        if self._headers is None:
            self._headers = [("\ufffd", b"half-built")]
            raise SystemError("<built-in method headers> returned a result with an exception set")
        return self._headers


@pytest.mark.parametrize("fmt", ["json", "avro"])
def test_headers_the_client_cannot_decode_are_kept_as_truncated(fmt: str) -> None:
    enc = encoder(fmt)
    ev = Workload(seed=3, collections={"docs": 8}, tenants=["acme"]).upsert("docs", "acme", "d#0")
    msg = UndecodableHeaders("t", 2, 7, enc(ev), b"k", 1_700_000_000_123)
    results, _ = eventcodec.encode_batch([msg], 0, {"t": fmt == "avro"}, {"docs": 8}, MAX,
                                         encode_tail, UNREADABLE)
    rec: Any = fastavro.schemaless_reader(io.BytesIO(results[0][6]), RECORD_SCHEMA, None)
    assert (rec["headers"], rec["headers_truncated"]) == ([], True)
    assert message_headers(msg) is UNREADABLE, "asked again: what set_headers left"
    assert results[0][6] == verdict(msg, fmt, {"docs": 8}), "the parser's path keeps the same"


HEADER_KEYS = st.text(max_size=8) | st.sampled_from(["batch", "\u00e9t\u00e9", "\ud800x"]) | \
    st.binary(max_size=8)
HEADER_VALUES = st.none() | st.binary(max_size=40) | st.binary(min_size=900, max_size=1500) | \
    st.text(max_size=5)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(HEADER_KEYS, HEADER_VALUES), max_size=22), st.sampled_from(["json", "avro"]))
def test_any_headers_end_the_datum_as_the_reference_keeps_them(
        headers: list[tuple[Any, Any]], fmt: str) -> None:
    """The codec's own encoding of headers (str keys, bytes or null values) and the reference
    it falls back to for anything else (bytes keys, text values, keys with surrogates) equal
    the parser's, across both bounds."""
    ev = Workload(seed=5, collections={"docs": 8}, tenants=["acme"]).upsert("docs", "acme", "d#0")
    msg = message(encoder(fmt)(ev), headers=headers)
    assert check_agrees(msg, fmt, {"docs": 8}) == "taken"


def test_the_codec_bounds_headers_as_kafka_headers_does() -> None:
    assert eventcodec.HEADER_LIMITS == (MAX_HEADERS, MAX_HEADER_BYTES)
