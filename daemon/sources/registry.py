"""The Confluent Schema Registry wire format (``[kafka] format = "avro-registry"``): each value
is the magic byte 0, the writer schema's id (4 bytes, big-endian) and the Avro binary of the
record. Writer schemas are fetched by id with confluent-kafka's ``SchemaRegistryClient`` and
kept (an id names one schema forever).

A value without the magic byte, or with an id the registry does not know, is a bad event
(quarantined with the reason). A registry that does not answer is not the event's fault:
:class:`RegistryUnavailable` tells capture to hold the partition at that offset and retry,
as it does while the store is down, so nothing is lost or quarantined for it.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Mapping
from typing import Any, NoReturn

import fastavro
import orjson

from daemon.errors import BadEvent, VecwalError
from daemon.events import UNPARSEABLE

MAGIC = 0
UNKNOWN_SCHEMA = "unknown_schema"
"""Quarantine reason: the registry does not know the value's schema id."""
SCHEMA_NOT_FOUND = 40403
"""The registry's error code for an unknown id (a bare 404 is a wrong URL: not the event's
fault)."""
UNKNOWN_TTL_S = 30.0
"""An unknown id is asked again after this long (a producer may register it late)."""


class RegistryUnavailable(VecwalError):
    """The schema registry did not answer (or answered with a server error): capture holds
    the partition and retries; the event is not at fault."""


def split_frame(value: bytes) -> tuple[int, memoryview]:
    """(schema id, Avro body) of one registry-framed value; BadEvent when it is not one."""
    if len(value) < 5 or value[0] != MAGIC:
        first = f"0x{value[0]:02x}" if value else "nothing"
        raise BadEvent(UNPARSEABLE, f"value does not start with the schema registry's magic "
                                    f"byte 0 and a schema id (it starts with {first}): is the "
                                    "producer using a schema registry serializer?")
    return int.from_bytes(value[1:5], "big"), memoryview(value)[5:]


class SchemaCache:
    """Writer schemas by id, fetched once from the registry at ``url``."""

    def __init__(self, url: str, client_conf: Mapping[str, str] | None = None,
                 client: Any = None) -> None:
        self.url = url
        # one retry: the loop waits on a fetch; the partition's hold does the backing off
        self._client_conf = {"url": url, "max.retries": 1, **dict(client_conf or {})}
        self._client = client
        self._schemas: dict[int, tuple[Any, Any]] = {}
        self._unknown: dict[int, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def _registry(self) -> Any:
        if self._client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient
            self._client = SchemaRegistryClient(self._client_conf)
        return self._client

    def schema(self, schema_id: int) -> tuple[Any, Any]:
        """The writer schema of ``schema_id``, parsed and as JSON. BadEvent (``unknown_schema``) when the
        registry does not know it or it is not an Avro schema; RegistryUnavailable when the
        registry does not answer."""
        found = self._schemas.get(schema_id)
        if found is not None:
            return found
        with self._lock:
            unknown = self._unknown.get(schema_id)
            if unknown is not None and time.monotonic() < unknown[0]:
                raise BadEvent(UNKNOWN_SCHEMA, unknown[1])
            parsed = self._fetch(schema_id)
            self._schemas[schema_id] = parsed
            return parsed

    def _fetch(self, schema_id: int) -> tuple[Any, Any]:
        from confluent_kafka.schema_registry.error import SchemaRegistryError
        self.fetches += 1
        try:
            schema = self._registry().get_schema(schema_id)
        except SchemaRegistryError as exc:
            status = getattr(exc, "http_status_code", None)
            if status == 404 and getattr(exc, "error_code", None) == SCHEMA_NOT_FOUND:
                self._unknown_id(schema_id, f"schema id {schema_id} is not in the registry "
                                                   f"at {self.url} ({exc.error_message})")
            raise RegistryUnavailable(f"schema registry {self.url} answered {status} for "
                                      f"schema id {schema_id}: {exc.error_message}",
                                      "check the registry; capture retries") from None
        except Exception as exc:  # httpx transport errors, timeouts, refused connections
            raise RegistryUnavailable(f"schema registry {self.url} did not answer: "
                                      f"{type(exc).__name__}: {exc}",
                                      "check [kafka] schema_registry_url and that the "
                                      "registry runs; capture retries") from None
        if (schema.schema_type or "AVRO") != "AVRO":
            self._unknown_id(schema_id, f"schema id {schema_id} is a "
                                               f"{schema.schema_type} schema, not Avro")
        if schema.references:
            self._unknown_id(schema_id, f"schema id {schema_id} uses schema "
                                               "references, which vecwal does not resolve yet")
        try:
            raw = orjson.loads(schema.schema_str)
            return fastavro.parse_schema(raw), raw
        except Exception as exc:
            self._unknown_id(schema_id, f"schema id {schema_id} does not parse as Avro: "
                                               f"{exc}")

    def _unknown_id(self, schema_id: int, detail: str) -> NoReturn:
        self._unknown[schema_id] = (time.monotonic() + UNKNOWN_TTL_S, detail)
        raise BadEvent(UNKNOWN_SCHEMA, detail)


def decode_framed(value: bytes, cache: SchemaCache) -> tuple[Any, Any]:
    """(record, writer schema as JSON) of one registry-framed Avro value."""
    schema_id, body = split_frame(value)
    schema, raw = cache.schema(schema_id)
    buf = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(buf, schema, None)
    except Exception as exc:  # fastavro raises many types on bytes of another schema
        raise BadEvent(UNPARSEABLE, f"value is not Avro of its schema id {schema_id}: "
                                    f"{type(exc).__name__}: {exc}") from None
    if buf.tell() != len(body):
        raise BadEvent(UNPARSEABLE, f"value has {len(body) - buf.tell()} bytes after the "
                                    f"record of schema id {schema_id}")
    return record, raw


def avro_column_types(schema: Any) -> dict[str, tuple[str, Any]] | None:
    """column -> (Connect semantic type, parameters) of a Debezium envelope's row, from the
    ``connect.name`` and ``connect.parameters`` its Avro schema carries."""
    if not isinstance(schema, dict):
        return None
    for env_field in schema.get("fields", ()):
        if env_field.get("name") not in ("after", "before"):
            continue
        row = _non_null(env_field.get("type"))
        if isinstance(row, dict) and row.get("type") == "record":
            out = {}
            for col in row.get("fields", ()):
                t = _non_null(col.get("type"))
                if isinstance(t, dict):
                    out[col["name"]] = (t.get("connect.name", ""), t.get("connect.parameters"))
                else:
                    out[col["name"]] = ("", None)
            return out
    return None


def _non_null(t: Any) -> Any:
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        return rest[0] if len(rest) == 1 else None
    return t
