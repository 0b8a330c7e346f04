"""The ingestion contract (DESIGN section 1): parse and validate one Kafka message into a
change-log record (``schemas/changelog_record.avsc``), or raise :class:`BadEvent`.

Capture records what the stream says. It does not depend on cross-partition order: an upsert
for a collection whose ``collection.put`` has not been seen is kept; its dimension is checked
once the collection's dimension is known, and a record's dimension always travels with it.
Fields outside the contract are kept in ``extra``, so nothing the producer sent is dropped.
"""

from __future__ import annotations

import base64
import binascii
import io
from array import array
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

import fastavro
import numpy as np
import orjson

from daemon.errors import BadEvent, VecwalError
from daemon.kafka_headers import RawHeaders
from daemon.kafka_headers import bound as bound_headers
from daemon.native.records import record_codec
from daemon.schemas_loader import load_schema

RECORD_OPS = frozenset({"upsert", "delete"})
CONTROL_OPS = frozenset(
    {"collection.put", "collection.drop", "alias.put", "alias.drop", "tenant.put", "tenant.drop"}
)
OPS = RECORD_OPS | CONTROL_OPS

CONTRACT_FIELDS = frozenset({
    "op", "collection", "tenant", "id", "vector", "sparse", "document", "metadata", "acl",
    "embedding_model", "source", "alias", "schema", "settings", "event_id", "event_time",
})

# Quarantine reasons: stable names, used as metric labels and in quarantine objects.
OVERSIZE = "oversize"
UNPARSEABLE = "unparseable"
UNKNOWN_OP = "unknown_op"
MISSING_FIELD = "missing_field"
BAD_FIELD = "bad_field"
BAD_VECTOR = "bad_vector"
NON_FINITE = "non_finite"
WRONG_DIMENSION = "wrong_dimension"

CHANGE_EVENT_SCHEMA = load_schema("change_event.avsc")
_CODEC = record_codec()
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class EventParser:
    """Turns raw Kafka values into change-log records.

    ``dimensions`` maps collection -> known dimension. It is seeded from configuration and
    learned from ``collection.put`` events as they are parsed (a ``collection.drop`` forgets it).
    """

    def __init__(self, max_event_bytes: int, dimensions: Mapping[str, int] | None = None) -> None:
        self.max_event_bytes = max_event_bytes
        self.dimensions: dict[str, int] = dict(dimensions or {})

    def parse(
        self, value: bytes | None, fmt: str, *, key: bytes | None, offset: int, timestamp: int,
        headers: RawHeaders = None,
    ) -> dict[str, Any]:
        """Return the change-log record for one message of the contract (``fmt`` "json" or
        "avro"); raise BadEvent naming the reason. ``headers``: the message's Kafka headers
        (kept bounded: ``daemon.kafka_headers``)."""
        if value is None:
            raise BadEvent(UNPARSEABLE, "message has no value (tombstone)")
        self._check_size(value)
        record = self._to_record(decode_contract(value, fmt), fmt)
        return _placed(record, key, offset, timestamp, headers)

    def parse_from(self, source: EventSource, value: bytes | None, *, key: bytes | None,
                   offset: int, timestamp: int, headers: RawHeaders = None
                   ) -> dict[str, Any] | None:
        """The change-log record for one message of any source (``daemon.sources``), or
        None for a message that carries no change (a tombstone after a Debezium delete)."""
        if value is not None:
            self._check_size(value)
        try:
            decoded = source.decode(key, value)
            if decoded is None:
                return None
            record = self._to_record(decoded.event, decoded.fmt, decoded.extra, decoded.mapped)
        except VecwalError:  # BadEvent, or a source that did not answer: the caller's to handle
            raise
        except Exception as exc:  # a value no check foresaw: this event's fault, not a crash
            raise BadEvent(UNPARSEABLE, f"could not be read as {getattr(source, 'name', '?')}: "
                                        f"{type(exc).__name__}: {exc}") from None
        return _placed(record, key, offset, timestamp, headers)

    def _check_size(self, value: bytes) -> None:
        if len(value) > self.max_event_bytes:
            raise BadEvent(
                OVERSIZE, f"{len(value)} bytes is over capture.max_event_bytes={self.max_event_bytes}"
            )

    def _to_record(self, ev: Mapping[str, Any], fmt: str, extra: dict[str, Any] | None = None,
                   mapped: bool = False) -> dict[str, Any]:
        """``mapped``: ``ev`` was made by a mapping, and ``extra`` holds what it left out."""
        op = ev.get("op")
        if not isinstance(op, str) or op not in OPS:
            raise BadEvent(UNKNOWN_OP, f"op {op!r} is not one of {', '.join(sorted(OPS))}")
        collection = _required_str(ev, "collection")
        tenant = _optional_str(ev, "tenant") or ""
        rec: dict[str, Any] = {
            "op": op, "collection": collection, "tenant": tenant, "id": None,
            "dimension": None, "vector": None, "sparse_indices": None, "sparse_values": None,
            "document": None, "document_is_json": False, "metadata": None, "acl": None,
            "embedding_model": _embedding_model(ev.get("embedding_model")),
            "source": _json_object_text(ev, "source", fmt),
            "alias": None, "schema": None, "settings": None,
            "event_id": _optional_str(ev, "event_id"), "event_time": _optional_str(ev, "event_time"),
            "extra": None, "producer_timestamp": None, "headers": None,
            "headers_truncated": False,
        }
        if op in RECORD_OPS:
            rec["id"] = _required_str(ev, "id")
        if op == "upsert":
            self._fill_upsert(rec, ev, fmt)
        elif op in ("collection.put", "collection.drop"):
            if op == "collection.put":
                schema = _json_object(ev, "schema", fmt, required=True)
                assert schema is not None  # required=True raised otherwise
                dim = schema.get("dimension")
                if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
                    raise BadEvent(BAD_FIELD, f"schema.dimension must be a positive integer, got {dim!r}")
                rec["schema"] = orjson.dumps(schema, default=_jsonable).decode()
                self.dimensions[collection] = dim
            else:
                self.dimensions.pop(collection, None)
        elif op in ("alias.put", "alias.drop"):
            rec["alias"] = _required_str(ev, "alias")
        elif op in ("tenant.put", "tenant.drop"):
            if not tenant:
                raise BadEvent(MISSING_FIELD, f"{op} needs a non-empty tenant")
            if op == "tenant.put":
                settings = _json_object(ev, "settings", fmt, required=False)
                rec["settings"] = (None if settings is None
                                   else orjson.dumps(settings, default=_jsonable).decode())
        if not mapped:
            extra = {k: v for k, v in ev.items() if k not in CONTRACT_FIELDS}
        if extra:
            rec["extra"] = orjson.dumps(extra, default=_jsonable).decode()
        return rec

    def _fill_upsert(self, rec: dict[str, Any], ev: Mapping[str, Any], fmt: str) -> None:
        known = self.dimensions.get(rec["collection"])
        listed = ev.get("vector")
        if known is not None and isinstance(listed, list) and len(listed) != known:
            # Before its values are converted: a flood of them (a model change) stays cheap.
            raise _wrong_dimension(len(listed), rec["collection"], known)
        vector = _vector_bytes(listed, "vector")
        if vector is not None:
            dim = len(vector) // 4
            if known is not None and dim != known:
                raise _wrong_dimension(dim, rec["collection"], known)
            rec["vector"], rec["dimension"] = vector, dim
        sparse = ev.get("sparse")
        if sparse is not None:
            rec["sparse_indices"], rec["sparse_values"] = _sparse(sparse)
        document = ev.get("document")
        if document is not None:
            if isinstance(document, str):
                rec["document"] = document
                rec["document_is_json"] = False
            elif isinstance(document, dict | list):
                rec["document"] = orjson.dumps(document, default=_jsonable).decode()
                rec["document_is_json"] = True
            else:
                raise BadEvent(BAD_FIELD, "document must be text or a JSON object, "
                                          f"got {type(document).__name__}")
        metadata = _json_object(ev, "metadata", fmt, required=False)
        if metadata is not None:
            rec["metadata"] = orjson.dumps(metadata, default=_jsonable).decode()
        acl = ev.get("acl")
        if acl is not None:
            if not isinstance(acl, list) or not all(isinstance(a, str) for a in acl):
                raise BadEvent(BAD_FIELD, "acl must be a list of principal strings")
            rec["acl"] = list(acl)


class Decoded(Protocol):
    @property
    def event(self) -> Mapping[str, Any]: ...
    @property
    def fmt(self) -> str: ...
    @property
    def extra(self) -> dict[str, Any] | None: ...
    @property
    def mapped(self) -> bool: ...


class EventSource(Protocol):
    """How one topic's messages become contract events (``daemon.sources.Source``)."""

    def decode(self, key: bytes | None, value: bytes | None) -> Decoded | None: ...


def _placed(record: dict[str, Any], key: bytes | None, offset: int, timestamp: int,
            headers: RawHeaders) -> dict[str, Any]:
    record["offset"] = offset
    record["timestamp"] = timestamp
    record["key"] = key
    if headers is not None:
        record["headers"], record["headers_truncated"] = bound_headers(headers)
    return record


def decode_contract(value: bytes, fmt: str) -> Mapping[str, Any]:
    """One contract event from its JSON or schemaless Avro (``fmt``) bytes."""
    return _decode_avro(value) if fmt == "avro" else _decode_json(value)


def _wrong_dimension(dim: int, collection: str, known: int) -> BadEvent:
    return BadEvent(WRONG_DIMENSION,
                    f"vector has {dim} values, collection {collection!r} has dimension {known}")


def _decode_json(value: bytes) -> Mapping[str, Any]:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadEvent(UNPARSEABLE, f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise BadEvent(UNPARSEABLE, f"a change event is a JSON object, got {type(event).__name__}")
    return event


def _decode_avro(value: bytes) -> Mapping[str, Any]:
    buf = io.BytesIO(value)
    try:
        event = fastavro.schemaless_reader(buf, CHANGE_EVENT_SCHEMA, None)
    except Exception as exc:  # fastavro raises many types on garbage input
        raise BadEvent(UNPARSEABLE, f"not Avro of change_event.avsc: {type(exc).__name__}: {exc}") from None
    if buf.tell() != len(value):
        raise BadEvent(UNPARSEABLE, f"Avro value has {len(value) - buf.tell()} trailing bytes")
    assert isinstance(event, dict)
    return event


def _required_str(ev: Mapping[str, Any], name: str) -> str:
    value = ev.get(name)
    if value is None or value == "":
        raise BadEvent(MISSING_FIELD, f"{ev.get('op')} needs a non-empty {name!r}")
    if not isinstance(value, str):
        raise BadEvent(BAD_FIELD, f"{name} must be a string, got {type(value).__name__}")
    return value


def _optional_str(ev: Mapping[str, Any], name: str) -> str | None:
    value = ev.get(name)
    if value is None or isinstance(value, str):
        return value
    raise BadEvent(BAD_FIELD, f"{name} must be a string, got {type(value).__name__}")


def _json_object(
    ev: Mapping[str, Any], name: str, fmt: str, *, required: bool
) -> dict[str, Any] | None:
    """A JSON object field: an object in JSON input, JSON text in Avro input."""
    value = ev.get(name)
    if value is None:
        if required:
            raise BadEvent(MISSING_FIELD, f"{ev.get('op')} needs {name!r}")
        return None
    if isinstance(value, str) and fmt == "avro":
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise BadEvent(BAD_FIELD, f"{name} is not JSON text: {exc}") from None
    if not isinstance(value, dict):
        raise BadEvent(BAD_FIELD, f"{name} must be a JSON object, got {type(value).__name__}")
    # No NaN or infinity can be inside: orjson refuses them as invalid JSON.
    return value


def _json_object_text(ev: Mapping[str, Any], name: str, fmt: str) -> str | None:
    value = ev.get(name)
    if value is None:
        return None
    if isinstance(value, dict) and fmt == "avro":  # Avro record: drop empty optional fields
        value = {k: v for k, v in value.items() if v is not None}
    obj = _json_object({name: value, "op": ev.get("op")}, name, "json", required=False)
    return None if obj is None else orjson.dumps(obj, default=_jsonable).decode()


def _embedding_model(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise BadEvent(BAD_FIELD, "embedding_model must be {name, version}")
    version = value.get("version")
    if version is not None and not isinstance(version, str):
        version = str(version)
    return {"name": value["name"], "version": version}


def _vector_bytes(value: Any, name: str) -> bytes | None:
    """float32 little-endian bytes from a JSON list, base64 text or Avro bytes."""
    if value is None:
        return None
    if isinstance(value, bytes):
        raw = value
        if len(raw) % 4:
            raise BadEvent(BAD_VECTOR, f"{name} has {len(raw)} bytes, not a multiple of 4")
        if raw and _CODEC is not None and _CODEC.f32_finite(raw):
            return raw  # float32 bytes already (Avro, or a source's): finite, not empty
        arr = np.frombuffer(raw, dtype="<f4")
    elif isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadEvent(BAD_VECTOR, f"{name} is text but not base64") from None
        if len(raw) % 4:
            raise BadEvent(BAD_VECTOR, f"{name} decodes to {len(raw)} bytes, not float32 values")
        arr = np.frombuffer(raw, dtype="<f4")
    elif isinstance(value, list):
        # float64 first: a value beyond float32 must be refused, not become infinity. array
        # takes real numbers only (numpy's fromiter read "1" as 1.0: a producer bug kept as
        # data), at the same cost; JSON true and false stay 1 and 0, as Python's numbers.
        try:
            wide = np.frombuffer(array("d", value), dtype=np.float64)
        except TypeError:
            bad = next(x for x in value if not isinstance(x, int | float))
            raise BadEvent(BAD_VECTOR, f"{name} must be a flat list of numbers, "
                                       f"got a {_json_type_name(bad)} ({str(bad)[:20]!r})"
                           ) from None
        except OverflowError:  # an integer beyond float64
            raise BadEvent(NON_FINITE, f"{name} holds a value beyond float32 range") from None
        if wide.size and not np.abs(wide).max() <= _FLOAT32_MAX:  # also catches NaN
            raise BadEvent(NON_FINITE, f"{name} holds a value beyond float32 range")
        arr = wide.astype("<f4")
        raw = arr.tobytes()
    else:
        raise BadEvent(BAD_VECTOR, f"{name} must be a list of numbers or base64 float32")
    if arr.size == 0:
        raise BadEvent(BAD_VECTOR, f"{name} is empty")
    if not np.isfinite(arr).all():
        raise BadEvent(NON_FINITE, f"{name} holds NaN or infinity (or a value beyond float32)")
    return raw


def _json_type_name(value: Any) -> str:
    return {str: "string", bool: "boolean", list: "list", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _sparse(value: Any) -> tuple[bytes, bytes]:
    if not isinstance(value, dict):
        raise BadEvent(BAD_FIELD, "sparse must be {indices, values}")
    indices, values = value.get("indices"), value.get("values")
    if not isinstance(indices, list) or any(type(i) is not int for i in indices):
        raise BadEvent(BAD_FIELD, "sparse.indices must be a flat list of integers")
    try:
        idx = np.asarray(indices, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise BadEvent(BAD_FIELD, "sparse.indices must be a list of integers") from None
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() > 0xFFFFFFFF)):
        raise BadEvent(BAD_FIELD, "sparse.indices must be a flat list of uint32 values")
    vals = _vector_bytes(values, "sparse.values") if len(idx) else b""
    assert vals is not None
    if len(vals) // 4 != len(idx):
        raise BadEvent(BAD_FIELD, f"sparse has {len(idx)} indices but {len(vals) // 4} values")
    return idx.astype("<u4").tobytes(), vals


def _jsonable(value: Any) -> Any:
    """What JSON cannot hold, as mapped Avro records may carry it: bytes as base64, decimals
    as numbers, anything else as its text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)
