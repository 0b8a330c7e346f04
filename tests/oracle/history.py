"""Random event histories written straight into a file:// repository, and the oracle: a plain
dictionary replay of the same history up to a time T."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.changelog.segment import encode_segment
from daemon.changelog.sidecar import Sidecar
from daemon.changelog.watermark import Watermark
from daemon.events import EventParser

TOPIC = "ingest"
COLLECTIONS = ("docs", "img")
TENANTS = ("", "acme", "globex")


@dataclass
class History:
    partitions: int
    events: list[list[dict[str, Any]]]
    """Per partition, change-log records in offset order (timestamps non-decreasing)."""

    @property
    def times(self) -> list[int]:
        return sorted({e["timestamp"] for p in self.events for e in p})


def generate(seed: int, n: int, partitions: int = 3, control_rate: float = 0.08,
             wrong_dimension_rate: float = 0.0) -> History:
    """``wrong_dimension_rate``: that share of upserts has one value too many (captured
    unchecked, as capture does before it knows the collection's dimension)."""
    rng = random.Random(seed)
    parser = EventParser(1 << 20)
    per_p: list[list[dict[str, Any]]] = [[] for _ in range(partitions)]
    clock = [1_000] * partitions
    dims = {"docs": 3, "img": 2}

    def partition_of(key: str) -> int:
        return sum(key.encode()) % partitions

    for i in range(n):
        roll = rng.random()
        coll = rng.choice(COLLECTIONS)
        if roll < control_rate:
            op = rng.choice(["collection.put", "collection.drop", "alias.put", "alias.drop",
                             "tenant.put", "tenant.drop"])
            ev: dict[str, Any] = {"op": op, "collection": coll}
            if op == "collection.put":
                ev["schema"] = {"dimension": dims[coll], "metric": "cosine", "v": i}
            elif op.startswith("alias"):
                ev["alias"] = rng.choice(["live", "prev"])
            elif op.startswith("tenant"):
                ev["tenant"] = rng.choice(TENANTS[1:])
                if op == "tenant.put":
                    ev["settings"] = {"tier": rng.choice(["a", "b"]), "i": i}
            key = coll
        else:
            rid = f"r{rng.randrange(12)}"
            tenant = rng.choice(TENANTS)
            if roll < control_rate + 0.17:
                ev = {"op": "delete", "collection": coll, "tenant": tenant, "id": rid}
            else:
                dim = dims[coll]
                if wrong_dimension_rate and rng.random() < wrong_dimension_rate:
                    dim += 1  # (no draw otherwise: the histories of a seed stay as they were)
                ev = {"op": "upsert", "collection": coll, "tenant": tenant, "id": rid,
                      "vector": [rng.uniform(-1, 1) for _ in range(dim)],
                      "metadata": {"i": i, "k": rng.choice("xyz")},
                      "document": rng.choice([f"text {i}", {"title": f"t{i}"}, None]),
                      "acl": rng.choice([None, [], [f"g:{tenant}"]]),
                      "embedding_model": {"name": "m", "version": str(rng.randrange(3))}}
                ev = {k: v for k, v in ev.items() if v is not None}
            key = rid
        p = partition_of(key)
        clock[p] += rng.choice([0, 0, 1, 2, 5])  # ties are common
        parser.dimensions.clear()  # captured unchecked: the log says what the stream said
        rec = parser.parse(orjson.dumps(ev), "json", key=key.encode(), offset=len(per_p[p]),
                           timestamp=clock[p])
        per_p[p].append(rec)
    return History(partitions, per_p)


def write_log(repo: Repository, history: History, seed: int, upto: dict[int, int] | None = None
              ) -> None:
    """Segments at random boundaries (and, sometimes, an overlapping duplicate), sidecars and
    watermarks, as capture would leave them. ``upto`` limits offsets written per partition."""
    rng = random.Random(seed)
    repo.ensure_initialized()
    for p, events in enumerate(history.events):
        end = len(events) if upto is None else upto.get(p, len(events))
        start = 0
        while start < end:
            stop = min(end, start + rng.randint(1, 8))
            key = SegmentKey(TOPIC, p, start, stop)
            data = encode_segment(key, events[start:stop])
            repo.put_segment(key, data)
            repo.put_sidecar(Sidecar.build(key, events[start:stop], data, 0))
            start = stop
        valid = max((e["timestamp"] for e in events[:end]), default=0)
        repo.write_watermark(Watermark(TOPIC, p, end, valid, 0, "test"))


def oracle(history: History, until_ms: int) -> tuple[dict[tuple[str, str, str], dict[str, Any]],
                                                    dict[str, Any]]:
    """Plain replay: the winning event per key among events at or before ``until_ms``; drops
    remove records last written at or before them, and a record whose dimension is not its
    collection's (as the catalog says at ``until_ms``) is left out. Returns (records, live
    catalog)."""
    records, catalog, _ = replay(history, until_ms)
    return records, catalog


def replay(history: History, until_ms: int
           ) -> tuple[dict[tuple[str, str, str], dict[str, Any]], dict[str, Any],
                      set[tuple[str, str, str]]]:
    """``oracle``, and the keys it left out for their dimension."""
    best: dict[tuple[str, str, str], tuple[tuple[int, str, int, int], dict[str, Any]]] = {}
    coll_drop: dict[str, int] = {}
    tenant_drop: dict[tuple[str, str], int] = {}
    collections: dict[str, tuple[tuple[int, str, int, int], Any]] = {}
    aliases: dict[str, tuple[tuple[int, str, int, int], Any]] = {}
    tenants: dict[tuple[str, str], tuple[tuple[int, str, int, int], Any]] = {}
    for p, events in enumerate(history.events):
        for ev in events:
            if ev["timestamp"] > until_ms:
                break
            ver = (ev["timestamp"], TOPIC, p, ev["offset"])
            op, coll = ev["op"], ev["collection"]

            def lww(table: dict[Any, Any], key: Any, value: Any,
                    ver: tuple[int, str, int, int] = ver) -> None:
                if key not in table or ver > table[key][0]:
                    table[key] = (ver, value)

            if op in ("upsert", "delete"):
                lww(best, (coll, ev["tenant"], ev["id"]), ev)
            elif op == "collection.put":
                lww(collections, coll, orjson.loads(ev["schema"]))
            elif op == "collection.drop":
                lww(collections, coll, None)
                coll_drop[coll] = max(ev["timestamp"], coll_drop.get(coll, 0))
            elif op == "alias.put":
                lww(aliases, ev["alias"], coll)
            elif op == "alias.drop":
                lww(aliases, ev["alias"], None)
            elif op == "tenant.put":
                lww(tenants, (coll, ev["tenant"]), orjson.loads(ev["settings"]))
            elif op == "tenant.drop":
                lww(tenants, (coll, ev["tenant"]), None)
                pair = (coll, ev["tenant"])
                tenant_drop[pair] = max(ev["timestamp"], tenant_drop.get(pair, 0))
    records: dict[tuple[str, str, str], dict[str, Any]] = {}
    left_out: set[tuple[str, str, str]] = set()
    for key, (_, ev) in best.items():
        dropped = max(coll_drop.get(key[0], -1), tenant_drop.get((key[0], key[1]), -1))
        if ev["op"] == "upsert" and ev["timestamp"] > dropped:
            schema = collections.get(key[0], (None, None))[1]
            want = schema["dimension"] if schema is not None else None
            if want is not None and ev["dimension"] is not None and ev["dimension"] != want:
                left_out.add(key)
            else:
                records[key] = ev
    live_aliases = {a: c for a, (ver, c) in aliases.items()
                    if c is not None and ver[0] > coll_drop.get(c, -1)}
    live_tenants: dict[str, dict[str, Any]] = {}
    for (c, t), (ver, s) in tenants.items():
        if s is not None and ver[0] > coll_drop.get(c, -1):
            live_tenants.setdefault(c, {})[t] = s
    catalog = {"collections": {c: s for c, (_, s) in collections.items() if s is not None},
               "aliases": live_aliases, "tenants": live_tenants}
    return records, catalog, left_out
