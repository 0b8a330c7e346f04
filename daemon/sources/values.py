"""Field values as other pipelines write them, into the contract's forms: ids that are
numbers, pgvector's text form of a vector, JSON text where an object belongs, epoch numbers
for an event time. Each raises :class:`~daemon.errors.BadEvent` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import struct
from decimal import Decimal
from typing import Any

import numpy as np
import orjson

from daemon.errors import BadEvent
from daemon.events import BAD_FIELD, BAD_VECTOR, MISSING_FIELD


def id_text(value: Any, what: str) -> str:
    """A record id: a string, or an integer (a primary key) as its decimal text."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None or value == "":
        raise BadEvent(MISSING_FIELD, f"{what} gave no id")
    raise BadEvent(BAD_FIELD, f"{what} gave a {type(value).__name__} ({str(value)[:40]!r}); "
                              "an id is a string or an integer")


def optional_text(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadEvent(BAD_FIELD, f"{what} gave a {type(value).__name__}, not a string")


def vector_value(value: Any) -> Any:
    """A vector as the contract reads it: a list of numbers (or pgvector's text form
    ``[1,2,3]``) becomes float32 bytes (:func:`float32_bytes`); base64 float32 text and Avro
    bytes pass on to the contract's checks."""
    if isinstance(value, str) and value.startswith("["):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise BadEvent(BAD_VECTOR, f"vector text {value[:40]!r} is not pgvector's form "
                                       "[1,2,3]") from None
    if isinstance(value, list):
        return float32_bytes(value)
    return value


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def float32_bytes(values: list[Any]) -> bytes | list[Any]:
    """A list of numbers as the contract's float32 little-endian bytes, rounded as the
    contract rounds them (to nearest), by ``struct`` at about two thirds of the cost of the
    contract's list path (``bench_sources --stages``: 11 us against 17 us for 768 values).
    Anything the contract would reject or treat at its limits (a non-number, an empty list,
    NaN, infinity, a value at or beyond float32's range) is returned as is, for the
    contract's checks to decide and name."""
    if not values:
        return values
    try:
        raw = struct.pack(f"<{len(values)}f", *values)
    except (struct.error, OverflowError, TypeError):
        return values
    if not np.abs(np.frombuffer(raw, "<f4")).max() < _FLOAT32_MAX:  # also NaN
        return values
    return raw


def json_object(value: Any, what: str) -> dict[str, Any] | None:
    """An object, or JSON text of one (a jsonb column as Debezium sends it)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise BadEvent(BAD_FIELD, f"{what} gave text that is not JSON") from None
        if isinstance(obj, dict):
            return obj
    raise BadEvent(BAD_FIELD, f"{what} gave a {type(value).__name__}, not an object")


def acl_list(value: Any, what: str) -> list[str] | None:
    """A list of principals (a text[] column, its NULL elements left out), or JSON text of
    one."""
    if isinstance(value, str) and value.startswith("["):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise BadEvent(BAD_FIELD, f"{what} gave text that is not a JSON list") from None
    if value is None:
        return None
    if isinstance(value, list):
        principals = [a for a in value if a is not None]  # a SQL NULL element names no one
        if all(isinstance(a, str) for a in principals):
            return principals
    raise BadEvent(BAD_FIELD, f"{what} must give a list of principal strings")


def event_time_text(value: Any, what: str) -> str | None:
    """An event time as ISO 8601 text: text is kept; a number is epoch seconds,
    milliseconds or microseconds, told apart by its size."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if abs(seconds) >= 1e14:
            seconds /= 1e6
        elif abs(seconds) >= 1e11:
            seconds /= 1e3
        try:
            return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")
        except (OverflowError, OSError, ValueError):
            pass
    raise BadEvent(BAD_FIELD, f"{what} gave {str(value)[:40]!r}, not a time")


def decimal_value(value: Any, scale: int) -> Any:
    """Kafka Connect's Decimal (base64 of the big-endian unscaled integer) as a number; JSON
    keeps the text of its digits (no binary rounding)."""
    if not isinstance(value, str | bytes):
        return value
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else value
    except (binascii.Error, ValueError):
        return value
    unscaled = int.from_bytes(raw, "big", signed=True)
    number = Decimal(unscaled).scaleb(-scale)
    return int(number) if scale == 0 else float(number)
