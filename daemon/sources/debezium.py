"""Debezium change events (``[kafka] format = "debezium"``): a table's rows into records.

Debezium writes one event per row change: ``op`` c (insert), r (a row of the initial
snapshot), u (update), d (delete), each with the row ``before`` and ``after`` and the
``source`` position (lsn, table, commit time), then a tombstone (a null value) after each
delete for Kafka's log compaction. Values are JSON, with or without the embedded Connect
schema (JsonConverter ``schemas.enable``), or Avro from a schema registry
(:mod:`daemon.sources.registry`). Here c, r and u become upserts of ``after``, d a delete,
a tombstone nothing (skipped, not quarantined), and t (truncate) a rejected event: it names
no row, so it cannot be replayed.

Which column is what comes from ``[kafka.debezium."<schema>.<table>"]`` (or
``"<table>"``), each setting optional:

- ``collection``: the collection's name (default: the table's name);
- ``id``: the id column, or a list of them joined with ``:`` (default: the event key's
  columns, the primary key);
- ``vector``: the vector column (default: the column Debezium types as a pgvector vector,
  ``io.debezium.data.DoubleVector`` or ``FloatVector``; else one named ``embedding`` or
  ``vector``); pgvector's text form ``[1,2,3]`` is read too;
- ``tenant``, ``document``, ``acl``, ``embedding_model``: columns (default: none);
- ``metadata``: a list of columns, or one jsonb column that is the metadata object
  (default: every column not used above), less ``exclude``.

The record keeps ``source`` (connector, db, schema, table, lsn, txId, ts_ms, snapshot) and
takes the commit time as its ``event_time``. Tables want ``REPLICA IDENTITY FULL``: under the
default identity a delete carries only the primary key (a delete whose tenant is unknown is
rejected), and an update leaves out unchanged TOASTed values (a vector of more than about
500 dimensions): an update without its vector, or with Debezium's unavailable-value
placeholder, is rejected rather than stored as a record that lost its vector.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.errors import BadEvent, ConfigError
from daemon.events import MISSING_FIELD, UNKNOWN_OP, UNPARSEABLE
from daemon.sources import fastjson
from daemon.sources.values import (
    acl_list,
    decimal_value,
    event_time_text,
    id_text,
    json_object,
    optional_text,
    vector_value,
)

VECTOR_TYPES = frozenset({"io.debezium.data.DoubleVector", "io.debezium.data.FloatVector"})
JSON_TYPE = "io.debezium.data.Json"
DECIMAL_TYPE = "org.apache.kafka.connect.data.Decimal"
VECTOR_NAMES = ("embedding", "vector")
PLACEHOLDER = "__debezium_unavailable_value"
"""Debezium's default ``unavailable.value.placeholder``: a TOASTed value an update left as is."""
TENANT_CHANGED = "tenant_changed"
"""Quarantine reason: an update moved a row to another tenant (seen under REPLICA IDENTITY
FULL)."""
UNAVAILABLE = "unavailable_value"
"""Quarantine reason: the event lacks a value it needs (an unchanged TOASTed column)."""
SOURCE_KEYS = ("connector", "db", "schema", "table", "lsn", "txId", "ts_ms", "snapshot")
_SCHEMA_PATH = (("schema",),)
"""A JsonConverter envelope's Connect schema: the same in every message of a table."""
TABLE_SETTINGS = frozenset({"collection", "id", "vector", "tenant", "document", "acl",
                            "embedding_model", "metadata", "exclude"})


@dataclass(frozen=True)
class TableMapping:
    """Which column of one table is which field of a record (see the module docstring)."""

    collection: str | None = None
    id: tuple[str, ...] = ()
    vector: str | None = None
    tenant: str | None = None
    document: str | None = None
    acl: str | None = None
    embedding_model: str | None = None
    metadata: tuple[str, ...] | str | None = None
    exclude: tuple[str, ...] = ()

    @classmethod
    def compile(cls, table: Mapping[str, Any], where: str) -> TableMapping:
        unknown = sorted(set(table) - TABLE_SETTINGS)
        if unknown:
            raise ConfigError(f"{where}: unknown setting {unknown[0]!r}",
                              f"valid settings: {', '.join(sorted(TABLE_SETTINGS))}")
        for name in ("collection", "vector", "tenant", "document", "acl", "embedding_model"):
            value = table.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{where}: {name} must be a column name, got {value!r}",
                                  f'for example {name} = "{name}"')
        ids = _names(table.get("id", []), f"{where}: id")
        exclude = _names(table.get("exclude", []), f"{where}: exclude")
        metadata = table.get("metadata")
        meta: tuple[str, ...] | str | None = (
            metadata if isinstance(metadata, str) and metadata
            else None if metadata is None else _names(metadata, f"{where}: metadata"))
        return cls(table.get("collection"), ids, table.get("vector"), table.get("tenant"),
                   table.get("document"), table.get("acl"), table.get("embedding_model"),
                   meta, exclude)


def _names(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise ConfigError(f"{where} must be a column name or a list of them, got {value!r}",
                          'for example id = "id" or metadata = ["category", "lang"]')
    return tuple(items)


class DebeziumDecoder:
    """Debezium JSON (schemas.enable true or false) into contract events."""

    def __init__(self, tables: Mapping[str, TableMapping]) -> None:
        self.tables = dict(tables)
        self._default = TableMapping()
        columns = sorted({*VECTOR_NAMES, *(t.vector for t in self.tables.values() if t.vector)})
        self._vector_paths = tuple((*envelope, "after", c) for c in columns
                                   for envelope in ((), ("payload",)))
        """Where a vector may be: read as float32 bytes (fastjson)."""
        self._types_seen: dict[bytes, tuple[dict[str, tuple[str, Any]] | None]] = {}

    def decode_json(self, key: bytes | None, value: bytes | None
                    ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        if value is None:
            return None  # the tombstone after a delete: for log compaction, not a change
        doc = fastjson.loads(value, self._vector_paths, _SCHEMA_PATH)
        try:  # the key gives the primary key's columns; an id column set by name needs none
            key_doc = orjson.loads(key) if key else None
        except orjson.JSONDecodeError:
            key_doc = None
        payload, schema = _unwrap(doc)
        key_payload, _ = _unwrap(key_doc)
        if payload is None and key_doc is not None:
            return None  # a tombstone written as JSON null
        return self.decode(payload, key_payload, self._types_of(schema))

    def _types_of(self, schema: Any) -> dict[str, tuple[str, Any]] | None:
        """The row's column types from the envelope's schema: as JSON text (the record codec
        gives it so), looked up among the schemas seen; else the parsed object."""
        if not isinstance(schema, bytes):
            return _column_types(schema)
        found = self._types_seen.get(schema)
        if found is None:
            if len(self._types_seen) >= 64:  # a table's schema changes rarely: bound it anyway
                self._types_seen.clear()
            try:
                found = self._types_seen[schema] = (_column_types(orjson.loads(schema)),)
            except orjson.JSONDecodeError:  # cannot be: the codec wrote it
                found = (None,)
        return found[0]

    def identify_json(self, key: bytes | None, value: bytes) -> dict[str, Any] | None:
        """The op, collection, tenant and id of an event that did not decode, if it names
        them."""
        try:
            payload, _ = _unwrap(orjson.loads(value))
        except orjson.JSONDecodeError:
            return None
        try:
            keys, _ = _unwrap(orjson.loads(key)) if key else (None, None)
        except orjson.JSONDecodeError:
            keys = None
        if not isinstance(payload, dict):
            return None
        found = payload.get("source")
        source: dict[str, Any] = found if isinstance(found, dict) else {}
        mapping = self._mapping(source)
        row = payload.get("before") if payload.get("op") == "d" else payload.get("after")
        row = row if isinstance(row, dict) else {}
        keys = keys if isinstance(keys, dict) else {}
        try:
            record_id = self._id(mapping, row, keys, "")
        except BadEvent:
            return None
        tenant = row.get(mapping.tenant) if mapping.tenant else ""
        return {"op": "delete" if payload.get("op") == "d" else "upsert",
                "collection": mapping.collection or source.get("table"),
                "tenant": tenant if isinstance(tenant, str) else None, "id": record_id}

    def decode(self, payload: Any, key: Any, types: Mapping[str, tuple[str, Any]] | None
               ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """One envelope (``payload``), its key's columns and, when the value carried its
        Connect schema, the row's column types: the contract event and no extra."""
        if not isinstance(payload, dict) or "op" not in payload:
            raise BadEvent(UNPARSEABLE, "not a Debezium change event (no envelope with an op); "
                                        "is this topic's format debezium?")
        op = payload["op"]
        found = payload.get("source")
        source: dict[str, Any] = found if isinstance(found, dict) else {}
        table_name = source.get("table")
        mapping = self._mapping(source)
        if op in ("c", "r", "u"):
            row = payload.get("after")
        elif op == "d":
            row = payload.get("before")
        elif op == "t":
            raise BadEvent(UNKNOWN_OP, f"truncate of table {table_name!r}: it names no row, so "
                                       "it cannot be replayed; send deletes (or drop and re-create "
                                       "the collection), or leave truncates out "
                                       "(skipped.operations=t, Debezium's default)")
        else:
            raise BadEvent(UNKNOWN_OP, f"Debezium op {op!r} is not c, r, u or d")
        if not isinstance(row, dict):
            side = "before" if op == "d" else "after"
            raise BadEvent(MISSING_FIELD, f"op {op!r} of table {table_name!r} has no {side} row")
        keys = key if isinstance(key, dict) else {}
        if op != "d" and PLACEHOLDER in row.values():
            column = next(c for c, v in row.items() if v == PLACEHOLDER)
            raise BadEvent(UNAVAILABLE, f"column {column!r} of table {table_name!r} is "
                           f"{PLACEHOLDER!r}: the value was left unchanged and PostgreSQL did "
                           "not send it (TOAST, default replica identity); run ALTER TABLE "
                           "... REPLICA IDENTITY FULL")
        if types:
            row = _typed_row(row, types)
        collection = mapping.collection or table_name
        if not isinstance(collection, str) or not collection:
            raise BadEvent(MISSING_FIELD, "the event's source names no table; set collection "
                                          "in [kafka.debezium.<table>]")
        where = f"table {source.get('schema')}.{table_name}"
        event: dict[str, Any] = {"op": "delete" if op == "d" else "upsert",
                                 "collection": collection, "id": self._id(mapping, row, keys, where)}
        if mapping.tenant:
            value = row.get(mapping.tenant)
            tenant = optional_text(keys.get(mapping.tenant) if value is None else value,
                                   f"{where} column {mapping.tenant}")
            if tenant is None and op == "d":
                raise BadEvent(MISSING_FIELD, f"delete of id {event['id']!r} in {where} has no "
                               f"{mapping.tenant!r} (the tenant): Debezium sends only the "
                               "primary key of a deleted row; run ALTER TABLE ... REPLICA "
                               "IDENTITY FULL, or put the tenant column in the primary key")
            event["tenant"] = tenant
            old = payload.get("before")
            if op == "u" and isinstance(old, dict) and old.get(mapping.tenant) is not None \
                    and old.get(mapping.tenant) != tenant:
                raise BadEvent(TENANT_CHANGED, f"update of id {event['id']!r} in {where} moves "
                               f"it from tenant {old.get(mapping.tenant)!r} to {tenant!r}: "
                               "vecwal keys records by (tenant, id), so this is a delete in "
                               "one and an insert in the other; put the tenant column in the "
                               "primary key (Debezium then sends a delete and a create)")
        event["source"] = {k: source[k] for k in SOURCE_KEYS if source.get(k) is not None}
        event["event_time"] = event_time_text(source.get("ts_ms"), "source.ts_ms")
        if op != "d":
            self._fill_upsert(event, mapping, row, mapping.id or tuple(keys), types, where)
            if op == "u" and event["vector"] is None and payload.get("before") is None:
                raise BadEvent(UNAVAILABLE, f"update of id {event['id']!r} in {where} has no "
                               "vector and no old row: PostgreSQL leaves an unchanged TOASTed "
                               "vector out of the change under the default replica identity, "
                               "so this could be 'unchanged' as well as 'set to NULL'; run "
                               "ALTER TABLE ... REPLICA IDENTITY FULL")
        return event, None

    def _mapping(self, source: Mapping[str, Any]) -> TableMapping:
        table = source.get("table")
        found = self.tables.get(f"{source.get('schema')}.{table}")
        if found is None and isinstance(table, str):
            found = self.tables.get(table)
        return found or self._default

    @staticmethod
    def _id(mapping: TableMapping, row: Mapping[str, Any], keys: Mapping[str, Any],
            where: str) -> str:
        columns = mapping.id or tuple(keys)
        if not columns:
            raise BadEvent(MISSING_FIELD, f"{where} has no primary key in the event key: set "
                                          "id = \"<column>\" in [kafka.debezium.<table>]")
        parts = [id_text(row.get(c, keys.get(c)), f"{where} id column {c}") for c in columns]
        return parts[0] if len(parts) == 1 else ":".join(parts)

    def _fill_upsert(self, event: dict[str, Any], mapping: TableMapping, row: dict[str, Any],
                     id_columns: tuple[str, ...], types: Mapping[str, tuple[str, Any]] | None,
                     where: str) -> None:
        vector_col = mapping.vector or _vector_column(row, types, where)
        event["vector"] = vector_value(row.get(vector_col))
        used = {vector_col, *id_columns}
        if mapping.document:
            used.add(mapping.document)
            doc = row.get(mapping.document)
            if doc is not None:
                event["document"] = doc
        if mapping.acl:
            used.add(mapping.acl)
            event["acl"] = acl_list(row.get(mapping.acl), f"{where} column {mapping.acl}")
        if mapping.embedding_model:
            used.add(mapping.embedding_model)
            model = row.get(mapping.embedding_model)
            if model is not None:
                event["embedding_model"] = model if isinstance(model, dict) else {
                    "name": str(model), "version": None}
        if mapping.tenant:
            used.add(mapping.tenant)
        if isinstance(mapping.metadata, str):
            event["metadata"] = json_object(row.get(mapping.metadata),
                                            f"{where} column {mapping.metadata}")
            return
        columns = mapping.metadata if mapping.metadata is not None else tuple(row)
        skip = used if mapping.metadata is None else set()
        event["metadata"] = {c: row.get(c) for c in columns
                             if c not in skip and c not in mapping.exclude}


def _vector_column(row: Mapping[str, Any], types: Mapping[str, tuple[str, Any]] | None,
                   where: str) -> str:
    if types:
        typed = [c for c, (name, _) in types.items() if name in VECTOR_TYPES]
        if len(typed) == 1:
            return typed[0]
        if len(typed) > 1:
            raise BadEvent(MISSING_FIELD, f"{where} has {len(typed)} vector columns "
                           f"({', '.join(typed)}): name one with vector = \"<column>\" in "
                           "[kafka.debezium.<table>]")
    for name in VECTOR_NAMES:
        if name in row:
            return name
    raise BadEvent(MISSING_FIELD, f"{where}: no vector column found (none typed as a pgvector "
                                  f"vector, none named {' or '.join(VECTOR_NAMES)}): set "
                                  "vector = \"<column>\" in [kafka.debezium.<table>]")


def _unwrap(doc: Any) -> tuple[Any, Any]:
    """(payload, schema) of a JsonConverter value with schemas.enable, else (doc, None)."""
    if isinstance(doc, dict) and "payload" in doc and "schema" in doc and len(doc) == 2:
        return doc["payload"], doc["schema"]
    return doc, None


def _column_types(schema: Any) -> dict[str, tuple[str, Any]] | None:
    """column -> (semantic type name, parameters) of the envelope's row struct."""
    if not isinstance(schema, dict):
        return None
    for env_field in schema.get("fields", ()):
        if env_field.get("field") in ("after", "before") and env_field.get("fields"):
            return {f["field"]: (f.get("name", ""), f.get("parameters"))
                    for f in env_field["fields"] if "field" in f}
    return None


def _typed_row(row: dict[str, Any], types: Mapping[str, tuple[str, Any]]) -> dict[str, Any]:
    """The row with the columns whose semantic type changes their value (JSON, Decimal)
    converted; the row itself when none does."""
    typed = [c for c, (name, _) in types.items() if name in (JSON_TYPE, DECIMAL_TYPE)]
    if not typed:
        return row
    row = dict(row)
    for c in typed:
        if c in row:
            row[c] = _typed(row[c], types[c])
    return row


def _typed(value: Any, kind: tuple[str, Any] | None) -> Any:
    """A column value with its Connect semantic type applied: JSON text parsed, a Decimal's
    bytes made a number."""
    if value is None or kind is None:
        return value
    name, params = kind
    if name == JSON_TYPE and isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    if name == DECIMAL_TYPE and isinstance(params, dict):
        return decimal_value(value, int(params.get("scale", 0)))
    return value
