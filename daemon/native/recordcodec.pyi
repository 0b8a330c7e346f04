from typing import Any

RECORD_FIELDS: tuple[tuple[str, str], ...]

def encode_record(record: dict[str, Any]) -> bytes: ...
def loads(value: bytes, vector_paths: tuple[tuple[str, ...], ...],
          raw_paths: tuple[tuple[str, ...], ...] = ...) -> Any: ...
