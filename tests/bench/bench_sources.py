"""Capture throughput of the other sources (issue 12) against the native contract, on the same
logical events in the same run: N 768-dim upserts (document, metadata, ACL, tenant) written
three ways, each into its own 3-partition topic:

- ``native``: the ingestion contract as JSON (the native codec's path); ``native-python``
  captures the same topic without the codec (the Python parser, as mapped topics are);
- ``mapped``: a JSON shape of the user's own (``doc_id``, ``embedding``, ``customer``, ``text``,
  ``attrs``, ``readers``, ``action``) through a ``[kafka.mapping.<topic>]`` table;
- ``debezium``: Debezium change events (op ``c``) of a pgvector table, as Connect's JsonConverter
  writes them with ``schemas.enable`` false, and ``debezium-schemas`` with it true (every key
  and value carries its Connect schema). Shapes follow tests/fixtures/debezium (README.md).

Every shape carries the same vector numbers in the same text: pgvector's (float32's shortest
decimal, as Debezium passes it on; Java's ``9.765625E-4`` below 1e-3), so the native topic here
differs from bench_capture's (17-digit doubles): ``--vector-text full`` writes those instead
(Debezium then still gets pgvector's form, which is what it emits).

    python -m tests.bench.bench_sources [--events N] [--rounds R] [--stores file,s3]
                                        [--shapes native,mapped,debezium,debezium-schemas]
                                        [--profile]
    python -m tests.bench.bench_sources --stages [--rounds R]      # no Kafka

Rounds alternate the shapes; each capture is ``CaptureLoop.run(until_caught_up=True)`` timed
as in bench_capture (first message to every event durable). Medians, and each shape's rate
over the native one, are printed as JSON. ``--profile`` then runs one capture of each
non-native shape under cProfile and prints where the time goes (per event). ``--stages``
times each step of the Python path per event without a profiler and without Kafka (parse,
source, vector, ``_to_record``, ``record_datum``) beside the native codec's ``encode_batch``
on the native messages, as bench_eventcodec does.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from typing import Any

import numpy as np
import orjson

from daemon.kafka_headers import UNREADABLE, encode_tail
from daemon.logs import configure_logging
from daemon.workload import Workload
from tests.bench.bench_capture import CoresBusy, capture
from tests.bench.services import Services, services
from tests.bench.workload import produce_n

DIM = 768
PREFIX = "bench"  # Debezium's topic.prefix in the envelopes' schema names and source.name
SHAPES = ("native", "native-python", "mapped", "debezium", "debezium-schemas")

MAPPING = {"op": "action", "op_map": {"index": "upsert", "remove": "delete"},
           "collection": "index_name", "tenant": "customer", "id": "doc_id",
           "vector": "embedding", "document": "text", "metadata": "attrs", "acl": "readers"}
"""The mapped shape's ``[kafka.mapping.<topic>]`` table."""

DEBEZIUM_TABLE = {"collection": "docs", "tenant": "tenant", "document": "doc", "acl": "acl",
                  "metadata": "meta"}
"""``[kafka.debezium."public.docs"]`` for the table
``docs(id text PRIMARY KEY, tenant text, embedding vector(768), doc text, acl text[],
meta jsonb)``."""


def java_double(x: float) -> str:
    """Java's ``Double.toString`` (what Connect's JsonConverter writes for a double): the
    shortest decimal, in E notation below 1e-3 and from 1e7."""
    if x == 0 or 1e-3 <= abs(x) < 1e7:
        text = repr(x)
        return text if "." in text or "e" in text else text + ".0"
    mantissa, exp = np.format_float_scientific(x, unique=True, trim="0").split("e")
    if "." not in mantissa or mantissa.endswith("."):
        mantissa = mantissa.rstrip(".") + ".0"
    return f"{mantissa}E{int(exp)}"


def logical_events(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n`` upserts: the contract's fields, the vector as float32 values."""
    w = Workload(seed=seed, collections={"docs": DIM}, tenants=["acme", "globex"])
    out = []
    for i in range(n):
        ev = w.upsert("docs", w.tenants[i % 2], f"doc-{i}#0")
        out.append({k: ev[k] for k in ("op", "collection", "tenant", "id", "vector", "document",
                                       "metadata", "acl")})
    return out


def short_vector(vec: list[float]) -> list[float]:
    """pgvector's text of a float32 vector (the shortest decimal of each), read as doubles."""
    return [float(str(v)) for v in np.asarray(vec, dtype=np.float32)]


def native_value(ev: dict[str, Any], vector: list[float]) -> bytes:
    return orjson.dumps({**ev, "vector": vector})


def mapped_value(ev: dict[str, Any], vector: list[float]) -> bytes:
    return orjson.dumps({"action": "index", "index_name": ev["collection"],
                         "customer": ev["tenant"], "doc_id": ev["id"], "embedding": vector,
                         "text": ev["document"], "attrs": ev["metadata"],
                         "readers": ev["acl"]})


def _column(type_: str, field: str, optional: bool = True, **more: Any) -> dict[str, Any]:
    return {"type": type_, **more, "optional": optional, "field": field}


ROW_FIELDS = [
    _column("string", "id", optional=False),
    _column("string", "tenant"),
    {"type": "array", "items": {"type": "double", "optional": False}, "optional": True,
     "name": "io.debezium.data.DoubleVector", "version": 1, "field": "embedding"},
    _column("string", "doc"),
    {"type": "array", "items": {"type": "string", "optional": True}, "optional": True,
     "field": "acl"},
    {"type": "string", "optional": True, "name": "io.debezium.data.Json", "version": 1,
     "field": "meta"},
]
SOURCE_FIELDS = [
    _column("string", "version", optional=False), _column("string", "connector", optional=False),
    _column("string", "name", optional=False), _column("int64", "ts_ms", optional=False),
    {"type": "string", "optional": True, "name": "io.debezium.data.Enum", "version": 1,
     "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,"
                               "last,false,incremental"}, "default": "false",
     "field": "snapshot"},
    _column("string", "db", optional=False), _column("string", "sequence"),
    _column("int64", "ts_us"), _column("int64", "ts_ns"),
    _column("string", "schema", optional=False), _column("string", "table", optional=False),
    _column("int64", "txId"), _column("int64", "lsn"), _column("int64", "xmin"),
    _column("string", "origin"), _column("int64", "origin_lsn"),
]


def envelope_schema() -> dict[str, Any]:
    """The Connect schema JsonConverter puts beside each value (``schemas.enable=true``)."""
    row = {"type": "struct", "fields": ROW_FIELDS, "optional": True,
           "name": f"{PREFIX}.public.docs.Value"}
    return {"type": "struct", "fields": [
        {**row, "field": "before"}, {**row, "field": "after"},
        {"type": "struct", "fields": SOURCE_FIELDS, "optional": False,
         "name": "io.debezium.connector.postgresql.Source", "version": 1, "field": "source"},
        {"type": "struct", "fields": [_column("string", "id", optional=False),
                                      _column("int64", "total_order", optional=False),
                                      _column("int64", "data_collection_order", optional=False)],
         "optional": True, "name": "event.block", "version": 1, "field": "transaction"},
        _column("string", "op", optional=False), _column("int64", "ts_ms"),
        _column("int64", "ts_us"), _column("int64", "ts_ns")],
        "optional": False, "name": f"{PREFIX}.public.docs.Envelope", "version": 2}


KEY_SCHEMA = {"type": "struct", "fields": [_column("string", "id", optional=False)],
              "optional": False, "name": f"{PREFIX}.public.docs.Key"}


def jsonb_text(obj: dict[str, Any]) -> str:
    """A jsonb value as PostgreSQL prints it (and Debezium sends it, as a string): keys
    shortest first, then bytewise; ", " and ": " between."""
    ordered = dict(sorted(obj.items(), key=lambda kv: (len(kv[0].encode()), kv[0].encode())))
    return json.dumps(ordered, ensure_ascii=False)


def debezium_message(ev: dict[str, Any], vector: list[float], i: int, schemas: bool
                     ) -> tuple[bytes, bytes]:
    """(key, value) of the insert of ``ev`` as Debezium 3.6 writes it through JsonConverter."""
    commit_us = 1_796_585_903_623_801 + i * 2_000
    lsn = 29_448_136 + i * 3_400
    source = {"version": "3.6.1.Final", "connector": "postgresql", "name": PREFIX,
              "ts_ms": commit_us // 1000, "snapshot": "false", "db": "vectors",
              "sequence": orjson.dumps([str(lsn - 3_400), str(lsn)]).decode(),
              "ts_us": commit_us, "ts_ns": commit_us * 1000, "schema": "public",
              "table": "docs", "txId": 760 + i, "lsn": lsn, "xmin": None, "origin": None,
              "origin_lsn": None}
    after = {"id": ev["id"], "tenant": ev["tenant"], "embedding": "@VECTOR@",
             "doc": ev["document"], "acl": ev["acl"],
             "meta": jsonb_text(ev["metadata"])}
    processed_ns = commit_us * 1000 + 501_709_863
    payload = {"before": None, "after": after, "source": source, "transaction": None,
               "op": "c", "ts_ms": processed_ns // 1_000_000, "ts_us": processed_ns // 1000,
               "ts_ns": processed_ns}
    key: Any = {"id": ev["id"]}
    value: Any = payload
    if schemas:
        key = {"schema": KEY_SCHEMA, "payload": key}
        value = {"schema": envelope_schema(), "payload": payload}
    text = "[" + ",".join(java_double(x) for x in vector) + "]"
    return orjson.dumps(key), orjson.dumps(value).replace(b'"@VECTOR@"', text.encode())


def pools(shapes: list[str], size: int, full_vectors: bool
          ) -> dict[str, tuple[list[bytes], list[bytes] | None]]:
    """shape -> (values, keys or None), the i-th of each the same logical event."""
    events = logical_events(size)
    out: dict[str, tuple[list[bytes], list[bytes] | None]] = {}
    for shape in shapes:
        values, keys = [], []
        for i, ev in enumerate(events):
            short = short_vector(ev["vector"])
            vector = ev["vector"] if full_vectors else short
            if shape in ("native", "native-python"):
                values.append(native_value(ev, vector))
            elif shape == "mapped":
                values.append(mapped_value(ev, vector))
            else:
                k, v = debezium_message(ev, short, i, schemas=shape == "debezium-schemas")
                keys.append(k)
                values.append(v)
        out[shape] = (values, keys or None)
    return out


def kafka_settings(shape: str, topic: str) -> tuple[str, dict[str, Any]]:
    """(format, more [kafka] settings) capturing ``shape``."""
    if shape in ("native", "native-python"):
        return "json", {}
    if shape == "mapped":
        return "json", {"mapping": {topic: MAPPING}}
    return "debezium", {"debezium": {"public.docs": DEBEZIUM_TABLE}}


def profile(svc: Services, topic: str, shape: str, n: int, top: int = 18) -> dict[str, Any]:
    """One capture under cProfile: the functions with the most own time, in us per event."""
    fmt, extra = kafka_settings(shape, topic)
    prof = cProfile.Profile()
    prof.enable()
    seconds = capture(svc, topic, fmt, n, "file", kafka=extra)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, name), (_cc, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{file.rsplit('/', 2)[-2]}/{file.rsplit('/', 1)[-1]}:{line}" if "/" in file \
            else file
        rows.append({"function": f"{where}({name})", "calls": calls,
                     "own_us_per_event": round(tottime / n * 1e6, 2),
                     "cum_us_per_event": round(cumtime / n * 1e6, 2)})
    rows.sort(key=lambda r: -r["own_us_per_event"])
    by_cum = sorted(rows, key=lambda r: -r["cum_us_per_event"])
    return {"events": n, "seconds_under_profile": round(seconds, 3),
            "top_own": rows[:top], "top_cumulative": by_cum[:top]}


STAGES = 2_000  # events per timing (the pool, cycled)


def _per_event(fn: Any, items: list[Any], rounds: int) -> float:
    """Median over rounds of the microseconds ``fn`` takes per item."""
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        for item in items:
            fn(item)
        times.append((time.perf_counter() - began) / len(items) * 1e6)
    return round(statistics.median(times), 2)


def stages(rounds: int) -> dict[str, Any]:
    """Microseconds per event of each step, for each shape (no Kafka, no profiler)."""
    from daemon.changelog.segment import record_datum
    from daemon.config import config_from_mapping
    from daemon.events import EventParser
    from daemon.native import eventcodec
    from daemon.sources import sources_for
    from daemon.sources.debezium import _unwrap
    from daemon.sources.values import float32_bytes
    from tests.component.fakes import FakeMessage

    out: dict[str, Any] = {}
    for shape, (values, keys) in pools(list(SHAPES), 500, False).items():
        if shape == "native-python":
            continue
        fmt, extra = kafka_settings(shape, "t")
        cfg = config_from_mapping({"kafka": {"bootstrap_servers": "-", "topics": ["t"],
                                             "format": fmt, **extra},
                                   "storage": {"url": "file:///unused"}}, environ={})
        source = sources_for(cfg.kafka)["t"]
        parser = EventParser(1 << 24, {"docs": DIM})
        msgs = [(keys[i % len(keys)] if keys else f"doc-{i}".encode(), values[i % len(values)])
                for i in range(STAGES)]
        docs = [orjson.loads(v) for _, v in msgs]
        vectors = [(_unwrap(d)[0]["after"]["embedding"] if shape.startswith("debezium")
                    else d["embedding" if shape == "mapped" else "vector"]) for d in docs]
        decoded = [source.decode(k, v) for k, v in msgs]
        records = [parser.parse_from(source, v, key=k, offset=i, timestamp=0)
                   for i, (k, v) in enumerate(msgs)]
        row: dict[str, Any] = {
            "value_bytes": round(statistics.mean(len(v) for v in values)),
            "orjson_loads_value": _per_event(orjson.loads, [v for _, v in msgs], rounds),
            "vector_list_to_float32_struct": _per_event(float32_bytes, vectors, rounds),
            "source_decode": _per_event(lambda kv, s=source: s.decode(*kv), msgs, rounds),
            "to_record": _per_event(lambda d, p=parser: p._to_record(d.event, d.fmt, d.extra,
                                                                    d.mapped), decoded, rounds),
            "record_datum": _per_event(record_datum, records, rounds),
            "parse_from_and_record_datum": _per_event(
                lambda kv, p=parser, s=source: record_datum(p.parse_from(
                    s, kv[1], key=kv[0], offset=0, timestamp=0)), msgs, rounds),
        }
        if shape == "native":
            from daemon.events import _vector_bytes
            row["vector_list_to_float32_contract"] = _per_event(
                lambda v: _vector_bytes(v, "vector"), vectors, rounds)
            fake = [FakeMessage("t", 0, i, v, k, 1_000 + i) for i, (k, v) in enumerate(msgs)]
            times = []
            for _ in range(rounds):
                began = time.perf_counter()
                for i in range(0, len(fake), 1000):
                    eventcodec.encode_batch(fake[i:i + 1000], 0, {"t": False}, {"docs": DIM},
                                            1 << 24, encode_tail, UNREADABLE)
                times.append((time.perf_counter() - began) / len(fake) * 1e6)
            row["native_codec_encode_batch"] = round(statistics.median(times), 2)
        out[shape] = row
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stores", default="file")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--vector-text", choices=("short", "full"), default="short",
                    help="native and mapped vectors: pgvector's shortest float32 text (as "
                         "Debezium's), or the 17-digit doubles bench_capture writes")
    ap.add_argument("--stages", action="store_true",
                    help="only time each step per event, without Kafka or a profiler")
    ap.add_argument("--profile", action="store_true",
                    help="then profile one capture of each non-native shape (file://)")
    args = ap.parse_args(argv)
    configure_logging("warning", "console")  # figures on stdout, nothing else
    if args.stages:
        result = stages(args.rounds)
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return result
    shapes = args.shapes.split(",")
    assert set(shapes) <= set(SHAPES), shapes
    results: dict[str, Any] = {}
    with services() as svc:
        topics: dict[str, str] = {}
        for shape, (values, keys) in pools(shapes, 500, args.vector_text == "full").items():
            if shape == "native-python" and "native" in topics:
                topics[shape] = topics["native"]  # the same messages, another consumer group
            else:
                topics[shape] = svc.topic(partitions=3)
                produce_n(svc.bootstrap, topics[shape], values, args.events, keys=keys)
            results.setdefault("message_bytes", {})[shape] = round(
                statistics.mean(len(v) for v in values))
        for store in args.stores.split(","):
            took: dict[str, list[float]] = {s: [] for s in shapes}
            cores: dict[str, list[float]] = {s: [] for s in shapes}
            for r in range(args.rounds):
                for shape in shapes:
                    fmt, extra = kafka_settings(shape, topics[shape])
                    with CoresBusy() as busy:
                        took[shape].append(capture(svc, topics[shape], fmt, args.events, store,
                                                   python_only=shape == "native-python",
                                                   kafka=extra))
                    cores[shape].append(busy.cores)
                print(f"{store} round {r}: " + ", ".join(
                    f"{s} {args.events / took[s][-1]:,.0f}/s ({cores[s][-1]:.2f} cores)"
                    for s in shapes), file=sys.stderr)
            rates = {s: args.events / statistics.median(took[s]) for s in shapes}
            out: dict[str, Any] = {"events": args.events, "rounds": args.rounds,
                                   "vector_text": args.vector_text}
            for s in shapes:
                out[s] = {"events_per_s": round(rates[s]),
                          "cores_busy": round(statistics.median(cores[s]), 2),
                          "per_round_events_per_s": [round(args.events / t) for t in took[s]]}
                if "native" in rates and s != "native":
                    out[s]["ratio_to_native"] = round(rates[s] / rates["native"], 3)
            results[store] = out
        if args.profile:
            results["profile"] = {s: profile(svc, topics[s], s, args.events)
                                  for s in shapes if not s.startswith("native")}
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return results


if __name__ == "__main__":
    main()
