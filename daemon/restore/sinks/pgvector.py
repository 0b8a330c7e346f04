"""``pgvector:postgresql://USER:PASSWORD@HOST:PORT/DB``: PostgreSQL with the pgvector extension,
through psycopg 3.

A collection is a table in the connection's current schema (``search_path``; ``?options=
-csearch_path%3Dvectors`` in the URL picks another), with one row per point::

    key uuid             the point key (UUID5 of tenant and id), primary key
    id text, tenant text
    vector vector(DIM)   pgvector's type, of the recorded dimension
    document text
    metadata jsonb       the plain value applications filter on (metadata->'lang' = '"en"')
    acl text[]           NULL when the record has none
    embedding_model jsonb  {"name": ..., "version": ...} as recorded
    source jsonb
    vecwal jsonb         what the state digest needs byte for byte (engine.to_payload)

The table comment holds ``{"vecwal": {"metric": ..., "index": ...}}``, so a later process
searches with the collection's operator. An alias is a view ``SELECT * FROM collection``
(comment ``vecwal alias``); dropping a collection drops its aliases (``CASCADE``).

The load order is the one PostgreSQL's documentation gives for bulk loads: create the bare
table; COPY ... FROM STDIN (FORMAT BINARY), the rows encoded here from the numpy batch (no
row inserts, no text parsing of 768 floats per row on the server); then, in ``finish``, the
primary key, the tenant and acl indexes, the vector index, ANALYZE. Index builds run with
``maintenance_work_mem`` raised to what the HNSW graph needs (at most ``MAX_BUILD_MEM``), so
pgvector builds it in memory with its parallel workers.

Index mapping: ``hnsw`` -> HNSW (``m``, ``ef_construct``/``ef_construction``) with the
metric's operator class (cosine -> vector_cosine_ops, dot -> vector_ip_ops, l2 ->
vector_l2_ops); ``ivf_flat`` -> IVFFlat (``lists`` = ``nlist``); ``flat`` -> no index (exact
scans, which is what flat means). Any other type is mapped to HNSW with pgvector's defaults,
and the restore's notes say so. Searches set ``hnsw.ef_search`` (at least ``SEARCH_EF``) and
iterative index scans, so a filtered search (one tenant, one principal) still returns k rows.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import structlog

from daemon.errors import VecwalError
from daemon.restore.sinks.engine import SEARCH_EF, CollectionSpec, EngineRefused, Where

log = structlog.get_logger("vecwal.restore.pgvector")

_OPS = {"cosine": "vector_cosine_ops", "dot": "vector_ip_ops", "l2": "vector_l2_ops"}
_DISTANCE = {"cosine": "<=>", "dot": "<#>", "l2": "<->"}
COLUMNS = ("key", "id", "tenant", "vector", "document", "metadata", "acl", "embedding_model",
           "source", "vecwal")
MAX_NAME = 63
"""PostgreSQL's identifier limit in bytes (NAMEDATALEN - 1): longer names are truncated."""
MAX_DIM = 16_000
"""pgvector's vector type holds at most 16,000 dimensions (HNSW indexes at most 2,000)."""
MAX_HNSW_DIM = 2_000
FLUSH_BYTES = 8 << 20
"""Encoded rows are sent in one COPY once this much is buffered (and at ``finish``)."""
MAX_BUILD_MEM = 2 << 30
SCAN_PAGE = 2048

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_FIELDS = struct.pack(">h", len(COLUMNS))
_UUID_LEN = struct.pack(">i", 16)
_TEXT_OID = 25
_LEN = struct.Struct(">i")


class PgvectorEngine:
    normalizes_cosine = False

    def __init__(self, dsn: str) -> None:
        import psycopg
        from psycopg.types.json import set_json_loads

        self.dsn = dsn
        self.name = f"pgvector:{redacted(dsn)}"
        self.notes: list[str] = []
        """Index mappings the restore reports (EngineSink adds them to its notes)."""
        self._specs: dict[str, tuple[str, dict[str, Any]]] = {}
        """collection -> (metric, index), for the tables this engine created or read."""
        self._pending: dict[str, list[bytes]] = {}
        self._pending_bytes: dict[str, int] = {}
        self._rows: dict[str, int] = {}
        self._built: set[str] = set()
        self._session: tuple[str, ...] = ()
        self.build_seconds = 0.0
        """Time spent building indexes after the load (in ``finish``)."""
        try:
            self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise VecwalError(f"cannot open {self.name}: {str(exc).strip()}",
                              "check the URL (postgresql://USER:PASSWORD@HOST:PORT/DB), that "
                              "the server is up and the password is right") from None
        set_json_loads(orjson.loads, self.conn)
        have = self.conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if have is None:
            try:
                self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as exc:
                self.conn.close()
                raise EngineRefused(
                    f"{self.name} has no pgvector extension and it cannot be created: "
                    f"{str(exc).strip()}",
                    "run CREATE EXTENSION vector in that database as a superuser (or install "
                    "pgvector on the server), then restore again") from None

    # -- collections ------------------------------------------------------------------------
    def _kind(self, name: str) -> str | None:
        row = self.conn.execute(
            "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND n.nspname = current_schema()", (name,)).fetchone()
        return None if row is None else str(row[0])

    def exists(self, collection: str) -> bool:
        return self._kind(collection) is not None

    def drop(self, collection: str) -> None:
        from psycopg import sql

        kind = self._kind(collection)
        what = "VIEW" if kind == "v" else "MATERIALIZED VIEW" if kind == "m" else "TABLE"
        self.conn.execute(sql.SQL("DROP {} IF EXISTS {} CASCADE").format(
            sql.SQL(what), sql.Identifier(collection)))
        for d in (self._specs, self._pending, self._pending_bytes, self._rows):
            d.pop(collection, None)
        self._built.discard(collection)

    def create(self, collection: str, spec: CollectionSpec) -> None:
        from psycopg import sql

        _check_name(collection, "collection")
        if spec.dimension > MAX_DIM:
            raise EngineRefused(f"collection {collection!r} has {spec.dimension} dimensions; "
                                f"pgvector's vector type holds at most {MAX_DIM}",
                                "restore that collection into qdrant:, milvus: or dir:, or "
                                "leave it out with --collection")
        index = self._map_index(collection, spec)
        comment = orjson.dumps({"vecwal": {"metric": spec.metric, "index": index}}).decode()
        t = sql.Identifier(collection)
        with self.conn.transaction():
            self.conn.execute(sql.SQL(
                "CREATE TABLE {} (key uuid NOT NULL, id text NOT NULL, tenant text NOT NULL, "
                "vector vector({}) NOT NULL, document text, metadata jsonb, acl text[], "
                "embedding_model jsonb, source jsonb, vecwal jsonb)").format(
                    t, sql.Literal(spec.dimension)))
            self.conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
                t, sql.Literal(comment)))
        self._specs[collection] = (spec.metric, index)
        self._rows[collection] = 0

    def _map_index(self, collection: str, spec: CollectionSpec) -> dict[str, Any]:
        """The recorded index as pgvector builds it: {"type": "hnsw"|"ivfflat"|"flat", ...}."""
        recorded = spec.index
        kind = str(recorded.get("type", "hnsw")).lower()
        if kind == "flat":
            return {"type": "flat"}
        if kind == "ivf_flat":
            nlist = _int(recorded, "nlist") or 128
            return {"type": "ivfflat", "lists": nlist,
                    "probes": _int(recorded, "nprobe") or min(nlist, 32)}
        m = _int(recorded, "m") or 16
        ef_c = _int(recorded, "ef_construct") or _int(recorded, "ef_construction") or 64
        out: dict[str, Any] = {"type": "hnsw", "m": m, "ef_construction": max(ef_c, 2 * m),
                               "ef_search": max(_int(recorded, "ef") or 0, SEARCH_EF)}
        if ef_c < 2 * m:
            self.notes.append(f"{collection}: ef_construction {ef_c} raised to {2 * m} "
                              "(pgvector needs at least 2 x m)")
        if kind != "hnsw":
            out = {"type": "hnsw", "m": 16, "ef_construction": 64, "ef_search": SEARCH_EF}
            note = (f"{collection}: index type {kind!r} has no pgvector equivalent; mapped to "
                    "HNSW (m=16, ef_construction=64)")
            self.notes.append(note)
            log.warning("index type mapped", collection=collection, recorded=kind, to="hnsw")
        if spec.dimension > MAX_HNSW_DIM:
            self.notes.append(f"{collection}: {spec.dimension} dimensions is above pgvector's "
                              f"HNSW limit ({MAX_HNSW_DIM}); no vector index, exact search")
            return {"type": "flat"}
        return out

    def set_alias(self, alias: str, collection: str) -> None:
        from psycopg import sql

        _check_name(alias, "alias")
        kind = self._kind(alias)
        if kind not in (None, "v"):
            raise EngineRefused(f"alias {alias!r}: {self.name} has a table of that name",
                                "drop or rename that table, or restore with --rename (which "
                                "creates no aliases)")
        a = sql.Identifier(alias)
        with self.conn.transaction():
            self.conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(a))
            self.conn.execute(sql.SQL("CREATE VIEW {} AS SELECT * FROM {}").format(
                a, sql.Identifier(collection)))
            self.conn.execute(sql.SQL("COMMENT ON VIEW {} IS {}").format(
                a, sql.Literal(f"vecwal alias of {collection}")))

    # -- loading ----------------------------------------------------------------------------
    def insert(self, collection: str, keys: list[str], vectors: np.ndarray,
               payloads: list[dict[str, Any]]) -> None:
        parts = self._pending.setdefault(collection, [])
        before = len(parts)
        encode_rows(parts, keys, vectors, payloads)
        size = sum(len(p) for p in parts[before:])
        self._pending_bytes[collection] = self._pending_bytes.get(collection, 0) + size
        self._rows[collection] = self._rows.get(collection, 0) + len(keys)
        if self._pending_bytes[collection] >= FLUSH_BYTES:
            self._flush(collection)

    def _flush(self, collection: str) -> None:
        import psycopg
        from psycopg import sql

        parts = self._pending.pop(collection, [])
        self._pending_bytes.pop(collection, None)
        if not parts:
            return
        stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(collection), sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))
        try:
            with self.conn.cursor() as cur, cur.copy(stmt) as copy:
                copy.write(_HEADER)
                for p in parts:
                    copy.write(p)
                copy.write(_TRAILER)
        except (psycopg.errors.UntranslatableCharacter,
                psycopg.errors.CharacterNotInRepertoire) as exc:
            raise EngineRefused(f"{collection}: PostgreSQL refused a value: "
                                f"{str(exc).strip()}", "text and jsonb cannot hold NUL "
                                "characters: restore that collection into qdrant:, milvus: or "
                                "dir:, or leave it out with --collection") from None

    def finish(self) -> None:
        """Send what is buffered, then build the indexes of every table loaded since."""
        for collection in list(self._pending):
            self._flush(collection)
        for collection, rows in self._rows.items():
            if collection not in self._built and collection in self._specs:
                self._build(collection, rows)
                self._built.add(collection)

    def _build(self, collection: str, rows: int) -> None:
        import time

        metric, index = self._specs[collection]
        began = time.monotonic()
        build_indexes(self.conn, collection, metric, index, rows)
        self.build_seconds += time.monotonic() - began

    def spec_of(self, collection: str) -> tuple[str, dict[str, Any]]:
        """(metric, index as built) of a table, from this engine or the table's comment."""
        if collection not in self._specs:
            row = self.conn.execute("SELECT obj_description(%s::regclass, 'pg_class')",
                                    (_regclass(collection),)).fetchone()
            meta = (orjson.loads(row[0]) if row and row[0] else {}).get("vecwal") or {}
            self._specs[collection] = (str(meta.get("metric", "cosine")),
                                       dict(meta.get("index") or {"type": "hnsw"}))
        return self._specs[collection]

    # -- reading ----------------------------------------------------------------------------
    def count(self, collection: str, where: Where | None = None) -> int:
        from psycopg import sql

        cond, args = _where(where)
        row = self.conn.execute(sql.SQL("SELECT count(*) FROM {}{}").format(
            sql.Identifier(collection), cond), args).fetchone()
        return int(row[0]) if row else 0

    def search(self, collection: str, vector: np.ndarray, k: int,
               where: Where | None = None) -> list[str]:
        from psycopg import sql

        metric, index = self.spec_of(collection)
        self._search_settings(index, k)
        cond, args = _where(where)
        query = "[" + ",".join(map(repr, np.asarray(vector, np.float32).tolist())) + "]"
        rows = self.conn.execute(
            sql.SQL("SELECT key FROM {}{} ORDER BY vector {} %s::vector LIMIT %s").format(
                sql.Identifier(collection), cond, sql.SQL(_DISTANCE[metric])),
            [*args, query, k]).fetchall()
        return [str(r[0]) for r in rows]

    def _search_settings(self, index: dict[str, Any], k: int) -> None:
        if index.get("type") == "ivfflat":
            want: tuple[str, ...] = ("ivfflat", str(index.get("probes", 32)))
            sets = [("ivfflat.probes", want[1]), ("ivfflat.iterative_scan", "relaxed_order")]
        else:
            want = ("hnsw", str(min(1000, max(int(index.get("ef_search", SEARCH_EF)), k))))
            sets = [("hnsw.ef_search", want[1]), ("hnsw.iterative_scan", "strict_order")]
        if self._session != want:
            for name, value in sets:
                self.conn.execute("SELECT set_config(%s, %s, false)", (name, value))
            self._session = want

    def select(self, collection: str, where: Where) -> set[str]:
        from psycopg import sql

        cond, args = _where(where)
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT key FROM {}{}").format(sql.Identifier(collection), cond),
                        args)
            return {str(r[0]) for r in cur}

    def scan(self, collection: str) -> Iterator[tuple[str, dict[str, Any], np.ndarray]]:
        """Every row, in pages of ``SCAN_PAGE`` through a server-side cursor (in its own
        transaction); vectors come as pgvector's binary form (``vector_send``)."""
        from psycopg import sql

        names = [c for c in COLUMNS if c not in ("key", "vector")]
        stmt = sql.SQL("SELECT key, vector_send(vector), {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(collection))
        with self.conn.transaction(), self.conn.cursor(name="vecwal_scan") as cur:
            cur.itersize = SCAN_PAGE
            cur.execute(stmt)
            for row in cur:
                raw = bytes(row[1])
                vec = np.frombuffer(raw, dtype=">f4", offset=4).astype(np.float32)
                yield str(row[0]), dict(zip(names, row[2:], strict=True)), vec

    def close(self) -> None:
        self.conn.close()


def build_indexes(conn: Any, collection: str, metric: str, index: dict[str, Any],
                  rows: int) -> None:
    """After the bulk load: the primary key, the tenant and acl indexes, the vector index as
    ``PgvectorEngine._map_index`` gave it, ANALYZE. ``maintenance_work_mem`` is raised for
    the session to what the vector index of ``rows`` rows needs (at most ``MAX_BUILD_MEM``),
    so pgvector builds the graph in memory."""
    from psycopg import sql

    t = sql.Identifier(collection)
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (key)").format(t))
    conn.execute(sql.SQL("CREATE INDEX ON {} (tenant)").format(t))
    conn.execute(sql.SQL("CREATE INDEX ON {} USING gin (acl)").format(t))
    if index["type"] != "flat":
        row = conn.execute(
            "SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = %s::regclass "
            "AND a.attname = 'vector'", (_regclass(collection),)).fetchone()
        dim = int(row[0]) if row is not None else 0
        need = min(int(rows * (dim * 4 + index.get("m", 16) * 2 * 8 + 128) * 1.3) + (64 << 20),
                   MAX_BUILD_MEM)
        current = conn.execute("SELECT setting::bigint * 1024 FROM pg_settings "
                               "WHERE name = 'maintenance_work_mem'").fetchone()
        if current is not None and int(current[0]) < need:
            conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(
                sql.Literal(f"{need >> 20}MB")))
        if index["type"] == "hnsw":
            with_ = sql.SQL("m = {}, ef_construction = {}").format(
                sql.Literal(index["m"]), sql.Literal(index["ef_construction"]))
        else:
            with_ = sql.SQL("lists = {}").format(sql.Literal(index["lists"]))
        conn.execute(sql.SQL("CREATE INDEX ON {} USING {} (vector {}) WITH ({})").format(
            t, sql.SQL(index["type"]), sql.SQL(_OPS[metric]), with_))
    conn.execute(sql.SQL("ANALYZE {}").format(t))


def encode_rows(out: list[bytes], keys: list[str], vectors: np.ndarray,
                payloads: list[dict[str, Any]]) -> None:
    """Append one COPY BINARY tuple per point to ``out`` (columns in ``COLUMNS`` order).

    Binary forms: uuid 16 bytes; text UTF-8; vector (pgvector's vector_recv) int16 dim,
    int16 0, dim float4 big-endian; jsonb a version byte 1 and the JSON text; text[] the
    array header (ndim, has-null flag, element type oid, length, lower bound) and each
    element as length + UTF-8."""
    n, dim = vectors.shape
    vec_head = struct.pack(">ihh", 4 + 4 * dim, dim, 0)
    big = np.ascontiguousarray(vectors, dtype=">f4").tobytes()
    step = 4 * dim
    pack = _LEN.pack
    for i in range(n):
        p = payloads[i]
        v = p["vecwal"]
        meta, source = v.get("metadata"), v.get("source")
        row = [_FIELDS, _UUID_LEN, bytes.fromhex(keys[i].replace("-", "")),
               _text(p["id"]), _text(p["tenant"]), vec_head, big[i * step:(i + 1) * step],
               _text(p["document"]), _jsonb(meta) if meta is not None else _json_value(
                   p["metadata"]),
               _text_array(p["acl"]), _json_value(p["embedding_model"]),
               _jsonb(source) if source is not None else _json_value(p["source"])]
        body = orjson.dumps(v)
        row.append(pack(len(body) + 1) + b"\x01" + body)
        out.append(b"".join(row))


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    b = value.encode()
    return _LEN.pack(len(b)) + b


def _jsonb(text: str) -> bytes:
    b = text.encode()
    return _LEN.pack(len(b) + 1) + b"\x01" + b


def _json_value(value: Any) -> bytes:
    if value is None:
        return _NULL
    b = orjson.dumps(value)
    return _LEN.pack(len(b) + 1) + b"\x01" + b


def _text_array(items: list[str] | None) -> bytes:
    if items is None:
        return _NULL
    if not items:
        body = struct.pack(">iii", 0, 0, _TEXT_OID)
    else:
        elems = [s.encode() for s in items]
        body = struct.pack(">iiiii", 1, 0, _TEXT_OID, len(elems), 1) + b"".join(
            _LEN.pack(len(e)) + e for e in elems)
    return _LEN.pack(len(body)) + body


def _where(where: Where | None) -> tuple[Any, list[Any]]:
    from psycopg import sql

    if where is None:
        return sql.SQL(""), []
    parts: list[Any] = []
    args: list[Any] = []
    if where.tenant is not None:
        parts.append(sql.SQL("tenant = %s"))
        args.append(where.tenant)
    if where.principal is not None:
        parts.append(sql.SQL("acl @> ARRAY[%s]::text[]"))
        args.append(where.principal)
    if where.metadata is not None:
        key, value = where.metadata
        parts.append(sql.SQL("metadata -> %s = %s::jsonb"))
        args += [key, orjson.dumps(value).decode()]
    if not parts:
        return sql.SQL(""), []
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), args


def _regclass(name: str) -> str:
    """A name as regclass input: quoted, so case and punctuation are kept."""
    return '"' + name.replace('"', '""') + '"'


def _check_name(name: str, what: str) -> None:
    if len(name.encode()) > MAX_NAME:
        raise EngineRefused(f"{what} name {name[:80]!r} is longer than PostgreSQL's "
                            f"{MAX_NAME}-byte identifiers", "restore it under a shorter name "
                            "with --rename OLD:NEW")


def _int(index: dict[str, Any], key: str) -> int | None:
    value = index.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def redacted(dsn: str) -> str:
    """The URL without its password (sink names appear in reports, logs and drill records)."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(dsn)
    if u.password is None:
        return dsn
    netloc = f"{u.username}:***@{u.hostname}" + (f":{u.port}" if u.port else "")
    return urlunsplit(u._replace(netloc=netloc))
