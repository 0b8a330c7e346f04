"""``milvus:URI``: Milvus through pymilvus' MilvusClient. A path ending in ``.db`` runs Milvus
Lite in that file; an ``http(s)://`` URI reaches a server.

The collection gets a fixed schema: ``pk`` (the point key), ``vector`` (FLOAT_VECTOR of the
recorded dimension, indexed with the recorded type and parameters), ``id``, ``tenant`` (the
partition key, Milvus' multitenancy layout), ``document`` (VARCHAR) and nullable JSON fields
``metadata``, ``acl``, ``embedding_model``, ``source``, ``vecwal``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from daemon.errors import VecwalError
from daemon.restore.sinks.engine import SEARCH_EF, CollectionSpec, EngineRefused, Where

_METRIC = {"cosine": "COSINE", "dot": "IP", "l2": "L2"}
MAX_TEXT = 65_535
"""Milvus' VARCHAR limit in bytes: the id, tenant and document must fit."""
_JSON_FIELDS = ("metadata", "acl", "embedding_model", "source", "vecwal")


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
        try:
            self.client = MilvusClient(uri=uri, token=token or "")
        except Exception as exc:  # pymilvus raises MilvusException, ConnectionError, ...
            raise VecwalError(f"cannot open {self.name}: {exc}",
                              "check the .db path (its directory must exist) or the server URI"
                              ) from None

    def exists(self, collection: str) -> bool:
        return bool(self.client.has_collection(collection))

    def drop(self, collection: str) -> None:
        for alias in self.client.list_aliases(collection).get("aliases", []):
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
        s.add_field("document", DataType.VARCHAR, max_length=MAX_TEXT, nullable=True)
        for name in _JSON_FIELDS:
            s.add_field(name, DataType.JSON, nullable=True)
        kind, params, search = _index(spec.index)
        ip = self.client.prepare_index_params()
        ip.add_index("vector", index_type=kind, metric_type=_METRIC[spec.metric], params=params)
        self.client.create_collection(collection, schema=s, index_params=ip,
                                      consistency_level="Strong")
        self._index[collection] = search
        self._loaded.add(collection)  # create_collection with an index loads it

    def insert(self, collection: str, keys: list[str], vectors: np.ndarray,
               payloads: list[dict[str, Any]]) -> None:
        rows = []
        for key, vec, p in zip(keys, vectors, payloads, strict=True):
            for name in ("id", "tenant", "document"):
                if p[name] is not None and len(p[name].encode()) > MAX_TEXT:
                    raise EngineRefused(
                        f"record {p['tenant'][:40]}/{p['id'][:80]}: {name} is longer than "
                        f"Milvus' {MAX_TEXT}-byte VARCHAR", "restore that collection into "
                        "qdrant: or dir:, or leave it out with --collection")
            rows.append({"pk": key, "vector": vec, **p})
        self.client.insert(collection, rows)

    def set_alias(self, alias: str, collection: str) -> None:
        try:
            self.client.create_alias(collection, alias)
        except Exception:  # the alias exists (on another collection): move it
            self.client.alter_alias(collection, alias)

    def count(self, collection: str, where: Where | None = None) -> int:
        self._load(collection)
        res = self.client.query(collection, filter=_expr(where), output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def search(self, collection: str, vector: np.ndarray, k: int,
               where: Where | None = None) -> list[str]:
        self._load(collection)
        params = self._index.get(collection) or {}
        if "ef" in params:
            params = {"ef": max(params["ef"], k)}
        res = self.client.search(collection, data=[vector], limit=k, filter=_expr(where),
                                 search_params={"params": params}, output_fields=["pk"])
        return [str(hit["pk"] if "pk" in hit else hit["id"]) for hit in res[0]]

    def select(self, collection: str, where: Where) -> set[str]:
        expr = _expr(where)
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
        for row in self._iterate(collection, "", fields, 8192):
            vec = np.asarray(row.pop("vector"), dtype=np.float32)
            yield str(row.pop("pk")), row, vec

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
        """A collection opened again (another process, Milvus Lite reopened) starts released."""
        if collection not in self._loaded:
            self.client.load_collection(collection)
            self._loaded.add(collection)

    def finish(self) -> None:
        for collection in self._index:
            if self.client.has_collection(collection):
                self.client.flush(collection)

    def close(self) -> None:
        self.client.close()
        if self.lite:
            # Milvus Lite serves the file from a thread of this process and keeps it locked
            # until released: another process (a later restore, a drill) could not open it.
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)


def _index(index: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(index type, build params, search params) from the recorded index."""
    kind = str(index.get("type", "hnsw")).lower()
    if kind == "hnsw":
        m, ef = index.get("m", 16), index.get("ef_construct", 200)
        return "HNSW", {"M": int(m), "efConstruction": int(ef)}, {
            "ef": max(int(index.get("ef", 0)), SEARCH_EF)}
    if kind == "flat":
        return "FLAT", {}, {}
    if kind == "ivf_flat":
        nlist = int(index.get("nlist", 128))
        return "IVF_FLAT", {"nlist": nlist}, {"nprobe": int(index.get("nprobe", min(nlist, 32)))}
    return "AUTOINDEX", {}, {}


def _literal(value: Any) -> str:
    return orjson.dumps(value).decode()


def _expr(where: Where | None) -> str:
    if where is None:
        return ""
    parts = []
    if where.tenant is not None:
        parts.append(f"tenant == {_literal(where.tenant)}")
    if where.principal is not None:
        parts.append(f"json_contains(acl, {_literal(where.principal)})")
    if where.metadata is not None:
        key, value = where.metadata
        parts.append(f"metadata[{_literal(key)}] == {_literal(value)}")
    return " and ".join(parts)
