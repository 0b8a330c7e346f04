"""RecordMapping: any JSON or Avro record of the user's own shape into the ingestion contract,
by JMESPath expressions (``[kafka.mapping.<topic>]``).

Each contract field has an expression over the decoded event (``id = "doc_id"``,
``vector = "payload.embedding"``); ``collection_name`` gives a constant collection and
``op_map`` turns the user's operation names into ``upsert``/``delete``. A plain field path
is read by dictionary lookups, any other expression by the ``jmespath`` library. The mapped
event is what capture validates and stores; fields no expression reads are kept in the
record's ``extra`` (``keep_unmapped``), so nothing the producer sent is dropped. A mapping
that fails raises :class:`~daemon.errors.BadEvent` naming the expression, and capture keeps
the original value whole in quarantine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from daemon.errors import BadEvent, ConfigError
from daemon.events import MISSING_FIELD, OPS, UNKNOWN_OP
from daemon.sources import fastjson
from daemon.sources.values import (
    acl_list,
    event_time_text,
    id_text,
    json_object,
    optional_text,
    vector_value,
)

MAPPING_FAILED = "mapping_failed"
"""Quarantine reason: an expression could not be evaluated on the event."""

FIELDS = ("op", "collection", "tenant", "id", "vector", "sparse", "document", "metadata", "acl",
          "embedding_model", "event_time", "event_id", "source")
SETTINGS = frozenset({*FIELDS, "op_map", "collection_name", "metadata_fields", "keep_unmapped"})

Getter = Callable[[Any], Any]


@dataclass(frozen=True)
class RecordMapping:
    """The compiled ``[kafka.mapping.<topic>]`` table of one topic."""

    topic: str
    getters: dict[str, Getter]
    texts: dict[str, str]
    """field -> the expression as written (named in errors)."""
    op_map: dict[str, str]
    collection_name: str | None
    metadata_fields: tuple[str, ...]
    keep_unmapped: bool
    read_roots: frozenset[str]
    """Top-level fields some expression reads; ``*`` when one reads the whole event."""
    vector_path: tuple[str, ...] | None = None
    """The vector expression as keys, when it is a plain path (read as float32 bytes)."""

    @classmethod
    def compile(cls, topic: str, table: Mapping[str, Any], where: str) -> RecordMapping:
        """Check and compile one mapping table; raise ConfigError naming the bad setting."""
        unknown = sorted(set(table) - SETTINGS)
        if unknown:
            raise ConfigError(f"{where}: unknown mapping setting {unknown[0]!r}",
                              f"valid settings: {', '.join(sorted(SETTINGS))}")
        getters: dict[str, Getter] = {}
        texts: dict[str, str] = {}
        vector_path: tuple[str, ...] | None = None
        roots: set[str] = set()
        for name in FIELDS:
            text = table.get(name)
            if text is None:
                continue
            if not isinstance(text, str) or not text.strip():
                raise ConfigError(f"{where}: {name} must be a JMESPath expression (a string), "
                                  f"got {text!r}", f'for example {name} = "{name}"')
            try:
                parsed = jmespath.compile(text)
            except JMESPathError as exc:
                raise ConfigError(f"{where}: {name} = {text!r} is not a JMESPath expression: "
                                  f"{exc}", "see https://jmespath.org/specification.html; a "
                                  "constant is a raw string literal in single quotes: 'docs'"
                                  ) from None
            getters[name] = _getter(parsed)
            texts[name] = text
            if name == "vector":
                plain = _plain_path(dict(parsed.parsed))
                vector_path = None if plain is None else tuple(plain)
            roots |= _roots(dict(parsed.parsed))
        op_map = table.get("op_map", {})
        if not isinstance(op_map, Mapping) or not all(
                isinstance(k, str) and v in OPS for k, v in op_map.items()):
            raise ConfigError(f"{where}: op_map must map the event's operation names to one of "
                              f"{', '.join(sorted(OPS))}, got {op_map!r}",
                              'for example op_map = { index = "upsert", remove = "delete" }')
        if op_map and "op" not in getters:
            raise ConfigError(f"{where}: op_map is set but op (the expression it maps) is not",
                              'add op = "action" (the field holding the operation)')
        constant = table.get("collection_name")
        if constant is not None and (not isinstance(constant, str) or not constant):
            raise ConfigError(f"{where}: collection_name must be a non-empty string",
                              'for example collection_name = "docs"')
        if constant is not None and "collection" in getters:
            raise ConfigError(f"{where}: both collection and collection_name are set",
                              "keep collection (an expression) or collection_name (a constant)")
        if constant is None and "collection" not in getters:
            raise ConfigError(f"{where}: no collection", 'set collection = "<expression>" or '
                              'collection_name = "<constant>"')
        if "id" not in getters:
            raise ConfigError(f"{where}: no id expression", 'set id = "<field holding the id>"')
        fields = table.get("metadata_fields", [])
        if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
            raise ConfigError(f"{where}: metadata_fields must be a list of field names",
                              'for example metadata_fields = ["category", "lang"]')
        if fields and "metadata" in getters:
            raise ConfigError(f"{where}: both metadata and metadata_fields are set",
                              "keep metadata (one expression giving an object) or "
                              "metadata_fields (top-level fields gathered into one)")
        keep = table.get("keep_unmapped", True)
        if not isinstance(keep, bool):
            raise ConfigError(f"{where}: keep_unmapped must be true or false", "")
        return cls(topic, getters, texts, {k: str(v) for k, v in op_map.items()}, constant,
                   tuple(fields), keep, frozenset(roots | set(fields)), vector_path)

    def apply(self, event: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The contract event the user's event maps to, and the fields no expression read
        (None when there are none or ``keep_unmapped`` is off). Raises BadEvent."""
        if not isinstance(event, Mapping):
            raise BadEvent(MAPPING_FAILED, f"the event is a {type(event).__name__}, "
                                           "a mapping reads an object")
        try:  # a plain path cannot fail; when an expression does, evaluate again to name it
            got = {name: getter(event) for name, getter in self.getters.items()}
        except JMESPathError:
            got = {name: self._eval(name, event) for name in self.getters}
        op = got.get("op", "upsert")
        if self.op_map:
            mapped = self.op_map.get(str(op)) if op is not None else None
            if mapped is None:
                raise BadEvent(UNKNOWN_OP, f"op = {self.texts['op']!r} gave {op!r}, which "
                                           f"op_map does not name ({', '.join(self.op_map)})")
            op = mapped
        if not isinstance(op, str) or op not in OPS:
            raise BadEvent(UNKNOWN_OP, f"op = {self.texts.get('op', '<upsert>')!r} gave "
                                       f"{op!r}, not one of {', '.join(sorted(OPS))}; "
                                       "add an op_map")
        out: dict[str, Any] = {"op": op}
        collection = self.collection_name or got.get("collection")
        if not isinstance(collection, str) or not collection:
            raise BadEvent(MISSING_FIELD, f"collection = {self.texts['collection']!r} gave "
                                          f"{collection!r}, not a non-empty string")
        out["collection"] = collection
        out["id"] = id_text(got["id"], f"id = {self.texts['id']!r}")
        for name in ("tenant", "event_id"):
            if name in got:
                out[name] = optional_text(got[name], f"{name} = {self.texts[name]!r}")
        if "vector" in got:
            out["vector"] = vector_value(got["vector"])
        for name in ("sparse", "document", "embedding_model", "source"):
            if got.get(name) is not None:
                out[name] = got[name]
        if isinstance(out.get("embedding_model"), str):
            out["embedding_model"] = {"name": out["embedding_model"], "version": None}
        if "metadata" in got:
            out["metadata"] = json_object(got["metadata"], f"metadata = {self.texts['metadata']!r}")
        elif self.metadata_fields:
            out["metadata"] = {f: event[f] for f in self.metadata_fields if f in event}
        if "acl" in got:
            out["acl"] = acl_list(got["acl"], f"acl = {self.texts['acl']!r}")
        if "event_time" in got:
            out["event_time"] = event_time_text(got["event_time"],
                                                f"event_time = {self.texts['event_time']!r}")
        return out, self._unmapped(event)

    def identify(self, event: Any) -> dict[str, Any] | None:
        """op, collection, tenant and id, each evaluated alone (None where it fails)."""
        if not isinstance(event, Mapping):
            return None
        out: dict[str, Any] = {}
        for name in ("op", "collection", "tenant", "id"):
            try:
                out[name] = self.getters[name](event) if name in self.getters else None
            except JMESPathError:
                out[name] = None
        out["op"] = self.op_map.get(str(out["op"]), out["op"]) if self.op_map else (
            out["op"] or "upsert")
        out["collection"] = self.collection_name or out["collection"]
        if isinstance(out["id"], int) and not isinstance(out["id"], bool):
            out["id"] = str(out["id"])
        return out

    def _eval(self, name: str, event: Mapping[str, Any]) -> Any:
        try:
            return self.getters[name](event)
        except JMESPathError as exc:
            raise BadEvent(MAPPING_FAILED, f"{name} = {self.texts[name]!r} failed: {exc}"
                           ) from None

    def _unmapped(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self.keep_unmapped or "*" in self.read_roots:
            return None
        rest = {k: v for k, v in event.items() if k not in self.read_roots}
        return rest or None

    def describe(self) -> dict[str, str]:
        """field -> expression (and the constants), for check-mapping's report."""
        out = dict(self.texts)
        if self.collection_name:
            out["collection"] = f"(constant) {self.collection_name}"
        if self.metadata_fields:
            out["metadata"] = f"(fields) {', '.join(self.metadata_fields)}"
        return out


def _getter(parsed: Any) -> Getter:
    """A dictionary walk for a plain path (``a.b.c``): the common case at a fraction of the
    cost of the interpreter; the library for everything else."""
    path = _plain_path(parsed.parsed)
    if path is None:
        return parsed.search  # type: ignore[no-any-return]
    if len(path) == 1:
        key = path[0]
        return lambda ev: ev.get(key) if isinstance(ev, dict) else None

    def walk(ev: Any) -> Any:
        for key in path:
            if not isinstance(ev, dict):
                return None
            ev = ev.get(key)
        return ev
    return walk


def _plain_path(node: dict[str, Any]) -> list[str] | None:
    if node["type"] == "field":
        return [node["value"]]
    if node["type"] == "subexpression":
        left, right = (_plain_path(c) for c in node["children"])
        return None if left is None or right is None else left + right
    return None


def _roots(node: dict[str, Any]) -> set[str]:
    """The top-level fields an expression reads ({"*"} when it reads the whole event)."""
    kind = node["type"]
    if kind == "field":
        return {node["value"]}
    if kind == "current":
        return {"*"}
    if kind == "literal":
        return set()
    children = node.get("children", [])
    if kind in ("subexpression", "index_expression", "projection", "value_projection",
                "filter_projection", "flatten", "pipe"):
        return _roots(children[0]) if children else set()
    out: set[str] = set()
    for child in children:
        out |= _roots(child)
    return out


def parse_json_value(value: bytes, vector_path: tuple[str, ...] | None = None) -> Any:
    """A JSON event for a mapping (any JSON object), its vector (at ``vector_path``) read as
    float32 bytes when it can be."""
    return fastjson.loads(value, (vector_path,) if vector_path else ())


__all__ = ["MAPPING_FAILED", "RecordMapping", "parse_json_value"]
