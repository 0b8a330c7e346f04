"""``milvus:URI``: Milvus through pymilvus' MilvusClient. A path ending in ``.db`` runs Milvus
Lite in that file; an ``http(s)://HOST:PORT`` URI reaches a server (``.../DB``: a database
other than ``default``; ``http://USER:PASSWORD@...``: a server with authentication).

The collection gets a fixed schema: ``pk`` (the point key), ``vector`` (FLOAT_VECTOR of the
recorded dimension, indexed with the recorded type and parameters), ``id``, ``tenant`` (the
partition key, Milvus' multitenancy layout), ``document`` (VARCHAR) and nullable JSON fields
``metadata``, ``acl``, ``embedding_model``, ``source``, ``vecwal``. Every collection is
created with ``consistency_level="Strong"``: validation searches right after the load.

Servers before Milvus 2.5 have no nullable fields, and their JSON fields take objects only
(2.3 refuses a list). There (tested against 2.3.5) ``acl`` is an ARRAY of VARCHAR, filtered
with ``array_contains(acl, ...)``, and a missing ``document``, ``metadata``, ``acl``,
``embedding_model`` or ``source`` is stored empty (``""``, ``{}``, ``[]``) and named in
``vecwal.nulls``, so it reads back as missing, not as empty. Servers older than 2.3 (no
COSINE, no ARRAY) are refused.

A server takes collection and alias names of letters, digits and underscores, not starting
with a digit: a collection named otherwise is refused before anything is written (with the
``--rename`` that fits), an alias is created under the fitted name with a note. Milvus Lite
takes both as they are."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import structlog

from daemon.errors import VecwalError
from daemon.restore.sinks.adding import Adder
from daemon.restore.sinks.engine import SEARCH_EF, CollectionSpec, EngineRefused, Where

log = structlog.get_logger("vecwal.restore.milvus")

_METRIC = {"cosine": "COSINE", "dot": "IP", "l2": "L2"}
MAX_TEXT = 65_535
"""Milvus' VARCHAR limit in bytes: the id, tenant and document must fit."""
_JSON_FIELDS = ("metadata", "acl", "embedding_model", "source", "vecwal")
MAX_ACL = 4096
"""Milvus' largest ARRAY capacity: principals per record on a server before 2.5."""
_EMPTY: dict[str, Any] = {"document": "", "metadata": {}, "acl": [], "embedding_model": {},
                          "source": {}}
"""How a missing field is stored where fields cannot be null (servers before 2.5)."""
SCAN_PAGE_BYTES = 8 << 20
"""About what one page of a server's scan may weigh (a vector and 16 KB of fields per row)."""
OLDEST = (2, 3)
NULLABLE_SINCE = (2, 5)
INDEX_POLL_S = 0.5
INDEX_STALL_S = 300.0
"""How long a server's index may go without covering more rows before the restore stops
waiting for it (``MilvusEngine._wait_indexed``)."""
INDEX_LOG_S = 15.0
"""How often the wait for a server's index says where it stands (a log line)."""
PENDING = 2
"""Inserts handed to the inserting thread and not yet done: the restore decodes the next
batch while pymilvus waits on the server (a server's insert is mostly its own work; Milvus
Lite's runs in native threads), instead of the two taking turns."""


class MilvusEngine:
    normalizes_cosine = False

    def __init__(self, uri: str, token: str | None = None) -> None:
        from pymilvus import MilvusClient

        # The query iterator logs a WARNING per scan under Milvus Lite (no server timestamp).
        logging.getLogger("pymilvus").setLevel(logging.ERROR)
        self.uri = uri
        self.lite = uri.endswith(".db")
        self.name = f"milvus:{uri}"
        self._index: dict[str, dict[str, Any]] = {}
        self._loaded: set[str] = set()
        self._adder = Adder("milvus-insert", PENDING)
        self.notes: list[str] = []
        """Index mappings, for the report (the sink takes them after each create)."""
        try:
            self.client = MilvusClient(uri=uri, token=token or "")
            self.version = "lite" if self.lite else str(self.client.get_server_version())
        except Exception as exc:  # pymilvus raises MilvusException, ConnectionError, ...
            raise VecwalError(f"cannot open {self.name}: {exc}",
                              "check the .db path (its directory must exist) or the server URI "
                              "(http://HOST:PORT, or http://HOST:PORT/DB for a database that "
                              "exists)") from None
        release = _release(self.version)
        if not self.lite and release < OLDEST:
            self.client.close()
            raise VecwalError(f"{self.name} runs Milvus {self.version}: vecwal restores into "
                              "Milvus 2.3 or newer (COSINE, ARRAY fields, partition keys)",
                              "upgrade the server, or restore into milvus:PATH.db (Milvus Lite)")
        self.nullable = self.lite or release >= NULLABLE_SINCE
        """Whether fields can be null; else the layout for servers before 2.5 (module doc)."""

    def fit_name(self, name: str) -> str:
        """The name this engine takes for a collection or alias named ``name`` (``name`` itself
        when it is fine as it is)."""
        if self.lite:
            return name
        fitted = re.sub(r"[^A-Za-z0-9_]", "_", name)[:255]
        return f"_{fitted[:254]}" if not fitted or fitted[0].isdigit() else fitted

    def exists(self, collection: str) -> bool:
        return bool(self.client.has_collection(collection))

    def drop(self, collection: str) -> None:
        self._adder.drain()
        # describe_collection, not list_aliases: pymilvus' list_aliases asks a 2.3 server
        # about the default database, whatever the client's
        for alias in self.client.describe_collection(collection).get("aliases", []):
            self.client.drop_alias(alias)
        self.client.drop_collection(collection)
        self._loaded.discard(collection)

    def create(self, collection: str, spec: CollectionSpec) -> None:
        from pymilvus import DataType

        s = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dimension)
        s.add_field("id", DataType.VARCHAR, max_length=MAX_TEXT)
        s.add_field("tenant", DataType.VARCHAR, max_length=MAX_TEXT, is_partition_key=True)
        if self.nullable:
            s.add_field("document", DataType.VARCHAR, max_length=MAX_TEXT, nullable=True)
            for name in _JSON_FIELDS:
                s.add_field(name, DataType.JSON, nullable=True)
        else:
            s.add_field("document", DataType.VARCHAR, max_length=MAX_TEXT)
            for name in _JSON_FIELDS:
                if name == "acl":
                    s.add_field(name, DataType.ARRAY, element_type=DataType.VARCHAR,
                                max_capacity=MAX_ACL, max_length=MAX_TEXT)
                else:
                    s.add_field(name, DataType.JSON)
        kind, params, search, mapped = index_of(spec.index)
        if mapped:
            self.notes.append(f"{collection}: {mapped}")
        ip = self.client.prepare_index_params()
        ip.add_index("vector", index_type=kind, metric_type=_METRIC[spec.metric], params=params)
        self.client.create_collection(collection, schema=s, index_params=ip,
                                      consistency_level="Strong")
        self._index[collection] = search
        self._loaded.add(collection)  # create_collection with an index loads it

    def insert(self, collection: str, keys: list[str], vectors: np.ndarray,
               payloads: list[dict[str, Any]]) -> None:
        """The rows made (and refused) here; sent by the inserting thread, in order. An
        insert's error comes out of the next insert, read or ``finish``."""
        self._adder.submit(self.client.insert, collection, self.rows(keys, vectors, payloads))

    def rows(self, keys: list[str], vectors: np.ndarray,
             payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The points as this engine stores them (what ``insert`` sends), from the fields
        ``scan`` gives back."""
        rows = []
        for key, vec, p in zip(keys, vectors, payloads, strict=True):
            too_long = [name for name in ("id", "tenant", "document")
                        if p[name] is not None and len(p[name].encode()) > MAX_TEXT]
            if too_long or (not self.nullable and p["acl"] is not None and (
                    len(p["acl"]) > MAX_ACL
                    or any(len(a.encode()) > MAX_TEXT for a in p["acl"]))):
                what = (f"{too_long[0]} is longer than Milvus' {MAX_TEXT}-byte VARCHAR"
                        if too_long else f"acl has more than {MAX_ACL} principals or one "
                        f"longer than {MAX_TEXT} bytes (Milvus {self.version}'s ARRAY)")
                raise EngineRefused(
                    f"record {p['tenant'][:40]}/{p['id'][:80]}: {what}", "restore that "
                    "collection into qdrant: or dir:, or leave it out with --collection")
            row = {"pk": key, "vector": vec, **p}
            if not self.nullable:
                nulls = [name for name in _EMPTY if p[name] is None]
                if nulls:
                    row.update((name, _EMPTY[name]) for name in nulls)
                    row["vecwal"] = {**p["vecwal"], "nulls": nulls}
            rows.append(row)
        return rows

    def set_alias(self, alias: str, collection: str) -> None:
        try:
            self.client.create_alias(collection, alias)
        except Exception:  # the alias exists (on another collection): move it
            self.client.alter_alias(collection, alias)

    def count(self, collection: str, where: Where | None = None) -> int:
        self._load(collection)
        res = self.client.query(collection, filter=self._expr(where), output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def search(self, collection: str, vector: np.ndarray, k: int,
               where: Where | None = None) -> list[str]:
        self._load(collection)
        params = self._index.get(collection) or {}
        if "ef" in params:
            params = {"ef": max(params["ef"], k)}
        res = self.client.search(collection, data=[vector], limit=k, filter=self._expr(where),
                                 search_params={"params": params}, output_fields=["pk"])
        return [str(hit["pk"] if "pk" in hit else hit["id"]) for hit in res[0]]

    def select(self, collection: str, where: Where) -> set[str]:
        expr = self._expr(where)
        if self.lite:
            # Milvus Lite evaluates filters row by row in Python and an iterator re-evaluates
            # its filter on every page: one query without a result window is far cheaper.
            total = self.count(collection)
            rows = self.client.query(collection, filter=expr, output_fields=["pk"],
                                     limit=max(total, 1))
            return {str(row["pk"]) for row in rows}
        return {str(row["pk"]) for row in self._iterate(collection, expr, ["pk"], 16_384)}

    def scan(self, collection: str) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
        fields = ["pk", "vector", "id", "tenant", "document", *_JSON_FIELDS]
        for row in self._iterate(collection, "", fields, self._scan_batch(collection)):
            vec = np.asarray(row.pop("vector"), dtype=np.float32)
            if not self.nullable:
                if row.get("acl") is not None:
                    row["acl"] = list(row["acl"])
                if isinstance(row.get("vecwal"), dict):
                    row["vecwal"] = dict(row["vecwal"])
                    for name in row["vecwal"].pop("nulls", None) or ():
                        row[name] = None
            yield str(row.pop("pk")), row, vec

    def _scan_batch(self, collection: str) -> int:
        """Rows per page of a full scan. A server sends a page as one gRPC message of at most
        64 MiB (2.3.5: 8,192 rows of 768 dims with the workload's payload made 152 MB and were
        refused), so its pages hold ~8 MB of vectors and fields; Milvus Lite has no such limit."""
        if self.lite:
            return 8192
        dims = [f.get("params", {}).get("dim", 0) for f in
                self.client.describe_collection(collection)["fields"] if f["name"] == "vector"]
        return max(16, min(8192, SCAN_PAGE_BYTES // (4 * int(dims[0] or 0) + 16_384)))

    def _iterate(self, collection: str, expr: str, fields: list[str], batch: int
                 ) -> Iterator[dict[str, Any]]:
        self._load(collection)
        it = self.client.query_iterator(collection, batch_size=batch, filter=expr,
                                        output_fields=fields)
        try:
            while batch := it.next():
                yield from (dict(row) for row in batch)
        finally:
            it.close()

    def _load(self, collection: str) -> None:
        """A collection opened again (another process, Milvus Lite reopened) starts released.
        Every read comes here first: the inserts in flight are done before it."""
        self._adder.drain()
        if collection not in self._loaded:
            self.client.load_collection(collection)
            self._loaded.add(collection)

    def finish(self) -> None:
        """Flush: the segments sealed and persisted, and a server builds their index. A
        server's flush waits for its data node (seconds): the collections are flushed at once.
        Then, on a server, wait until the vector index covers every row (``_wait_indexed``)."""
        self._adder.drain()
        names = [c for c in self._index if self.client.has_collection(c)]
        if self.lite or len(names) < 2:
            for collection in names:
                self.client.flush(collection)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(len(names), 8)) as pool:
                list(pool.map(self.client.flush, names))
        if not self.lite:
            self._wait_indexed(names)

    def _wait_indexed(self, names: list[str]) -> None:
        """A server indexes flushed segments in the background (its index node), and until
        then serves their rows by brute force or, while they are still growing segments, by
        an interim IVF index of lower recall: a search right after the load may miss
        neighbours the restored index finds. The restore is done when the index covers
        every row (``describe_index``: indexed and total rows, none pending). It waits as
        long as the index gains rows; after INDEX_STALL_S without a gain it goes on with a
        note (validation's kNN probes then say whether searches are as they should be)."""
        import time

        left = {name: -1 for name in names}
        gained = began = said = time.monotonic()
        while left:
            totals: dict[str, int] = {}
            for name in sorted(left):
                info = self.client.describe_index(name, "vector")
                if "indexed_rows" not in info:  # a server that does not say: nothing to wait on
                    del left[name]
                    continue
                indexed, totals[name] = int(info["indexed_rows"]), int(info["total_rows"])
                if indexed >= totals[name] and not int(info["pending_index_rows"]):
                    del left[name]
                elif indexed > left[name]:
                    left[name], gained = indexed, time.monotonic()
            if not left:
                return
            if time.monotonic() - said >= INDEX_LOG_S:  # a long wait says where it stands
                said = time.monotonic()
                log.info("waiting for the server's vector index", engine=self.name,
                         waited_s=round(said - began), indexed={
                             n: f"{max(left[n], 0)} of {totals.get(n, '?')}" for n in left})
            if time.monotonic() - gained > INDEX_STALL_S:
                self.notes.append(
                    f"the vector index of {', '.join(sorted(left))} did not cover every row "
                    f"after {INDEX_STALL_S:g} s without progress (Milvus indexes in the "
                    "background): searches use brute force or Milvus' interim index until it "
                    "does")
                return
            time.sleep(INDEX_POLL_S)

    def close(self) -> None:
        self._adder.close()
        self.client.close()
        if self.lite:
            # Milvus Lite serves the file from a thread of this process and keeps it locked
            # until released: another process (a later restore, a drill) could not open it.
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)


    def _expr(self, where: Where | None) -> str:
        return _expr(where, acl_array=not self.nullable)


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a server version such as "v2.3.5-lite"; (0, 0) when unreadable."""
    m = re.search(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def index_of(index: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """(index type, build params, search params, the mapping made or "") from the recorded
    index. HNSW with m=0 (Qdrant's "no graph": exact search) becomes FLAT, since Milvus takes
    M from 1; a type Milvus has no equivalent of here becomes AUTOINDEX (Milvus picks)."""
    kind = str(index.get("type", "hnsw")).lower()
    if kind == "hnsw":
        m, ef = int(index.get("m", 16)), int(index.get("ef_construct", 200))
        if m == 0:
            return "FLAT", {}, {}, "HNSW with m=0 (no graph, exact search) created as FLAT"
        return "HNSW", {"M": m, "efConstruction": ef}, {
            "ef": max(int(index.get("ef", 0)), SEARCH_EF)}, ""
    if kind == "flat":
        return "FLAT", {}, {}, ""
    if kind == "ivf_flat":
        nlist = int(index.get("nlist", 128))
        return "IVF_FLAT", {"nlist": nlist}, {
            "nprobe": int(index.get("nprobe", min(nlist, 32)))}, ""
    return "AUTOINDEX", {}, {}, f"index type {kind!r} has no Milvus equivalent: created as AUTOINDEX"


def _literal(value: Any) -> str:
    return orjson.dumps(value).decode()


def _expr(where: Where | None, *, acl_array: bool = False) -> str:
    if where is None:
        return ""
    parts = []
    if where.tenant is not None:
        parts.append(f"tenant == {_literal(where.tenant)}")
    if where.principal is not None:
        contains = "array_contains" if acl_array else "json_contains"
        parts.append(f"{contains}(acl, {_literal(where.principal)})")
    if where.metadata is not None:
        key, value = where.metadata
        parts.append(f"metadata[{_literal(key)}] == {_literal(value)}")
    return " and ".join(parts)
