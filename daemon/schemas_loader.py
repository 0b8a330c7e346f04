"""Loading the Avro schemas shipped in ``schemas/`` (packaged as ``daemon/schemas``)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import fastavro


@cache
def schema_text(name: str) -> str:
    """``schemas/<name>`` as compact JSON: what an Avro file's ``avro.schema`` header holds."""
    text = resources.files("daemon").joinpath("schemas", name).read_text(encoding="utf-8")
    return json.dumps(json.loads(text), separators=(",", ":"))


@cache
def load_schema(name: str) -> Any:
    """The parsed Avro schema ``schemas/<name>``."""
    return fastavro.parse_schema(json.loads(schema_text(name)))


@cache
def schema_fingerprint(name: str) -> str:
    """CRC-64-AVRO fingerprint of the schema's parsing canonical form, as hex."""
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    return str(fingerprint(to_parsing_canonical_form(load_schema(name)), "CRC-64-AVRO"))
