"""``chroma:URL_OR_PATH``: Chroma through the chromadb client. An ``http(s)://HOST:PORT`` URL
reaches a Chroma server (``chroma run``); a path opens Chroma's embedded persistent mode
(``PersistentClient``) in that directory.

**Layout: one Chroma collection per vecwal collection, the tenant a metadata field.** The
names stay the backed-up ones (``--rename`` and the drills' prefixes map one to one, and an
application finds its collection where it was), a repository with thousands of tenants does
not become thousands of Chroma collections (each its own HNSW segment, files and memory), and
it is the layout of the Qdrant and Milvus sinks: tenant isolation is a ``where`` equality on
``tenant``, which validation proves (per-tenant counts, each probed tenant selects exactly its
records, a tenant-scoped search sees no other tenant). Chroma's tenant/database model was not
chosen: it is the server's namespace and access boundary (a client is bound to one tenant and
database, creating them needs admin rights), not a partition of one collection's data, and an
application would need one client per vecwal tenant. Who needs physical separation restores
one tenant beside the others: ``--tenant T --rename C:C-T``.

Each record is one Chroma record: the id is the point key (a UUID of tenant and id, as in the
other engines), the embedding is always sent (no embedding function is ever made: every
collection is created and opened with ``embedding_function=None``), the document is Chroma's
document, and the metadata holds what applications filter on as plain values:

- ``id`` and ``tenant`` as strings, ``embedding_model.name`` and ``embedding_model.version``
  (each entry of the record's model that is set);
- ``acl`` as a list of strings: Chroma 1.5 stores homogeneous lists and filters them with
  ``{"acl": {"$contains": principal}}``. It refuses empty lists, so an empty acl and no acl are
  both stored without the key and told apart by the exact block below;
- ``metadata.<key>`` for each top-level key of the record's metadata whose value Chroma can
  hold (a string, a bool, a 64-bit integer, a finite float, or a non-empty list of one such
  type); nested objects, nulls and mixed lists stay only in the exact block;
- ``vecwal``: a JSON text with the metadata and source texts and the model as written, the
  event and version fields and the sparse vector, so the state digest can be recomputed from Chroma alone. The
  plain values win where they differ from it: a changed acl or metadata value changes the
  digest.

Metric: cosine, dot and l2 become ``hnsw:space`` cosine, ip and l2 (Chroma returns stored
vectors as written, not normalised). The recorded HNSW ``m`` and ``ef_construct`` become
``max_neighbors`` and ``ef_construction``; ``ef_search`` (a collection setting in Chroma, not
a query one) is the recorded ``ef`` or at least 128, the ef the other engines' validation
searches use. Chroma has only HNSW (locally and on a single-node server): a recorded ``flat``
or other index type is created as HNSW with Chroma's defaults, and the restore says so in a
note naming the mapping. Chroma has no aliases: a note lists the ones not created.

Loading is Chroma's own ``collection.add``, ``BATCH`` rows a call whatever the bucket sizes,
from one adding thread while the restore decodes the next rows (``PENDING``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

from daemon.errors import VecwalError
from daemon.restore.sinks.adding import Adder
from daemon.restore.sinks.engine import BATCH, SEARCH_EF, CollectionSpec, EngineRefused, Where

_SPACE = {"cosine": "cosine", "dot": "ip", "l2": "l2"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")
META = "metadata."
"""Prefix of the record's metadata keys among Chroma's metadata fields."""
MODEL = "embedding_model"
PAGE = 1000
"""Records per read while scanning."""
_I64 = 2**63
PENDING = 2
"""Batches handed to the adding thread and not yet added: the restore decodes the next
batch while Chroma takes the last (the client waits on the server without the GIL). Rows
are added BATCH at a time whatever the bucket sizes: each add has a fixed cost in Chroma,
so the last, short batch of every bucket would cost as much as a full one."""


class ChromaEngine:
    normalizes_cosine = False

    def __init__(self, where: str) -> None:
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError:
            raise VecwalError("the chroma: sink needs the chromadb package",
                              "pip install 'chromadb>=1.5.9,<1.6' (or vecwal[chroma])") from None
        self.where = where
        self.name = f"chroma:{where}"
        self.notes: list[str] = []
        self._open: dict[str, Any] = {}
        self._adder = Adder("chroma-add", PENDING)
        self._rows: dict[str, tuple[list[str], list[np.ndarray], list[dict[str, Any]]]] = {}
        settings = Settings(anonymized_telemetry=False)
        try:
            if where.startswith(("http://", "https://")):
                url = urlsplit(where)
                secure = url.scheme == "https"
                self.client: Any = chromadb.HttpClient(
                    host=url.hostname or "localhost", port=url.port or (443 if secure else 8000),
                    ssl=secure, settings=settings)
            else:
                self.client = chromadb.PersistentClient(path=where, settings=settings)
            self.client.heartbeat()
        except Exception as exc:  # chromadb raises ValueError, httpx and its own errors
            raise VecwalError(f"cannot open {self.name}: {exc}",
                              "check the server URL (chroma run --host --port) or the path"
                              ) from None

    def _collection(self, name: str) -> Any:
        col = self._open.get(name)
        if col is None:
            col = self._open[name] = self.client.get_collection(name, embedding_function=None)
        return col

    def exists(self, collection: str) -> bool:
        from chromadb.errors import NotFoundError

        _check_name(collection)
        try:
            self._collection(collection)
        except NotFoundError:
            return False
        return True

    def drop(self, collection: str) -> None:
        self._drain()
        self._open.pop(collection, None)
        self.client.delete_collection(collection)

    def create(self, collection: str, spec: CollectionSpec) -> None:
        _check_name(collection)
        hnsw: dict[str, Any] = {"space": _SPACE[spec.metric]}
        index = spec.index
        kind = str(index.get("type", "hnsw")).lower()
        if kind == "hnsw":
            for ours, theirs in (("m", "max_neighbors"), ("ef_construct", "ef_construction")):
                if _int(index.get(ours)):
                    hnsw[theirs] = index[ours]
            hnsw["ef_search"] = max(SEARCH_EF, index["ef"] if _int(index.get("ef")) else 0)
        else:
            self.notes.append(f"{collection}: index {kind!r} has no equivalent in Chroma; "
                              f"created as Chroma's HNSW (space {hnsw['space']}, its default "
                              "parameters)")
        self._open[collection] = self.client.create_collection(
            collection, embedding_function=None, configuration={"hnsw": hnsw},
            metadata={"vecwal_dimension": spec.dimension, "vecwal_metric": spec.metric,
                      "vecwal_index": orjson.dumps(index).decode()})

    def insert(self, collection: str, keys: list[str], vectors: np.ndarray,
               payloads: list[dict[str, Any]]) -> None:
        """Gathered into batches of BATCH rows, each queued to one adding thread (in order);
        an error comes out of the next call."""
        rows = self._rows.setdefault(collection, ([], [], []))
        rows[0].extend(keys)
        rows[1].append(vectors)
        rows[2].extend(payloads)
        if len(rows[0]) >= BATCH:
            self._submit(collection, BATCH)

    def _submit(self, collection: str, size: int) -> None:
        keys, chunks, payloads = self._rows.pop(collection)
        vectors = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        for s in range(0, len(keys) - size + 1, size):
            self._adder.submit(self._add, collection, keys[s:s + size], vectors[s:s + size],
                               payloads[s:s + size])
        rest = len(keys) - len(keys) % size
        if rest < len(keys):
            self._rows[collection] = (keys[rest:], [vectors[rest:]], payloads[rest:])

    def _add(self, collection: str, keys: list[str], vectors: np.ndarray,
             payloads: list[dict[str, Any]]) -> None:
        docs = [p["document"] for p in payloads]
        self._collection(collection).add(
            ids=keys, embeddings=vectors, metadatas=[to_metadata(p) for p in payloads],
            documents=docs if any(d is not None for d in docs) else None)

    def _drain(self) -> None:
        """Every gathered row added."""
        for collection in list(self._rows):
            self._submit(collection, max(1, len(self._rows[collection][0])))
        self._adder.drain()

    def set_alias(self, alias: str, collection: str) -> None:
        self.notes.append(f"alias {alias} -> {collection} not created: Chroma has no aliases")

    def count(self, collection: str, where: Where | None = None) -> int:
        self._drain()
        col = self._collection(collection)
        if where is None:
            return int(col.count())
        return len(col.get(where=_where(where), include=[])["ids"])

    def search(self, collection: str, vector: np.ndarray, k: int,
               where: Where | None = None) -> list[str]:
        self._drain()
        res = self._collection(collection).query(
            query_embeddings=[np.asarray(vector, dtype=np.float32)], n_results=k,
            where=_where(where), include=[])
        return [str(i) for i in res["ids"][0]]

    def select(self, collection: str, where: Where) -> set[str]:
        self._drain()
        return set(self._collection(collection).get(where=_where(where), include=[])["ids"])

    def scan(self, collection: str) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
        self._drain()
        col = self._collection(collection)
        offset = 0
        while True:
            page = col.get(limit=PAGE, offset=offset,
                           include=["embeddings", "metadatas", "documents"])
            ids = page["ids"]
            vectors = np.asarray(page["embeddings"], dtype=np.float32)
            for i, key in enumerate(ids):
                yield str(key), from_metadata(page["metadatas"][i], page["documents"][i]), vectors[i]
            if len(ids) < PAGE:
                return
            offset += len(ids)

    def fetch(self, collection: str, keys: list[str]
              ) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
        """The points of these keys, as ``scan`` gives them (keys Chroma lacks left out):
        reconciliation re-reads the few whose vector hashed otherwise (Chroma's local store
        gives some back a bit off)."""
        self._drain()
        col = self._collection(collection)
        for i in range(0, len(keys), PAGE):
            page = col.get(ids=keys[i:i + PAGE], include=["embeddings", "metadatas", "documents"])
            vectors = np.asarray(page["embeddings"], dtype=np.float32)
            for j, key in enumerate(page["ids"]):
                yield str(key), from_metadata(page["metadatas"][j], page["documents"][j]), \
                    vectors[j]

    def finish(self) -> None:
        self._drain()

    def close(self) -> None:
        try:
            self._drain()
        finally:
            self._adder.close()
            self._open.clear()
            self.client.close()


def _check_name(collection: str) -> None:
    if not _NAME.match(collection) or ".." in collection:
        raise EngineRefused(
            f"{collection!r} is not a Chroma collection name (3-512 characters of "
            "[A-Za-z0-9._-], starting and ending with a letter or digit, no '..')",
            "restore it under another name with --rename OLD:NEW")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _plain(value: Any) -> bool:
    """A value Chroma's metadata holds as it is."""
    if isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -_I64 <= value < _I64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list) and value:
        first = type(value[0])
        return first in (str, bool, int, float) and all(
            type(v) is first for v in value) and all(_plain(v) for v in value)
    return False


def to_metadata(p: dict[str, Any]) -> dict[str, Any]:
    """One record's Chroma metadata, from the engine payload (``engine.to_payload``)."""
    meta: dict[str, Any] = {"id": p["id"], "tenant": p["tenant"]}
    if p["acl"]:
        meta["acl"] = list(p["acl"])
    model = p["embedding_model"]
    if isinstance(model, str):
        meta[MODEL] = model
    _flatten(meta, MODEL + ".", model)
    _flatten(meta, META, p["metadata"])
    meta["vecwal"] = orjson.dumps({
        **p["vecwal"], "acl": p["acl"] if not p["acl"] else True,
        "embedding_model": model}).decode()
    return meta


def from_metadata(meta: dict[str, Any] | None, document: str | None) -> dict[str, Any]:
    """The engine payload back from Chroma's metadata: the fields ``engine.from_payload``
    reads. A plain value that was removed or changed shows in what is rebuilt."""
    meta = dict(meta or {})
    exact = orjson.loads(meta.get("vecwal") or "{}")
    acl = meta.get("acl")
    if acl is None and exact.get("acl") is not True:
        acl = exact.get("acl")  # None or [] as written (Chroma holds no empty list)
    model = exact.get("embedding_model")
    model = meta.get(MODEL) if isinstance(model, str) or MODEL in meta else _rebuild(
        meta, MODEL + ".", model)
    text = exact.get("metadata")
    source = exact.get("source")
    return {
        "id": meta.get("id"), "tenant": meta.get("tenant", ""), "document": document,
        "metadata": _rebuild(meta, META, None if text is None else orjson.loads(text)),
        "acl": acl, "embedding_model": model,
        "source": None if source is None else orjson.loads(source), "vecwal": exact,
    }


def _flatten(meta: dict[str, Any], prefix: str, value: Any) -> None:
    """Each top-level entry of an object that Chroma can hold, as ``prefix + key``."""
    if isinstance(value, dict):
        for key, v in value.items():
            if _plain(v):
                meta[prefix + key] = v


def _rebuild(meta: dict[str, Any], prefix: str, exact: Any) -> Any:
    """The object as written, its plain entries taken from Chroma (a removed one removed,
    one Chroma has beyond it added)."""
    if not isinstance(exact, dict):
        return exact
    out = dict(exact)
    for key, value in exact.items():
        if _plain(value):
            if prefix + key in meta:
                out[key] = meta[prefix + key]
            else:
                del out[key]
    for key, value in meta.items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
    return out


def _where(where: Where | None) -> dict[str, Any] | None:
    if where is None:
        return None
    parts: list[dict[str, Any]] = []
    if where.tenant is not None:
        parts.append({"tenant": where.tenant})
    if where.principal is not None:
        parts.append({"acl": {"$contains": where.principal}})
    if where.metadata is not None:
        key, value = where.metadata
        parts.append({META + key: value})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}
