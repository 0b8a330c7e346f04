"""``qdrant:URL_OR_PATH``: Qdrant through qdrant-client. An ``http(s)://`` URL reaches a
server; a path runs qdrant-client's embedded local mode in that directory; ``:memory:`` keeps
everything in the process (drills).

The collection gets the recorded dimension, distance and HNSW parameters; ``tenant`` gets a
keyword payload index marked ``is_tenant`` (Qdrant's multitenancy layout), ``acl`` and ``id``
keyword indexes. (Local mode ignores payload indexes and searches exactly.)"""

from __future__ import annotations

import array
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from daemon.errors import VecwalError
from daemon.restore.sinks.engine import SEARCH_EF, CollectionSpec, Where

_DISTANCE = {"cosine": "Cosine", "dot": "Dot", "l2": "Euclid"}


class QdrantEngine:
    normalizes_cosine = True

    def __init__(self, where: str, api_key: str | None = None) -> None:
        from qdrant_client import QdrantClient

        self.where = where
        self.local = not where.startswith(("http://", "https://"))
        self.name = f"qdrant:{where}"
        try:
            if where == ":memory:":
                self.client = QdrantClient(location=":memory:")
            elif self.local:
                self.client = QdrantClient(path=where)
            else:
                self.client = QdrantClient(url=where, api_key=api_key, timeout=60)
        except Exception as exc:  # qdrant-client raises RuntimeError, OSError, httpx errors
            raise VecwalError(f"cannot open {self.name}: {exc}",
                              "check the path (not open in another process) or the server URL"
                              ) from None

    def exists(self, collection: str) -> bool:
        return bool(self.client.collection_exists(collection))

    def drop(self, collection: str) -> None:
        self.client.delete_collection(collection)

    def create(self, collection: str, spec: CollectionSpec) -> None:
        from qdrant_client import models as m

        index = spec.index
        hnsw = None
        if str(index.get("type", "hnsw")).lower() == "hnsw":
            hnsw = m.HnswConfigDiff(m=_int(index, "m"), ef_construct=_int(index, "ef_construct"))
        self.client.create_collection(
            collection, vectors_config=m.VectorParams(size=spec.dimension,
                                                      distance=m.Distance(_DISTANCE[spec.metric])),
            hnsw_config=hnsw)
        with warnings.catch_warnings():  # local mode: "payload indexes have no effect"
            warnings.simplefilter("ignore", UserWarning)
            self.client.create_payload_index(collection, "tenant", field_schema=m.KeywordIndexParams(
                type=m.KeywordIndexType.KEYWORD, is_tenant=True))
            for name in ("acl", "id"):
                self.client.create_payload_index(collection, name,
                                                 field_schema=m.PayloadSchemaType.KEYWORD)

    def insert(self, collection: str, keys: list[str], vectors: np.ndarray,
               payloads: list[dict[str, Any]]) -> None:
        # qdrant-client's own bulk path (numpy in, batches, retries on a server).
        self.client.upload_collection(collection, vectors=vectors, payload=payloads,
                                      ids=list[Any](keys), batch_size=len(keys), parallel=1,
                                      wait=True)

    def set_alias(self, alias: str, collection: str) -> None:
        from qdrant_client import models as m

        ops: list[Any] = []
        if any(a.alias_name == alias for a in self.client.get_aliases().aliases):
            ops.append(m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=alias)))
        ops.append(m.CreateAliasOperation(create_alias=m.CreateAlias(
            collection_name=collection, alias_name=alias)))
        self.client.update_collection_aliases(ops)

    def count(self, collection: str, where: Where | None = None) -> int:
        return int(self.client.count(collection, count_filter=_filter(where), exact=True).count)

    def search(self, collection: str, vector: np.ndarray, k: int,
               where: Where | None = None) -> list[str]:
        from qdrant_client import models as m

        params = None if self.local else m.SearchParams(hnsw_ef=max(SEARCH_EF, k))
        res = self.client.query_points(collection, query=vector.tolist(), limit=k,
                                       query_filter=_filter(where), with_payload=False,
                                       search_params=params)  # local mode searches exactly
        return [str(p.id) for p in res.points]

    def select(self, collection: str, where: Where) -> set[str]:
        # Local mode evaluates a filter over every point for each page: one page is cheaper.
        page = max(1, self.count(collection)) if self.local else 2048
        out: set[str] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(collection, scroll_filter=_filter(where),
                                                limit=page, offset=offset, with_payload=False)
            out.update(str(p.id) for p in points)
            if offset is None:
                return out

    def scan(self, collection: str) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
        offset = None
        page = 8192 if self.local else 1024
        while True:
            points, offset = self.client.scroll(collection, limit=page, offset=offset,
                                                with_payload=True, with_vectors=True)
            for p in points:
                yield str(p.id), dict(p.payload or {}), _vector(p.vector)
            if offset is None:
                return

    def fetch(self, collection: str, keys: list[str]
              ) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
        """The points of these keys, as ``scan`` gives them (keys the engine lacks left
        out): reconciliation re-reads the few whose normalised vector hashed otherwise."""
        for i in range(0, len(keys), 1024):
            for p in self.client.retrieve(collection, ids=list[Any](keys[i:i + 1024]),
                                          with_payload=True, with_vectors=True):
                yield str(p.id), dict(p.payload or {}), _vector(p.vector)

    def finish(self) -> None:
        pass

    def close(self) -> None:
        self.client.close()


def _vector(vec: Any) -> np.ndarray:
    """A point's vector as float32: from a list of floats through ``array`` (a quarter
    cheaper than ``np.asarray`` of the list, the same values)."""
    if isinstance(vec, list):
        return np.frombuffer(array.array("f", vec), dtype=np.float32)
    return np.asarray(vec, dtype=np.float32)


def _int(index: dict[str, Any], key: str) -> int | None:
    value = index.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _filter(where: Where | None) -> Any:
    if where is None:
        return None
    from qdrant_client import models as m

    must: list[Any] = []
    if where.tenant is not None:
        must.append(m.FieldCondition(key="tenant", match=m.MatchValue(value=where.tenant)))
    if where.principal is not None:
        must.append(m.FieldCondition(key="acl", match=m.MatchValue(value=where.principal)))
    if where.metadata is not None:
        key, value = where.metadata
        must.append(m.FieldCondition(key=f"metadata.{key}", match=m.MatchValue(value=value)))
    return m.Filter(must=must)
