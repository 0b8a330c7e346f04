"""What the vector-database sinks (``qdrant:``, ``milvus:``) share: naming (``--rename``),
refusing an existing collection (unless ``--replace``), turning snapshot records into points,
batching, keeping what validation needs, and re-reading the engine for the state digest.

An engine adapter (``qdrant.py``, ``milvus.py``) does only what differs between engines:
create a collection, insert a batch, count, search, select by filter, scan everything.

Each point stores what a search application uses as plain fields: ``id``, ``tenant``,
``document``, ``metadata``, ``acl``, ``embedding_model``, ``source``; and in ``vecwal`` the
exact texts and the write version, so the state digest can be recomputed from the engine
alone. The point's own key is a UUID derived from (tenant, id), since one id may exist in
several tenants of a collection.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from daemon.errors import VecwalError
from daemon.restore.sinks import WrittenState
from daemon.rows import Row, StateDigest

BATCH = 512
"""Points per insert call."""
SEARCH_EF = 128
"""HNSW ef of the validation searches (or the recorded ef when larger): probes check that the
restored data and index answer like a brute force, not the recall a low serving ef trades."""
_KEY_NS = uuid.UUID("6f1c1c8e-3f5b-4b0e-9b7e-7665637761c1")
_NS_BYTES = _KEY_NS.bytes
METRICS = ("cosine", "dot", "l2")
_METRIC_ALIASES = {"cosine": "cosine", "dot": "dot", "ip": "dot", "inner_product": "dot",
                   "l2": "l2", "euclid": "l2", "euclidean": "l2"}


class TargetExists(VecwalError):
    """The target collection exists; nothing was written."""


class EngineRefused(VecwalError):
    """The restored state cannot be put into this engine as it is."""


def point_key(tenant: str, record_id: str) -> str:
    """``str(uuid.uuid5(_KEY_NS, tenant + NUL + id))``, without building UUID objects."""
    h = bytearray(hashlib.sha1(_NS_BYTES + f"{tenant}\x00{record_id}".encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def target_name(collection: str, rename: dict[str, str], prefix: str) -> str:
    """The engine collection a backed-up collection is restored as (and compared with):
    its ``--rename`` target, else ``prefix`` (a drill's scratch prefix) and its name."""
    return rename.get(collection, prefix + collection)


def metric_of(schema: dict[str, Any]) -> str:
    raw = str(schema.get("metric", "cosine")).lower()
    if raw not in _METRIC_ALIASES:
        raise EngineRefused(f"metric {raw!r} has no equivalent in the engine",
                            f"use one of {', '.join(sorted(_METRIC_ALIASES))}")
    return _METRIC_ALIASES[raw]


@dataclass(frozen=True)
class CollectionSpec:
    """What the engine needs to create a collection, from the restored catalog."""

    dimension: int
    metric: str
    """cosine, dot or l2."""
    index: dict[str, Any]
    """As recorded: {"type": "hnsw", "m": 16, "ef_construct": 100} or similar."""
    tenants: list[str]
    schema: dict[str, Any]


@dataclass(frozen=True)
class Where:
    """A filter every engine can express: equality on the tenant, an ACL principal contained
    in the acl list, equality on one metadata key."""

    tenant: str | None = None
    principal: str | None = None
    metadata: tuple[str, Any] | None = None


class Engine(Protocol):
    """One vector database. ``search`` and ``select`` return point keys."""

    name: str
    normalizes_cosine: bool
    """Whether vectors of a cosine collection come back normalised."""

    def exists(self, collection: str) -> bool: ...

    def drop(self, collection: str) -> None: ...

    def create(self, collection: str, spec: CollectionSpec) -> None: ...

    def insert(self, collection: str, keys: list[str], vectors: np.ndarray,
               payloads: list[dict[str, Any]]) -> None: ...

    def set_alias(self, alias: str, collection: str) -> None: ...

    def count(self, collection: str, where: Where | None = None) -> int: ...

    def search(self, collection: str, vector: np.ndarray, k: int,
               where: Where | None = None) -> list[str]: ...

    def select(self, collection: str, where: Where) -> set[str]: ...

    def scan(self, collection: str) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
        """Every point: (key, payload fields, vector as float32)."""
        ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class Truth:
    """What was written into one collection, kept for validation: keys, tenants, ACLs,
    metadata texts and the vectors (n x dimension float32: the memory a restore needs beyond
    one bucket)."""

    spec: CollectionSpec
    keys: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)
    acls: list[list[str] | None] = field(default_factory=list)
    metadata: list[str | None] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)
    _vectors: np.ndarray | None = None
    _row: dict[str, int] | None = None

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None or len(self._vectors) != len(self.keys):
            self._vectors = (np.concatenate(self.chunks) if self.chunks
                             else np.zeros((0, self.spec.dimension), np.float32))
            self.chunks = [self._vectors]
        return self._vectors

    def row(self, key: str) -> int | None:
        if self._row is None or len(self._row) != len(self.keys):
            self._row = {k: i for i, k in enumerate(self.keys)}
        return self._row.get(key)


@dataclass
class ScanResult:
    """One collection re-read from the engine: the state digest recomputed from what it
    returned, and the keys whose vector or acl differ from what was written."""

    state: WrittenState
    vector_mismatch: list[str] = field(default_factory=list)
    acl_mismatch: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


Progress = Callable[[str, int], None]
"""(collection, records loaded so far in it)."""


class EngineSink:
    """The Sink for a vector database, given its engine adapter."""

    def __init__(self, engine: Engine, *, replace: bool = False,
                 rename: dict[str, str] | None = None, progress: Progress | None = None,
                 prefix: str = "") -> None:
        self.engine = engine
        self.name = engine.name
        self.replace = replace
        self.rename = dict(rename or {})
        self.progress = progress
        self.prefix = prefix
        """Put before every collection name not renamed (drills' scratch collections)."""
        self.skip_aliases = bool(self.rename or prefix)
        self.truth: dict[str, Truth] = {}
        self.catalog: dict[str, Any] = {}
        self.created: list[str] = []
        self.scans: dict[str, ScanResult] = {}
        self.notes: list[str] = []
        self.load_seconds = 0.0
        """Time spent inside the engine's insert calls."""

    def target(self, collection: str) -> str:
        return target_name(collection, self.rename, self.prefix)

    # -- the Sink protocol ---------------------------------------------------------------
    def begin(self) -> None:
        pass

    def write_catalog(self, catalog: dict[str, Any]) -> None:
        self.catalog = catalog
        names = sorted(catalog["collections"])
        # An engine that restricts names (a Milvus server) says which name it would take.
        fit: Callable[[str], str] = getattr(self.engine, "fit_name", lambda name: name)
        unfit = {n: fit(self.target(n)) for n in names if fit(self.target(n)) != self.target(n)}
        if unfit:
            raise EngineRefused(
                f"{self.name} does not take the collection name(s) "
                f"{', '.join(map(repr, map(self.target, unfit)))}; nothing was written",
                "restore under names it takes: "
                + " ".join(f"--rename {n}:{f}" for n, f in unfit.items()))
        taken = [self.target(n) for n in names if self.engine.exists(self.target(n))]
        if taken and not self.replace:
            raise TargetExists(
                f"{self.name} already has collection(s) {', '.join(taken)}; nothing was written",
                "pass --replace to drop and recreate them, or --rename OLD:NEW to restore beside")
        for n in names:
            self._create(n, self._spec(n, catalog["collections"][n]))
        if self.skip_aliases:
            if catalog["aliases"]:
                self.notes.append(f"aliases not created (renamed restore): {catalog['aliases']}")
            return
        for alias, coll in sorted(catalog["aliases"].items()):
            if coll in self.truth:
                if fit(alias) != alias:
                    self.notes.append(f"alias {alias!r} created as {fit(alias)!r}: "
                                      f"{self.name} does not take the name as it is")
                self.engine.set_alias(fit(alias), self.target(coll))

    def write_bucket(self, collection: str, bucket: int,
                     records: Iterable[dict[str, Any]]) -> WrittenState:
        digest = StateDigest()
        tenants: dict[str, int] = {}
        batch: list[dict[str, Any]] = []
        for rec in records:
            digest.add(rec)
            tenants[rec["tenant"]] = tenants.get(rec["tenant"], 0) + 1
            batch.append(rec)
            if len(batch) >= BATCH:
                self._load(collection, batch)
                batch = []
        if batch:
            self._load(collection, batch)
        return WrittenState(digest.count, digest.hex, tenants)

    def write_rows(self, collection: str, bucket: int, rows: Iterable[Row]) -> WrittenState:
        """Rows as bytes (``RowSink``): the digest adds each row's content hash as the backup
        keeps it (the hash of the record's content bytes, ``record_hash``), not one
        recomputed from its decoded record; the record is decoded once, for the engine.
        Validation recomputes the digest from what the engine holds."""
        digest = StateDigest()
        tenants: dict[str, int] = {}
        batch: list[dict[str, Any]] = []
        for row in rows:
            digest.add_hash(row.hash)
            tenant = row.key[0]
            tenants[tenant] = tenants.get(tenant, 0) + 1
            batch.append(row.record())
            if len(batch) >= BATCH:
                self._load(collection, batch)
                batch = []
        if batch:
            self._load(collection, batch)
        return WrittenState(digest.count, digest.hex, tenants)

    def finish(self) -> None:
        import time

        began = time.monotonic()
        self.engine.finish()
        self.load_seconds += time.monotonic() - began
        self.notes.extend(getattr(self.engine, "notes", ()))  # aliases an engine lacks (lancedb)
        getattr(self.engine, "notes", []).clear()

    def read_back(self) -> dict[str, WrittenState]:
        """Every point re-read from the engine; records rebuilt from its fields, so a changed
        document, metadata, acl, tenant or vector changes the digest. A vector that equals
        the written one (or its normalised form, for engines that normalise cosine vectors)
        within float32 rounding counts as the written bytes."""
        self.scans = {}
        for name, truth in self.truth.items():
            self.scans[name] = self._scan(name, truth)
        return {n: s.state for n, s in self.scans.items() if s.state.records or self.truth[n].keys}

    def probe(self) -> list[Any]:
        """The search checks, run in the engine (``daemon/restore/probes.py``)."""
        from daemon.restore.probes import run_probes

        return run_probes(self)

    def cleanup(self) -> None:
        """Drop every collection this sink created (drills)."""
        for name in self.created:
            if self.engine.exists(name):
                self.engine.drop(name)

    def close(self) -> None:
        self.engine.close()

    # -- helpers ---------------------------------------------------------------------------
    def _spec(self, collection: str, schema: dict[str, Any] | None,
              first: dict[str, Any] | None = None) -> CollectionSpec:
        schema = dict(schema or {})
        dim = schema.get("dimension") or (first or {}).get("dimension")
        if not isinstance(dim, int) or dim <= 0:
            raise EngineRefused(f"collection {collection!r} has no dimension in the catalog",
                                "restore it into dir: instead, or leave it out with --collection")
        tenants = sorted(self.catalog.get("tenants", {}).get(collection, {}))
        return CollectionSpec(dim, metric_of(schema), dict(schema.get("index") or {}), tenants,
                              schema)

    def _create(self, collection: str, spec: CollectionSpec) -> None:
        name = self.target(collection)
        if self.engine.exists(name):
            if not self.replace:
                raise TargetExists(f"{self.name} already has collection {name}",
                                   "pass --replace, or --rename OLD:NEW to restore beside it")
            self.engine.drop(name)
        self.engine.create(name, spec)
        self.notes.extend(getattr(self.engine, "notes", ()))  # index mappings (pgvector)
        getattr(self.engine, "notes", []).clear()
        self.created.append(name)
        self.truth[collection] = Truth(spec)

    def _load(self, collection: str, records: list[dict[str, Any]]) -> None:
        import time

        truth = self.truth.get(collection)
        if truth is None:  # records of a collection the catalog does not describe
            self.notes.append(f"{collection}: no schema in the catalog; created with the "
                              "records' dimension and the cosine metric")
            self._create(collection, self._spec(collection, None, records[0]))
            truth = self.truth[collection]
        dim = truth.spec.dimension
        vectors = np.empty((len(records), dim), dtype=np.float32)
        keys, payloads = [], []
        for i, rec in enumerate(records):
            vec = rec.get("vector")
            if vec is None or len(vec) != 4 * dim:
                got = "no vector" if vec is None else f"{len(vec) // 4} values"
                raise EngineRefused(
                    f"record {rec['tenant']}/{rec['id']} of {collection} has {got}; the "
                    f"collection's dimension is {dim}",
                    "restore into dir: instead, or leave that collection out with --collection")
            vectors[i] = np.frombuffer(vec, dtype="<f4")
            key = point_key(rec["tenant"], rec["id"])
            keys.append(key)
            payloads.append(to_payload(rec))
            truth.ids.append(rec["id"])
            truth.tenants.append(rec["tenant"])
            truth.acls.append(rec.get("acl"))
            truth.metadata.append(rec.get("metadata"))
        truth.keys.extend(keys)
        truth.chunks.append(vectors)
        began = time.monotonic()
        self.engine.insert(self.target(collection), keys, vectors, payloads)
        self.load_seconds += time.monotonic() - began
        if self.progress is not None:
            self.progress(collection, len(truth.keys))

    def _scan(self, collection: str, truth: Truth) -> ScanResult:
        digest = StateDigest()
        tenants: dict[str, int] = {}
        out = ScanResult(WrittenState())
        cosine = truth.spec.metric == "cosine" and self.engine.normalizes_cosine
        vectors = truth.vectors
        for key, fields, got in self.engine.scan(self.target(collection)):
            rec = from_payload(collection, fields)
            row = truth.row(key)
            if row is None:
                out.unknown.append(key)
                rec["vector"] = got.astype("<f4").tobytes()
            else:
                if same_vector(got, vectors[row], cosine):
                    rec["vector"] = vectors[row].astype("<f4").tobytes()
                else:
                    out.vector_mismatch.append(key)
                    rec["vector"] = got.astype("<f4").tobytes()
                if rec["acl"] != truth.acls[row]:
                    out.acl_mismatch.append(key)
            digest.add(rec)
            tenants[rec["tenant"]] = tenants.get(rec["tenant"], 0) + 1
        out.state = WrittenState(digest.count, digest.hex, dict(sorted(tenants.items())))
        return out


def same_vector(got: np.ndarray, want: np.ndarray, cosine: bool) -> bool:
    """Whether the engine's vector ``got`` is the written ``want``: equal within float32
    rounding, to ``want`` normalised when the engine normalises cosine vectors (``cosine``)."""
    if cosine:
        norm = float(np.linalg.norm(want))
        want = want / norm if norm > 0 else want
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-5, atol=1e-6))


def to_payload(rec: dict[str, Any]) -> dict[str, Any]:
    """A record's fields as the engine stores them: what applications filter on as plain
    values, and under ``vecwal`` what the state digest needs byte for byte."""
    si, sv = rec.get("sparse_indices"), rec.get("sparse_values")
    return {
        "id": rec["id"], "tenant": rec["tenant"], "document": rec.get("document"),
        "metadata": _loads(rec.get("metadata")), "acl": rec.get("acl"),
        "embedding_model": rec.get("embedding_model"), "source": _loads(rec.get("source")),
        "vecwal": {
            "metadata": rec.get("metadata"), "source": rec.get("source"),
            "document_is_json": bool(rec.get("document_is_json")),
            "extra": rec.get("extra"), "event_id": rec.get("event_id"),
            "event_time": rec.get("event_time"), "dimension": rec.get("dimension"),
            "sparse": None if si is None or sv is None else [
                base64.b64encode(si).decode(), base64.b64encode(sv).decode()],
            "version": [rec.get("last_timestamp"), rec.get("last_topic"),
                        rec.get("last_partition"), rec.get("last_offset")],
        },
    }


def from_payload(collection: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The snapshot record back from the engine's fields. Metadata and source keep their
    exact text when the plain value still equals it; otherwise the plain value wins (and the
    digest then shows the change)."""
    v = fields.get("vecwal") or {}
    sparse = v.get("sparse")
    version = v.get("version") or [0, "", 0, 0]
    return {
        "collection": collection, "tenant": fields.get("tenant", ""), "id": fields.get("id"),
        "dimension": v.get("dimension"), "vector": None,
        "sparse_indices": base64.b64decode(sparse[0]) if sparse else None,
        "sparse_values": base64.b64decode(sparse[1]) if sparse else None,
        "document": fields.get("document"), "document_is_json": bool(v.get("document_is_json")),
        "metadata": _text(fields.get("metadata"), v.get("metadata")),
        "acl": fields.get("acl"), "embedding_model": fields.get("embedding_model"),
        "source": _text(fields.get("source"), v.get("source")),
        "event_id": v.get("event_id"), "event_time": v.get("event_time"),
        "extra": v.get("extra"), "last_timestamp": version[0], "last_topic": version[1],
        "last_partition": version[2], "last_offset": version[3],
    }


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _text(value: Any, exact: str | None) -> str | None:
    if value is None:
        return None
    if exact is not None and orjson.loads(exact) == value:
        return exact
    return orjson.dumps(value).decode()
