"""Sources: the shapes of ingestion streams vecwal reads, each turned into the ingestion
contract (``daemon.events``) before it is validated and stored.

- ``json`` and ``avro``: the contract itself (JSON, or schemaless Avro of
  ``schemas/change_event.avsc``), the native codec's fast path;
- ``avro-registry``: Avro framed by a schema registry (:mod:`daemon.sources.registry`);
- ``debezium``: Debezium change events of a table (:mod:`daemon.sources.debezium`), JSON
  or registry-framed Avro;
- a ``[kafka.mapping.<topic>]`` table: the user's own JSON (or registry Avro) shape by
  JMESPath expressions (:mod:`daemon.sources.mapping`).

Each topic gets one :class:`Source`; ``decode`` gives the contract event, or None for a
message that carries no change (a tombstone after a Debezium delete).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from daemon.config import KafkaConfig
from daemon.errors import BadEvent
from daemon.events import UNPARSEABLE, decode_contract
from daemon.sources.debezium import DebeziumDecoder, TableMapping
from daemon.sources.mapping import RecordMapping, parse_json_value
from daemon.sources.registry import SchemaCache, avro_column_types, decode_framed


@dataclass(frozen=True)
class Decoded:
    event: Mapping[str, Any]
    fmt: str
    """How the contract's object fields are given: "json" (objects) or "avro" (JSON text)."""
    extra: dict[str, Any] | None = None
    """The fields kept beside the contract's (a mapping's unmapped fields)."""
    mapped: bool = False
    """True when ``event`` was made by a mapping: its own keys are all contract fields."""


class Source(Protocol):
    name: str
    """The format's name, as configured."""

    def decode(self, key: bytes | None, value: bytes | None) -> Decoded | None: ...

    def identify(self, key: bytes | None, value: bytes | None) -> dict[str, Any] | None:
        """The contract fields a message names (op, collection, tenant, id), as far as they
        can be told from a message that may not decode: ``vecwal history`` attributes a
        rejected event with it. Never raises."""
        ...


class ContractSource:
    """The ingestion contract as JSON or schemaless Avro."""

    def __init__(self, fmt: str) -> None:
        self.name = self.fmt = fmt

    def decode(self, key: bytes | None, value: bytes | None) -> Decoded | None:
        if value is None:
            raise BadEvent(UNPARSEABLE, "message has no value (tombstone)")
        return Decoded(decode_contract(value, self.fmt), self.fmt)

    def identify(self, key: bytes | None, value: bytes | None) -> dict[str, Any] | None:
        return _identified(self, key, value)


class MappedSource:
    """The user's JSON, or registry-framed Avro, through a RecordMapping."""

    def __init__(self, mapping: RecordMapping, registry: SchemaCache | None) -> None:
        self.mapping = mapping
        self.registry = registry
        self.name = "avro-registry" if registry else "json"

    def decode(self, key: bytes | None, value: bytes | None) -> Decoded | None:
        if value is None:
            raise BadEvent(UNPARSEABLE, "message has no value (tombstone)")
        raw = (_plain(decode_framed(value, self.registry)[0]) if self.registry
               else parse_json_value(value, self.mapping.vector_path))
        event, extra = self.mapping.apply(raw)
        return Decoded(event, "json", extra, mapped=True)

    def identify(self, key: bytes | None, value: bytes | None) -> dict[str, Any] | None:
        whole = _identified(self, key, value)
        if whole is not None or value is None:
            return whole
        try:  # the fields one by one: the event may fail on another
            raw = (_plain(decode_framed(value, self.registry)[0]) if self.registry
                   else parse_json_value(value))
        except Exception:  # not decodable at all
            return None
        return self.mapping.identify(raw)


class RegistryContractSource:
    """The ingestion contract written with a schema registry serializer."""

    name = "avro-registry"

    def __init__(self, registry: SchemaCache) -> None:
        self.registry = registry

    def decode(self, key: bytes | None, value: bytes | None) -> Decoded | None:
        if value is None:
            raise BadEvent(UNPARSEABLE, "message has no value (tombstone)")
        record = _plain(decode_framed(value, self.registry)[0])
        if not isinstance(record, dict):
            raise BadEvent(UNPARSEABLE, "the registry record is not an Avro record: add a "
                                        "[kafka.mapping.<topic>] table")
        return Decoded(record, "avro")

    def identify(self, key: bytes | None, value: bytes | None) -> dict[str, Any] | None:
        return _identified(self, key, value)


class DebeziumSource:
    """Debezium change events: JSON, or registry-framed Avro when a registry is set."""

    name = "debezium"

    def __init__(self, decoder: DebeziumDecoder, registry: SchemaCache | None) -> None:
        self.decoder = decoder
        self.registry = registry
        self._avro_types: dict[int, tuple[dict[str, tuple[str, Any]] | None]] = {}
        """Column types per writer schema (by identity: SchemaCache keeps every schema)."""

    def decode(self, key: bytes | None, value: bytes | None) -> Decoded | None:
        if value is not None and value[:1] == b"\x00" and self.registry is not None:
            return self._decode_avro(key, value)
        decoded = self.decoder.decode_json(key, value)
        if decoded is None:
            return None
        return Decoded(decoded[0], "json", decoded[1], mapped=True)

    def identify(self, key: bytes | None, value: bytes | None) -> dict[str, Any] | None:
        whole = _identified(self, key, value)
        if whole is not None or value is None or value[:1] == b"\x00":
            return whole
        return self.decoder.identify_json(key, value)

    def _decode_avro(self, key: bytes | None, value: bytes) -> Decoded:
        assert self.registry is not None
        payload, schema = decode_framed(value, self.registry)
        key_row = decode_framed(key, self.registry)[0] if key and key[:1] == b"\x00" else None
        types = self._avro_types.get(id(schema))  # the cache keeps each schema: ids hold
        if types is None:
            types = self._avro_types[id(schema)] = (avro_column_types(schema),)
        event, extra = self.decoder.decode(_plain(payload), _plain(key_row), types[0])
        return Decoded(event, "json", extra, mapped=True)


@dataclass(frozen=True)
class Attribution:
    """Whose record a message (a rejected one, mostly) names."""

    collection: str | None
    """None: the value names no collection (it did not parse, or the Kafka key named the id)."""
    tenant: str | None
    """"" (the default tenant) when a parsed value names none; None with ``collection`` None."""
    record_id: str | None
    """None: the value names a collection but no id (a ``missing_field`` event)."""
    op: str | None


def attribute(source: Source, key: bytes | None, value: bytes | None) -> Attribution | None:
    """Whose record the message names, as ``source.identify`` tells it; when the value names
    nothing, a UTF-8 Kafka key is taken for the id. None: nothing names a record or a
    collection. ``vecwal history`` attributes rejected events so, and capture seals those
    that name a collection under the tenant's key."""
    ev = source.identify(key, value)
    if isinstance(ev, dict) and (isinstance(ev.get("id"), str)
                                 or isinstance(ev.get("collection"), str)):
        coll, tenant, rid, op = ev.get("collection"), ev.get("tenant"), ev.get("id"), ev.get("op")
        return Attribution(coll if isinstance(coll, str) else None,
                           tenant if isinstance(tenant, str) else "",
                           rid if isinstance(rid, str) else None,
                           op if isinstance(op, str) else None)
    if ev is None and key is not None:  # the value names nothing: the key may
        try:
            return Attribution(None, None, key.decode(), None)
        except UnicodeDecodeError:
            return None
    return None


def _identified(source: Source, key: bytes | None, value: bytes | None
                ) -> dict[str, Any] | None:
    """The decoded event's naming fields, or None when it does not decode."""
    try:
        decoded = source.decode(key, value)
    except Exception:  # a rejected event: the caller may look closer
        return _raw_contract(value) if isinstance(source, ContractSource) else None
    if decoded is None:
        return None
    return {k: decoded.event.get(k) for k in ("op", "collection", "tenant", "id")}


def _raw_contract(value: bytes | None) -> dict[str, Any] | None:
    """A contract event that failed validation may still name its record."""
    import orjson

    if value is None:
        return None
    try:
        ev = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return ev if isinstance(ev, dict) else None


def _plain(value: Any) -> Any:
    """Avro logical values as JSON holds them: decimals as numbers; timestamps, dates and
    times as ISO 8601 text (milliseconds unless finer); UUIDs as text. fastavro decodes
    them to Python objects that the contract's checks and JSON encoding do not take."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.time):
        return value.isoformat(timespec="milliseconds" if value.microsecond % 1000 == 0
                               else "microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return value


def sources_for(kafka: KafkaConfig) -> dict[str, Source]:
    """One Source per configured topic (validated by the config: this does not raise)."""
    registry = (SchemaCache(kafka.schema_registry_url, kafka.schema_registry)
                if kafka.schema_registry_url else None)
    debezium = debezium_decoder(kafka)
    out: dict[str, Source] = {}
    for topic in kafka.topics:
        fmt = kafka.format_of(topic)
        table = kafka.mapping.get(topic)
        if table is not None:
            mapping = RecordMapping.compile(topic, table, f"[kafka.mapping.{topic!r}]")
            out[topic] = MappedSource(mapping, registry if fmt == "avro-registry" else None)
        elif fmt == "debezium":
            out[topic] = DebeziumSource(debezium, registry)
        elif fmt == "avro-registry":
            assert registry is not None
            out[topic] = RegistryContractSource(registry)
        else:
            out[topic] = ContractSource(fmt)
    return out


def debezium_decoder(kafka: KafkaConfig) -> DebeziumDecoder:
    return DebeziumDecoder({name: TableMapping.compile(t, f"[kafka.debezium.{name!r}]")
                            for name, t in kafka.debezium.items()})


def native_topics(kafka: KafkaConfig) -> dict[str, bool]:
    """Topics the native codec takes (the contract's own JSON or Avro, unmapped): topic ->
    True for Avro."""
    return {t: kafka.format_of(t) == "avro" for t in kafka.topics
            if kafka.format_of(t) in ("json", "avro") and t not in kafka.mapping}


__all__ = [
    "Attribution",
    "ContractSource",
    "DebeziumSource",
    "Decoded",
    "MappedSource",
    "Source",
    "attribute",
    "native_topics",
    "sources_for",
]
