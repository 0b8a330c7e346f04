"""JSON events read with their vectors as float32 bytes: ``orjson.loads``, except that the
array at each of the given key paths, when it is a non-empty list of numbers within float32's
range, arrives as the bytes the contract would make of it, without a Python float per value
(the C record codec, ``daemon/native/recordcodec.c``). Anything it does not read exactly as
orjson would (an error, a string that is not UTF-8) is read again by orjson, the reference,
whose error names the problem.
"""

from __future__ import annotations

from typing import Any

import orjson

from daemon.errors import BadEvent
from daemon.events import UNPARSEABLE
from daemon.native.records import record_codec

_CODEC = record_codec()

Paths = tuple[tuple[str, ...], ...]


def loads(value: bytes, vector_paths: Paths = (), raw_paths: Paths = ()) -> Any:
    """The JSON value of ``value``; BadEvent (unparseable) when it is not JSON. The values at
    ``raw_paths`` may come as the bytes of their JSON text (with the codec) or as objects
    (without): the caller takes both."""
    if _CODEC is not None and (vector_paths or raw_paths):
        try:
            return _CODEC.loads(value, vector_paths, raw_paths)
        except (ValueError, UnicodeError, RecursionError, MemoryError):
            pass  # orjson says what is wrong, or reads what yyjson would not
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadEvent(UNPARSEABLE, f"not JSON: {exc}") from None
