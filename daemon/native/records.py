"""The record codec (``daemon/native/recordcodec.c``), when it is built and agrees with the
schema: the change-log record's field names and types, read from
``schemas/changelog_record.avsc``, must be the ones the C writer was written for, or it is
not used (the Python references are: fastavro, orjson).
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

from daemon.schemas_loader import load_schema


def _spelled(t: Any) -> str:
    """A field type as recordcodec's RECORD_FIELDS spells it."""
    if isinstance(t, list):
        return "|".join(_spelled(x) for x in t)
    if isinstance(t, dict):
        if t.get("type") == "array":
            return f"array<{_spelled(t['items'])}>"
        if t.get("type") == "record":
            fields = ",".join(f"{f['name']}:{_spelled(f['type'])}" for f in t["fields"])
            return f"{t['name'].rsplit('.', 1)[-1]}{{{fields}}}"
        return _spelled(t["type"])
    return str(t)


def spelled_fields(schema_name: str) -> tuple[tuple[str, str], ...]:
    """(name, type) of each field of ``schemas/<schema_name>``, spelled as the C modules'
    field tables are (``RECORD_FIELDS``, ...)."""
    return tuple((f["name"], _spelled(f["type"])) for f in load_schema(schema_name)["fields"])


@cache
def record_codec() -> ModuleType | None:
    """The C record codec, or None when it is not built or not written for this schema."""
    try:
        from daemon.native import recordcodec
    except ImportError:
        return None
    ours = spelled_fields("changelog_record.avsc")
    return recordcodec if ours == recordcodec.RECORD_FIELDS else None
