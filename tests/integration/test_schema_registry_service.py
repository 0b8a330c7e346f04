"""The schema registry service (tests/services.py: ``SCHEMA_REGISTRY_URL``, else Apicurio
Registry from deploy/local) speaks the Confluent Schema Registry REST API as confluent-kafka's
clients use it: a user's Avro schema registered under ``<topic>-value`` comes back by id, and
AvroSerializer frames records as magic byte 0 + 4-byte big-endian schema id + Avro binary.

Also pins the two failures a decoder must tell apart: an unknown id (SchemaRegistryError,
HTTP 404, error code 40403: quarantine the record) and an unreachable registry (an httpx
transport error: pause and retry)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import socket
import struct
import uuid
from typing import Any
from urllib.parse import urlsplit

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

pytestmark = pytest.mark.integration

USER_V1: dict[str, Any] = {
    "type": "record",
    "name": "User",
    "namespace": "vecwal.test",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "embedding", "type": {"type": "array", "items": "float"}},
        {"name": "email", "type": ["null", "string"], "default": None},
    ],
}
# backward compatible: a new field with a default
USER_V2: dict[str, Any] = {
    **USER_V1,
    "fields": [*USER_V1["fields"], {"name": "tier", "type": "string", "default": "free"}],
}
RECORD = {"id": 42, "name": "ada", "embedding": [0.5, -1.25, 2.0], "email": None}
MAGIC = 0


def _transport_errors() -> tuple[type[BaseException], ...]:
    """httpx's TransportError as confluent-kafka uses it: httpx2 on Python 3.10+ when
    installed (the [schemaregistry] extra pulls it in), else httpx."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(importlib.import_module(name).TransportError)
    return tuple(found)


def _frame(data: bytes) -> tuple[int, int, bytes]:
    """(magic byte, schema id, Avro body) of a Confluent-framed message."""
    assert len(data) >= 5, data
    magic, schema_id = struct.unpack(">bI", data[:5])
    return magic, schema_id, data[5:]


@pytest.fixture
def topic() -> str:
    return f"vecwal-registry-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def registry(registry_service: Any) -> Any:
    registry_service.ensure_running()
    return registry_service.client()


def test_register_get_by_id_and_serializer_framing(registry: Any, topic: str) -> None:
    subject = f"{topic}-value"
    schema_id = registry.register_schema(subject, Schema(json.dumps(USER_V1), "AVRO"))
    assert isinstance(schema_id, int) and schema_id >= 0

    fetched = registry.get_schema(schema_id)  # GET /schemas/ids/{id}
    assert fetched.schema_type == "AVRO"
    assert json.loads(fetched.schema_str) == USER_V1
    latest = registry.get_latest_version(subject)
    assert (latest.subject, latest.version, latest.schema_id) == (subject, 1, schema_id)
    assert subject in registry.get_subjects()

    serializer = AvroSerializer(registry, json.dumps(USER_V1))
    ctx = SerializationContext(topic, MessageField.VALUE)
    data = serializer(RECORD, ctx)
    assert data is not None
    magic, framed_id, body = _frame(data)
    assert magic == MAGIC
    assert framed_id == schema_id  # the same schema under the same subject: the same id
    # the rest is plain Avro binary of the writer schema, readable without the registry
    parsed = fastavro.parse_schema(json.loads(fetched.schema_str))
    buf = io.BytesIO(body)
    assert fastavro.schemaless_reader(buf, parsed, None) == RECORD
    assert buf.tell() == len(body)  # nothing after the record

    assert AvroDeserializer(registry)(data, ctx) == RECORD


def test_evolved_schema_gets_a_new_id_and_old_frames_still_resolve(
    registry: Any, registry_service: Any, topic: str
) -> None:
    subject = f"{topic}-value"
    ctx = SerializationContext(topic, MessageField.VALUE)
    old = AvroSerializer(registry, json.dumps(USER_V1))(RECORD, ctx)
    new = AvroSerializer(registry, json.dumps(USER_V2))({**RECORD, "tier": "pro"}, ctx)
    assert old is not None and new is not None
    _, id1, _ = _frame(old)
    _, id2, _ = _frame(new)
    assert id1 != id2
    assert registry.get_versions(subject) == [1, 2]

    # a fresh client (empty cache) resolves each id from the server
    fresh = registry_service.client()
    assert json.loads(fresh.get_schema(id1).schema_str) == USER_V1
    assert json.loads(fresh.get_schema(id2).schema_str) == USER_V2
    reader = AvroDeserializer(fresh)
    assert reader(old, ctx) == RECORD
    assert reader(new, ctx) == {**RECORD, "tier": "pro"}


def test_unknown_id_is_a_404_schema_registry_error(registry_service: Any) -> None:
    client = registry_service.client()
    with pytest.raises(SchemaRegistryError) as info:
        client.get_schema(2_000_000_000)
    assert info.value.http_status_code == 404
    assert info.value.error_code == 40403  # Confluent's "schema not found"


def test_unreachable_registry_is_a_transport_error(registry_service: Any) -> None:
    """What "registry down" looks like to the client: nothing listening on the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the same API path as the real registry, on a port where nothing listens
    path = urlsplit(registry_service.url).path
    client = registry_service.client(**{"url": f"http://127.0.0.1:{port}{path}",
                                        "max.retries": 0, "timeout": 2})
    errors = _transport_errors()
    assert errors, "neither httpx2 nor httpx is importable"
    with pytest.raises(errors) as info:
        client.get_schema(1)
    assert not isinstance(info.value, SchemaRegistryError)
