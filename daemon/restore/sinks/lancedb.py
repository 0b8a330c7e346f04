"""``lancedb:PATH``: LanceDB, embedded, in the directory PATH (created when missing).

A table per collection, its columns what a search application reads: ``key`` (the point key),
``id``, ``tenant``, ``vector`` (FixedSizeList<float32>[dimension]), ``document``,
``metadata`` and ``source`` (Lance JSON, filterable with ``json_extract``), ``acl``
(list<string>), ``embedding_model`` (struct name, version), and ``vecwal``: JSON text of what
the state digest needs beyond those, the exact metadata and source texts among it (Lance
keeps JSON as JSONB and gives back its own text: key order and number spelling may differ;
the exact text is used while it still parses to the column's value). The table's schema
metadata ``vecwal`` records the collection's dimension, metric and recorded index.

Loading: each insert becomes one Arrow record batch, the vectors wrapped from the numpy array
without a copy and without a Python object per value; batches are held until ``FLUSH_ROWS``
and written by one ``table.add`` (a LanceDB write makes a fragment and a table version: one
per 512-point insert would leave hundreds of small fragments). The add runs in a writer
thread while the restore decodes the next buckets; every read (count, search, select, scan)
and ``finish`` wait for it first.

Indexes, built in ``finish`` once every row is in: the vector index only on a table of at
least ``INDEX_MIN_ROWS`` rows. Lance trains its IVF centroids by k-means over a sample of
``sample_rate`` (256) rows per partition, and product quantisation needs at least 256 rows per
codebook: a small table would train on too few rows, and an exact scan of it is faster than
the index anyway. Smaller tables are searched exactly (a flat scan). With the index, the
bitmap index on ``tenant`` and the label-list index on ``acl`` are built too (the filters
tenant-scoped and ACL-scoped searches use).

Recorded index types map to LanceDB's:

- ``hnsw`` (m, ef_construct) -> ``IVF_HNSW_SQ``: LanceDB's HNSW is a graph per IVF partition
  over 8-bit scalar-quantised vectors (the full vectors stay in the table); m and
  ef_construction kept. Restores note the mapping when they build the index.
- ``ivf_flat`` / ``ivf_pq`` / ``ivf_sq`` (nlist) -> the index of that name.
- ``flat`` -> no index.
- anything else -> ``IVF_PQ``, noted.

The metrics cosine, dot and l2 are LanceDB's own (``distance_type``); vectors are stored as
given (a cosine table is not normalised).

Validation's searches go through the index when there is one, with every partition probed
(``nprobes``), ``ef`` at least ``SEARCH_EF`` and candidates re-ranked on the full vectors
(``refine_factor``): kNN probes then agree with numpy's brute force while still reading the
index that was built.

Aliases: LanceDB has none. An alias is not created; the restore's notes name it and its
table, so the application can be pointed at the table (``docs/operations.md``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import orjson
import pyarrow as pa

from daemon.errors import VecwalError
from daemon.restore.sinks.adding import Adder
from daemon.restore.sinks.engine import SEARCH_EF, CollectionSpec, EngineRefused, Where

INDEX_MIN_ROWS = 50_000
"""Tables smaller than this get no vector index and are searched exactly."""
FLUSH_ROWS = 32_768
"""Rows held before one ``table.add`` (about 100 MB of vectors at 768 dimensions)."""
REFINE = 20
"""Validation searches re-rank ``REFINE`` x k index candidates on the full vectors."""
ROWS_PER_PARTITION = 4096
"""IVF partitions when the recorded index gives no nlist: one per this many rows (LanceDB's
own default, sqrt(rows), makes k-means over 768-dimension vectors the larger part of a
restore: 316 partitions at 100k rows)."""
_DISTANCE: dict[str, Literal["l2", "cosine", "dot"]] = {"cosine": "cosine", "dot": "dot",
                                                         "l2": "l2"}
_VECWAL_KEYS = ("metadata", "source", "document_is_json", "extra", "event_id", "event_time",
                "dimension", "sparse", "version")


class LanceDBEngine:
    normalizes_cosine = False

    def __init__(self, path: str, *, index_min_rows: int = INDEX_MIN_ROWS,
                 flush_rows: int = FLUSH_ROWS) -> None:
        import lancedb

        self.path = path
        self.name = f"lancedb:{path}"
        self.index_min_rows = index_min_rows
        self.flush_rows = flush_rows
        self.notes: list[str] = []
        self._pending: dict[str, list[pa.RecordBatch]] = {}
        self._schemas: dict[str, pa.Schema] = {}
        self._specs: dict[str, CollectionSpec] = {}
        self._indexed: dict[str, tuple[str, int] | None] = {}
        """Table -> (index type, partitions), or None: no vector index (known this run)."""
        self.build_seconds = 0.0
        """Time spent building indexes (in ``finish``)."""
        self._adder = Adder("lancedb-add", 1)
        try:
            self.db = lancedb.connect(path)
        except Exception as exc:  # lancedb raises ValueError, OSError, its Rust errors
            raise VecwalError(f"cannot open {self.name}: {exc}",
                              "give a directory vecwal may create and write") from None

    # -- collections ----------------------------------------------------------------------
    def exists(self, collection: str) -> bool:
        token: str | None = None
        while True:
            page = self.db.list_tables(page_token=token, limit=1000)
            if collection in page.tables:
                return True
            token = page.page_token
            if not token or not page.tables:
                return False

    def drop(self, collection: str) -> None:
        self._wait()
        self.db.drop_table(collection)
        for known in (self._pending, self._schemas, self._specs, self._indexed):
            known.pop(collection, None)

    def create(self, collection: str, spec: CollectionSpec) -> None:
        recorded = {"dimension": spec.dimension, "metric": spec.metric, "index": spec.index}
        schema = pa.schema([
            pa.field("key", pa.string(), nullable=False),
            pa.field("id", pa.string(), nullable=False),
            pa.field("tenant", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), spec.dimension), nullable=False),
            pa.field("document", pa.string()),
            pa.field("metadata", pa.json_(pa.string())),
            pa.field("acl", pa.list_(pa.string())),
            pa.field("embedding_model", pa.struct([pa.field("name", pa.string()),
                                                   pa.field("version", pa.string())])),
            pa.field("source", pa.json_(pa.string())),
            pa.field("vecwal", pa.string()),
        ], metadata={"vecwal": orjson.dumps(recorded)})
        try:
            self.db.create_table(collection, schema=schema)
        except ValueError as exc:  # a name LanceDB does not take
            raise EngineRefused(f"{self.name} cannot create table {collection!r}: {exc}",
                                "restore it under another name: --rename "
                                f"{collection}:NEW (letters, digits, _ - .)") from None
        self._schemas[collection] = schema
        self._specs[collection] = spec
        self._pending[collection] = []
        self._indexed[collection] = None

    def set_alias(self, alias: str, collection: str) -> None:
        self.notes.append(f"alias {alias!r} not created: LanceDB has no aliases; its "
                          f"collection is table {collection!r}")

    # -- loading --------------------------------------------------------------------------
    def insert(self, collection: str, keys: list[str], vectors: np.ndarray,
               payloads: list[dict[str, Any]]) -> None:
        schema = self._schemas.get(collection) or self._open(collection).schema
        pending = self._pending.setdefault(collection, [])
        pending.append(record_batch(schema, keys, vectors, payloads))
        if sum(b.num_rows for b in pending) >= self.flush_rows:
            self._flush(collection)

    def _flush(self, collection: str) -> None:
        """The held batches to one ``table.add``, run by the writer thread while the restore
        decodes on (LanceDB writes without the GIL); one add at a time, so at most two
        flushes of rows are in memory."""
        pending = self._pending.get(collection)
        if not pending:
            return
        data = pa.Table.from_batches(pending)
        self._pending[collection] = []
        self._adder.submit(self._open(collection).add, data)

    def _wait(self) -> None:
        """The add in flight finished (its error raised here)."""
        self._adder.drain()

    def finish(self) -> None:
        """Every held batch written, then the indexes of each table loaded in this run."""
        for collection in list(self._pending):
            self._flush(collection)
        self._wait()
        for collection, spec in self._specs.items():
            if self._indexed.get(collection) is None and self.exists(collection):
                self.build_index(collection, spec)

    def build_index(self, collection: str, spec: CollectionSpec) -> None:
        """The vector index (and the tenant and acl indexes) of a table large enough."""
        import time

        began = time.monotonic()
        try:
            self._build_index(collection, spec)
        finally:
            self.build_seconds += time.monotonic() - began

    def _build_index(self, collection: str, spec: CollectionSpec) -> None:
        from lancedb.index import Bitmap, LabelList

        table = self._open(collection)
        rows = table.count_rows()
        config, note = _index_config(spec, rows)
        if config is None or rows < self.index_min_rows:
            return
        if note:
            self.notes.append(f"{collection}: {note}")
        table.create_index("vector", config=config)
        table.create_index("tenant", config=Bitmap())
        table.create_index("acl", config=LabelList())
        self._indexed[collection] = (type(config).__name__, config.num_partitions or 1)

    # -- reading --------------------------------------------------------------------------
    def count(self, collection: str, where: Where | None = None) -> int:
        self._wait()
        return int(self._open(collection).count_rows(_sql(where)))

    def search(self, collection: str, vector: np.ndarray, k: int,
               where: Where | None = None) -> list[str]:
        self._wait()
        table = self._open(collection)
        q = (table.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector")
             .distance_type(self._metric(collection, table)).limit(k).select(["key", "_distance"]))
        index = self._index_of(collection, table)
        if index is not None:
            kind, partitions = index
            q = q.nprobes(partitions).refine_factor(REFINE)
            if kind.startswith("Hnsw"):
                q = q.ef(max(SEARCH_EF, k * REFINE))  # the candidates refined
        sql = _sql(where)
        if sql:
            q = q.where(sql, prefilter=True)
        return [str(key) for key in q.to_arrow().column("key").to_pylist()]

    def select(self, collection: str, where: Where) -> set[str]:
        self._wait()
        rows = self._open(collection).search().where(_sql(where)).select(["key"]).to_arrow()
        return {str(key) for key in rows.column("key").to_pylist()}

    def scan(self, collection: str) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
        self._wait()
        table = self._open(collection)
        columns = [f.name for f in table.schema]
        for batch in table.search().select(columns).to_batches(8192):
            dim = batch.schema.field("vector").type.list_size
            vectors = batch.column("vector").values.to_numpy(zero_copy_only=False)
            vectors = vectors.reshape(batch.num_rows, dim)
            cols = {name: batch.column(name).to_pylist() for name in columns
                    if name not in ("vector", "key", "_rowid")}
            for i, key in enumerate(batch.column("key").to_pylist()):
                row = {name: values[i] for name, values in cols.items()}
                vecwal = orjson.loads(row.pop("vecwal") or "{}")
                for name in ("metadata", "source"):  # Lance JSON, read back as its own text
                    text = row[name]
                    row[name] = None if text is None else orjson.loads(text)
                row["vecwal"] = vecwal
                yield str(key), row, vectors[i]

    def close(self) -> None:
        for collection in list(self._pending):
            self._flush(collection)
        try:
            self._wait()
        finally:
            self._adder.close()

    # -- helpers --------------------------------------------------------------------------
    def _open(self, collection: str) -> Any:
        return self.db.open_table(collection)

    def _recorded(self, table: Any) -> dict[str, Any]:
        meta = table.schema.metadata or {}
        return dict(orjson.loads(meta.get(b"vecwal", b"{}")))

    def _metric(self, collection: str, table: Any) -> str:
        spec = self._specs.get(collection)
        return spec.metric if spec else str(self._recorded(table).get("metric", "cosine"))

    def _index_of(self, collection: str, table: Any) -> tuple[str, int] | None:
        """The vector index's kind and partition count: known when built in this run, else
        found on the table (partitions recomputed as they were chosen: from the row count)."""
        if collection in self._indexed and self._indexed[collection] is not None:
            return self._indexed[collection]
        if not any(ix.columns == ["vector"] for ix in table.list_indices()):
            return None
        recorded = self._recorded(table)
        spec = CollectionSpec(int(recorded.get("dimension", 0)), str(recorded.get("metric")),
                              dict(recorded.get("index") or {}), [], {})
        config, _ = _index_config(spec, table.count_rows())
        return None if config is None else (type(config).__name__, config.num_partitions or 1)


def record_batch(schema: pa.Schema, keys: list[str], vectors: np.ndarray,
                 payloads: list[dict[str, Any]]) -> pa.RecordBatch:
    """One insert as an Arrow record batch: the vectors wrapped from the numpy array (no
    copy when it is float32 and contiguous), the other columns from the payloads."""
    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
    vecwal = [p["vecwal"] for p in payloads]
    columns = [
        pa.array(keys, pa.string()),
        pa.array([p["id"] for p in payloads], pa.string()),
        pa.array([p["tenant"] for p in payloads], pa.string()),
        pa.FixedSizeListArray.from_arrays(flat, dim),
        pa.array([p["document"] for p in payloads], pa.string()),
        pa.array([v["metadata"] for v in vecwal], pa.json_(pa.string())),
        pa.array([p["acl"] for p in payloads], pa.list_(pa.string())),
        pa.array([p["embedding_model"] for p in payloads], schema.field("embedding_model").type),
        pa.array([v["source"] for v in vecwal], pa.json_(pa.string())),
        pa.array([orjson.dumps({k: v[k] for k in _VECWAL_KEYS}).decode() for v in vecwal],
                 pa.string()),
    ]
    return pa.record_batch(columns, schema=schema)


def _index_config(spec: CollectionSpec, rows: int = 0) -> tuple[Any, str | None]:
    """(LanceDB index config or None, a note naming a mapping) for the recorded index."""
    from lancedb.index import HnswSq, IvfFlat, IvfPq, IvfSq

    index = spec.index
    kind = str(index.get("type", "hnsw")).lower()
    nlist = index.get("nlist")
    parts = (int(nlist) if isinstance(nlist, int) and nlist > 0
             else max(1, math.ceil(rows / ROWS_PER_PARTITION)))
    metric = _DISTANCE[spec.metric]
    if kind == "flat":
        return None, None
    if kind == "hnsw":
        m, ef = index.get("m"), index.get("ef_construct")
        return HnswSq(distance_type=metric, num_partitions=parts,
                      m=int(m) if isinstance(m, int) else 20,
                      ef_construction=int(ef) if isinstance(ef, int) else 300), (
            "index hnsw mapped to LanceDB IVF_HNSW_SQ (an HNSW graph per IVF partition over "
            "8-bit scalar-quantised vectors; m and ef_construction kept)")
    if kind == "ivf_flat":
        return IvfFlat(distance_type=metric, num_partitions=parts), None
    if kind == "ivf_sq":
        return IvfSq(distance_type=metric, num_partitions=parts), None
    note = None if kind == "ivf_pq" else f"index {kind} mapped to LanceDB IVF_PQ"
    return IvfPq(distance_type=metric, num_partitions=parts,
                 num_sub_vectors=_sub_vectors(spec.dimension)), note


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors: dimension / 16 when it divides (LanceDB's default), else a divisor."""
    for width in (16, 8, 4, 2, 1):
        if dim % width == 0:
            return dim // width
    return dim


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql(where: Where | None) -> str | None:
    """The filter in LanceDB's SQL: metadata compared as JSON text (``json_extract`` gives
    the value's JSON), so 2 and "2" stay apart as the probes expect."""
    if where is None:
        return None
    parts = []
    if where.tenant is not None:
        parts.append(f"tenant = {_quote(where.tenant)}")
    if where.principal is not None:
        parts.append(f"array_has_any(acl, [{_quote(where.principal)}])")
    if where.metadata is not None:
        key, value = where.metadata
        path = "$." + key if key.replace("_", "").isalnum() else "$[" + orjson.dumps(key).decode() + "]"
        parts.append(f"json_extract(metadata, {_quote(path)}) = {_quote(orjson.dumps(value).decode())}")
    return " AND ".join(parts) or None
