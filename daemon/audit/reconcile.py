"""A live vector database compared with a state of the backup: records the engine holds that
the state lacks (``extra``), records the state holds that the engine lacks (``missing``), and
records both hold with different content (``changed``, with the parts: ``vector``,
``payload``, ``acl``). ``vecwal reconcile`` compares with the state at valid-through (drift:
writes that bypassed the pipeline, deletes or updates the engine never applied); ``restore
--preview`` with the state a restore is about to write (there ``extra`` is what the restore
removes and ``missing`` what it adds).

How, per collection (``Comparison``):

1. ``EngineSide.read``: the engine's collection is scrolled once with its own read-all API
   (``Engine.scan``, the path validation re-reads a restore by, in pages) and each point is
   reduced to its record key (tenant, id, from the payload, as the engine sinks store them)
   and three 64-bit content hashes (``part_hashes``): the vector's float32 little-endian
   bytes; the payload (document, metadata, embedding model and source, as JSON values with
   sorted keys); the acl. Memory holds the keys and hashes, never the vectors. The hashes are
   Python's own (``hash`` of the bytes, keyed SipHash): both sides are hashed in this process
   and compared here, never kept or sent, and it costs a fifth of a blake2b call.
2. ``Comparison.feed``: the state's records (any iterable, in any order; a restore gives them
   bucket by bucket) are hashed alike and looked up: absent is ``missing``, equal hashes are
   the same record, different hashes are ``changed`` in those parts. The keys looked up are
   removed; what remains at the end is ``extra``.
3. An engine that keeps cosine vectors normalised (Qdrant) may give back the vector as written
   or normalised (qdrant-client's local mode normalises in memory but gives back the vectors
   as uploaded once the directory is opened again): both the state's bytes and its vector
   normalised in float32 are taken. Where neither matches and the engine can re-read points
   by key (``fetch``: Qdrant, Chroma), the point is re-read and compared within float32
   rounding (``same_vector``, as validation does), so an engine that rounds (a Qdrant server
   normalising otherwise, Chroma's local store in the last bit) does not show as drift. Milvus,
   LanceDB and pgvector give back the float32 values as written: their bytes are compared.

The same record restored by vecwal hashes equal on both sides: the payload parts are what
``to_payload`` stores as plain fields, which a pipeline writing the same layout also writes.
What only vecwal keeps (``vecwal``: event id, exact texts, version) is not compared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from daemon.changelog.repository import Repository
from daemon.objectstore import ObjectStore
from daemon.restore.executor import execute
from daemon.restore.planner import RestorePlan, Scope, gather, make_plan
from daemon.restore.sinks import Sink, WrittenState
from daemon.restore.sinks.engine import Engine, metric_of, same_vector, target_name

KINDS = ("extra", "missing", "changed")
PARTS = ("vector", "payload", "acl")
SAMPLE = 10
"""Ids kept per kind and collection, for the report."""
_FETCH = 1024


Hashes = tuple[int, int, int]
"""A record's content hashes: vector, payload, acl."""


def part_hashes(vector: bytes, document: Any, metadata: Any, model: Any, source: Any,
                acl: Any) -> Hashes:
    """The three content hashes (vector, payload, acl), 8 bytes each, of one record:
    ``vector`` as float32 little-endian bytes, the others as JSON values."""
    payload = orjson.dumps([document, metadata, model, source], option=orjson.OPT_SORT_KEYS)
    return hash(vector), hash(payload), hash(orjson.dumps(acl))


def state_hashes(rec: dict[str, Any]) -> Hashes:
    """``part_hashes`` of a state record (a snapshot record dict: metadata and source as
    JSON text, the vector as bytes)."""
    meta, src = rec.get("metadata"), rec.get("source")
    return part_hashes(rec.get("vector") or b"", rec.get("document"),
                       None if meta is None else orjson.loads(meta), rec.get("embedding_model"),
                       None if src is None else orjson.loads(src), rec.get("acl"))


def normalised_hash(vector: bytes) -> int:
    """The vector hash of ``vector`` normalised in float32 (as a cosine engine keeps it)."""
    v = np.frombuffer(vector, dtype="<f4")
    norm = np.linalg.norm(v)
    return hash((v / norm).astype("<f4").tobytes() if norm > 0 else vector)


def engine_hashes(fields: dict[str, Any], vector: np.ndarray) -> Hashes:
    """``part_hashes`` of a point as ``Engine.scan`` gives it."""
    return part_hashes(vector.astype("<f4", copy=False).tobytes(), fields.get("document"),
                       fields.get("metadata"), fields.get("embedding_model"),
                       fields.get("source"), fields.get("acl"))


def differing(a: Hashes, b: Hashes) -> list[str]:
    """The parts whose hashes differ."""
    return [p for p, x, y in zip(PARTS, a, b, strict=True) if x != y]


def _parts(got: Hashes, want: Hashes, norm: int | None, recheck: bool) -> list[str] | None:
    """The parts in which an engine point (``got``) differs from the state record (``want``);
    ``norm``: the record's normalised vector hash, for an engine that normalises. None: the
    vector differs from both forms and the engine can be re-read (``recheck``), to compare it
    within float32 rounding."""
    parts = differing(got, want)
    if parts and parts[0] == "vector":
        if norm is not None and got[0] == norm:
            return parts[1:]
        if recheck:
            return None
    return parts


@dataclass
class CollectionDrift:
    """One collection compared: counts per kind and tenant, parts of the changed, samples."""

    collection: str
    target: str
    """The engine's collection it was compared with."""
    engine_records: int = 0
    state_records: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    parts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PARTS, 0))
    tenants: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {k: [] for k in KINDS})
    unkeyed: int = 0
    """Points without a tenant or id in their payload: counted as ``extra``."""
    seconds: float = 0.0

    @property
    def drift(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, tenant: str, ident: str, parts: list[str] | None = None) -> None:
        self.counts[kind] += 1
        per = self.tenants.setdefault(tenant, dict.fromkeys(KINDS, 0))
        per[kind] += 1
        for p in parts or ():
            self.parts[p] += 1
        if len(self.samples[kind]) < SAMPLE:
            one: dict[str, Any] = {"tenant": tenant, "id": ident}
            if parts is not None:
                one["parts"] = parts
            self.samples[kind].append(one)

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "target": self.target,
                "engine_records": self.engine_records, "state_records": self.state_records,
                "drift": self.drift, **self.counts, "parts": dict(self.parts),
                "tenants": {t: c for t, c in sorted(self.tenants.items()) if any(c.values())},
                "samples": self.samples, "unkeyed": self.unkeyed,
                "seconds": round(self.seconds, 3)}


class EngineSide:
    """One engine collection read for comparison: (tenant, id) -> (point key, hashes)."""

    def __init__(self, engine: Engine, target: str, tenants: frozenset[str] | None) -> None:
        self.engine, self.target, self.tenants = engine, target, tenants
        self.held: dict[tuple[str, str], tuple[str, Hashes]] = {}
        self.unkeyed: list[str] = []

    def read(self) -> int:
        """Scroll the collection (nothing when it does not exist); the points read in scope
        (of the tenants asked, and those without a tenant or id)."""
        if not self.engine.exists(self.target):
            return 0
        tenants, held = self.tenants, self.held
        for key, fields, vec in self.engine.scan(self.target):
            tenant, ident = fields.get("tenant"), fields.get("id")
            if not isinstance(tenant, str) or not isinstance(ident, str):
                self.unkeyed.append(key)
                continue
            if tenants is not None and tenant not in tenants:
                continue
            held[(tenant, ident)] = (key, engine_hashes(fields, vec))
        return len(held) + len(self.unkeyed)


class Comparison:
    """Compare what an engine holds with a state, collection by collection: ``open`` a
    collection (reads the engine's side), ``feed`` the state's records, ``close`` it (what the
    engine still holds is ``extra``). ``normalises`` says whether the engine keeps this
    collection's vectors normalised (a cosine collection in Qdrant)."""

    def __init__(self, engine: Engine, tenants: frozenset[str] | None = None) -> None:
        self.engine = engine
        self.tenants = tenants
        self.done: dict[str, CollectionDrift] = {}
        self._open: dict[str, tuple[CollectionDrift, EngineSide, list[Any]]] = {}
        self._began: dict[str, float] = {}
        self._metric: dict[str, str] = {}

    def open(self, collection: str, target: str, metric: str | None = None) -> None:
        """Read the engine's side of ``collection`` (once). ``metric``: the state's schema's
        (cosine when not given)."""
        if metric is not None:
            self._metric[collection] = metric
        if collection in self._open or collection in self.done:
            return
        self._began[collection] = time.monotonic()
        side = EngineSide(self.engine, target, self.tenants)
        drift = CollectionDrift(collection, target)
        drift.engine_records = side.read()
        drift.unkeyed = len(side.unkeyed)
        self._open[collection] = (drift, side, [])

    def normalises(self, collection: str) -> bool:
        return self._metric.get(collection, "cosine") == "cosine" \
            and self.engine.normalizes_cosine

    def feed(self, collection: str, records: Iterable[dict[str, Any]]) -> WrittenState:
        """Compare the state's records of ``collection`` (opened) with the engine's; what
        was fed (count and tenants; no digest)."""
        drift, side, recheck = self._open[collection]
        normalises = self.normalises(collection)
        can_recheck = hasattr(self.engine, "fetch")
        held, tenants = side.held, self.tenants
        count = 0
        per_tenant: dict[str, int] = {}
        for rec in records:
            tenant, ident = rec["tenant"], rec["id"]
            if tenants is not None and tenant not in tenants:
                continue
            count += 1
            per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
            got = held.pop((tenant, ident), None)
            if got is None:
                drift.add("missing", tenant, ident)
                continue
            want = state_hashes(rec)
            if got[1] == want:
                continue
            vec = rec.get("vector") or b""
            norm = normalised_hash(vec) if normalises and got[1][0] != want[0] else None
            parts = _parts(got[1], want, norm, can_recheck)
            if parts is None:  # rounding? re-read it (step 3)
                recheck.append((tenant, ident, got[0], vec, differing(got[1], want)))
            elif parts:
                drift.add("changed", tenant, ident, parts)
        drift.state_records += count
        return WrittenState(count, "0" * 32, per_tenant)

    def close(self, collection: str) -> CollectionDrift:
        drift, side, recheck = self._open.pop(collection)
        self._recheck(side, drift, recheck, self.normalises(collection))
        for (tenant, ident), _ in side.held.items():
            drift.add("extra", tenant, ident)
        for key in side.unkeyed:
            drift.add("extra", "", key)
        drift.seconds = time.monotonic() - self._began.pop(collection)
        self.done[collection] = drift
        return drift

    def close_all(self) -> dict[str, CollectionDrift]:
        for name in list(self._open):
            self.close(name)
        return self.done

    def _recheck(self, side: EngineSide, drift: CollectionDrift, recheck: list[Any],
                 normalises: bool) -> None:
        """The points whose vector hashed otherwise, re-read and compared within float32
        rounding (as written, or normalised where the engine normalises)."""
        fetch = getattr(self.engine, "fetch", None)
        got: dict[str, np.ndarray] = {}
        if fetch is not None:
            for i in range(0, len(recheck), _FETCH):
                keys = [r[2] for r in recheck[i:i + _FETCH]]
                got.update((k, v) for k, _, v in fetch(side.target, keys))
        for tenant, ident, key, vec, parts in recheck:
            have = got.get(key)
            want = np.frombuffer(vec, dtype="<f4")
            if have is not None and (same_vector(have, want, False) or (
                    normalises and same_vector(have, want, True))):
                parts = parts[1:]
            if parts:
                drift.add("changed", tenant, ident, parts)


def compare(engine: Engine, states: Iterable[tuple[str, Iterable[dict[str, Any]]]],
            catalog: dict[str, Any], targets: dict[str, str] | None = None,
            tenants: frozenset[str] | None = None) -> dict[str, CollectionDrift]:
    """Compare ``engine`` with a state given as (collection, records) pairs, one per
    collection (what a rollback is about to write, say). ``catalog`` is the state's live
    catalog (collections' schemas: the metric); ``targets`` the engine's name of each
    collection (default: the same). Every catalog collection is compared, fed or not."""
    targets = targets or {}
    cmp = Comparison(engine, tenants)
    schemas = catalog.get("collections", {})

    def opened(name: str) -> None:
        cmp.open(name, targets.get(name, name), metric_of(schemas.get(name) or {}))

    for name, records in states:
        opened(name)
        cmp.feed(name, records)
        cmp.close(name)
    for name in sorted(schemas):
        if name not in cmp.done:
            opened(name)
            cmp.close(name)
    return cmp.done


class ComparingSink:
    """A restore sink that writes nothing: the executor streams it the state it would write
    (catalog, then each collection's buckets in order) and each collection is compared with
    the engine's (``Comparison``). ``rename``/``prefix`` name the engine's collections as the
    engine sink would (``EngineSink.target``)."""

    parallel_safe = False
    writes = False
    """The executor logs "collection compared", not "restored"."""

    def __init__(self, engine: Engine, tenants: frozenset[str] | None = None,
                 rename: dict[str, str] | None = None, prefix: str = "",
                 also: Iterable[str] = ()) -> None:
        self.engine = engine
        self.also = sorted(also)
        """Collections compared even if the state has none of them (all ``extra``)."""
        self.name = f"comparison with {engine.name}"
        self.comparison = Comparison(engine, tenants)
        self.rename, self.prefix = dict(rename or {}), prefix
        self.catalog: dict[str, Any] = {}
        self._current: str | None = None

    def target(self, collection: str) -> str:
        """Where a restore with the same ``rename`` and ``prefix`` writes ``collection``."""
        return target_name(collection, self.rename, self.prefix)

    def begin(self) -> None:
        pass

    def write_catalog(self, catalog: dict[str, Any]) -> None:
        self.catalog = catalog

    def write_bucket(self, collection: str, bucket: int,
                     records: Iterable[dict[str, Any]]) -> WrittenState:
        if collection != self._current:
            if self._current is not None:  # buckets come collection by collection
                self.comparison.close(self._current)
            self._open(collection)
            self._current = collection
        return self.comparison.feed(collection, records)

    def finish(self) -> None:
        for name in sorted({*self.catalog.get("collections", {}), *self.also}):
            self._open(name)  # a collection with no record left: the engine's are extra
        self.comparison.close_all()

    def read_back(self) -> dict[str, WrittenState]:
        return {}

    def _open(self, collection: str) -> None:
        schema = self.catalog.get("collections", {}).get(collection) or {}
        self.comparison.open(collection, self.target(collection), metric_of(schema))


@dataclass
class Reconciliation:
    """An engine compared with the state of a restore plan, collection by collection."""

    engine: str
    plan: RestorePlan
    collections: dict[str, CollectionDrift]
    seconds: float

    @property
    def drift(self) -> int:
        return sum(c.drift for c in self.collections.values())

    def totals(self) -> dict[str, int]:
        return {k: sum(c.counts[k] for c in self.collections.values()) for k in KINDS}

    def to_dict(self) -> dict[str, Any]:
        from daemon.status import iso_ms

        return {"engine": self.engine, "target": self.plan.target.label,
                "until_ms": self.plan.until_ms, "until": iso_ms(self.plan.until_ms),
                "snapshot": self.plan.snapshot.id if self.plan.snapshot else None,
                "drift": self.drift, **self.totals(),
                "collections": {n: c.to_dict() for n, c in sorted(self.collections.items())},
                "seconds": round(self.seconds, 3)}


def against_plan(repo: Repository, plan: RestorePlan, engine: Engine,
                 rename: dict[str, str] | None = None, prefix: str = "",
                 open_store: Callable[[], ObjectStore] | None = None,
                 pause_gc: bool = False) -> Reconciliation:
    """Compare ``engine`` with the state ``plan`` restores (``restore --preview``): the
    restore machinery streams it (``executor.execute``) into a ``ComparingSink``, so it is the
    state a restore would write, record for record; nothing is written. ``open_store``: a
    repository with per-tenant keys (records opened with their tenant's key on the way).

    ``pause_gc``: pause Python's cyclic garbage collector meanwhile (the CLI, a process of
    its own). The comparison keeps only acyclic dicts and tuples, but it allocates enough of
    them to set off full collections, and each walks every object the process holds: an
    embedded engine's whole collection (Qdrant local mode keeps every payload as Python
    objects), a third of the time at 30,000 x 768 (docs/performance.md). Not in `vecwal run`,
    where capture runs beside it: there what the process holds before the comparison (the
    engine's collection among it) is frozen instead (``gc.freeze``: the collections still
    run, on what is allocated meanwhile, but do not walk it) and thawed after."""
    import gc

    began = time.monotonic()
    sink = ComparingSink(engine, plan.scope.tenants, rename, prefix,
                         also=plan.scope.collections or ())
    wrapped: Sink = sink
    if open_store is not None:
        from daemon.restore.sinks.opening import opening_sink

        wrapped = opening_sink(sink, open_store)
    paused = pause_gc and gc.isenabled()
    if paused:
        gc.disable()
    else:
        gc.freeze()
    try:
        execute(repo, plan, wrapped)
    finally:
        if paused:
            gc.enable()
        else:
            gc.unfreeze()
    return Reconciliation(engine.name, plan, dict(sink.comparison.done),
                          time.monotonic() - began)


def reconcile(repo: Repository, topics: list[str], engine: Engine, scope: Scope,
              rename: dict[str, str] | None = None,
              open_store: Callable[[], ObjectStore] | None = None,
              pause_gc: bool = False) -> Reconciliation:
    """Drift of ``engine`` from the backup: compared with the state at the repository's
    valid-through time (``--to now``), for the collections and tenants of ``scope``
    (``pause_gc``: as ``against_plan``)."""
    from daemon.restore.target import parse_target

    target = parse_target("now", int(time.time() * 1000))
    plan = make_plan(gather(repo, topics, target), target, scope)
    return against_plan(repo, plan, engine, rename, open_store=open_store, pause_gc=pause_gc)
