"""The hot loop of ``scan.py`` (which says what the positions it records are for): walking
the records of one block of a change-log segment (``schemas/changelog_record.avsc``) field by
field without decoding them.

**Generated from the schema.** The loop is straight-line code, a few lines per field, with
locals only: a call per field (a reader per type, or a loop over the fields) would cost more
than the field, which is mostly a null byte or a short length. Written out by hand it was 460
lines of near-identical blocks, silently wrong if the schema changed; this module instead
builds the source once, at import, from the parsed schema, then compiles and execs it (as
``collections.namedtuple`` used to). ``SOURCE`` holds it, ``python -m
daemon.changelog.scan_loop`` prints it, tracebacks show its lines.

What the loop does with a field beyond checking it is declared in one place, below: the
fields it decodes (``CAPTURES``), the positions it records (``MARKS``: before a field, after
it, or after a union's branch byte), the longs whose varint tails it caches (``TAILED``: an
offset's or timestamp's bytes but the first change rarely, so ``tails`` maps those bytes to
their value) and the fields an upsert or delete must carry. ``EMITTED`` names what it emits;
``scan.py`` checks that against ``ScannedEvent``. A construct the generator does not handle
(a map, enum, fixed, named-type reference, a union other than null and one type) raises
``SchemaError`` at import rather than generating wrong code.

The generated loop reads a length of one or two bytes inline, a longer one with a call (the
same for an int or long skipped). A read past ``buf`` raises IndexError; a record ending past
``block_end`` is caught after it. A union [null, X] must say 0x00 or 0x02, a boolean 0x00 or
0x01; a length must not be negative; strings must be UTF-8. ``Damage`` names the field.
"""

from __future__ import annotations

import builtins
import keyword
import linecache
import re
from collections.abc import Callable
from typing import Any

from daemon.events import RECORD_OPS
from daemon.schemas_loader import load_schema

SCHEMA_FILE = "changelog_record.avsc"

CAPTURES = ("offset", "timestamp", "op", "collection", "tenant", "id")
"""Fields decoded (a union's null as None), emitted first, in this order."""
TAILED = ("offset", "timestamp")
"""Top-level longs whose varint tails are cached in ``tails``."""
MARKS: dict[str, tuple[str, str]] = {
    "start": ("offset", "before"),
    "version_end": ("timestamp", "after"),
    "content_start": ("collection", "before"),
    "id_mark": ("id", "before"),
    "id_start": ("id", "value"),  # after its union branch byte
    "source_end": ("source", "after"),
    "tail_start": ("event_id", "before"),
    "tail_end": ("extra", "after"),
}
"""Positions emitted after the captures and ``view``, in this order; then the record's end."""
REQUIRED_FOR_RECORD_OPS = ("id",)
"""Nullable fields an upsert or delete must carry (needs ``op`` and ``offset`` captured)."""
EMITTED = (*CAPTURES, "view", *MARKS, "end")
"""The fields of the tuple ``scan_records`` emits (``scan.ScannedEvent``'s)."""

_U64 = (1 << 64) - 1
_ARGS = ("buf", "pos", "block_end", "count", "view", "emit", "tails", "cls")
_INTERNAL = frozenset({*_ARGS, "read_long", "read_length", "new", "tail", "b", "p", "q", "n",
                       "z", "_", "Damage", "RECORD_OPS", "_U64", "varint", "length",
                       *(f"{name}_len" for name in TAILED)})
_LOOP_VARIABLE = re.compile(r"(items|_i)\d*")  # an array's item count and index
_FIXED_SIZE = {"float": 4, "double": 8}
_PLACES = ("before", "after", "value")


class Damage(Exception):
    """The bytes disagree with the container format or the record schema."""


class SchemaError(Exception):
    """The record schema holds something the loop's generator cannot handle."""


def varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The zigzag varint long at ``pos``, and the position after it."""
    shift = z = 0
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift >= 70:
            raise Damage("a varint longer than 10 bytes")


def length(buf: bytes, pos: int) -> tuple[int, int]:
    """A length (string, bytes, block size): a long that must not be negative."""
    n, pos = varint(buf, pos)
    if n < 0:
        raise Damage(f"a negative length ({n})")
    return n, pos


def _kind(t: Any, where: str) -> str:
    """The kind of the type ``t``: a primitive's name, "union", "array" or "record"."""
    if isinstance(t, list):
        return "union"
    if isinstance(t, dict):
        t = t.get("type")
        if t in ("array", "record"):
            return str(t)
    if t in ("null", "boolean", "int", "long", "float", "double", "bytes", "string"):
        return str(t)
    raise SchemaError(f"{where}: the scanner's generator does not handle the type {t!r}")


def _describe(t: Any, where: str) -> str:
    kind = _kind(t, where)
    if kind == "union":
        return "[" + ", ".join(_describe(x, where) for x in t) + "]"
    if kind == "array":
        return f"array of {_describe(t['items'], where)}"
    if kind == "record":
        return "{" + ", ".join(f"{f['name']}: {_describe(f['type'], where)}"
                               for f in t["fields"]) + "}"
    return kind


class _Generator:
    """Builds the source of ``scan_records`` for a record schema."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.fields: list[dict[str, Any]] = schema["fields"]
        self.top = {f["name"]: f["type"] for f in self.fields}
        self.var = {name: self._variable(name) for name in CAPTURES}
        self.captured: set[str] = set()  # fields generated so far (for the required checks)
        self.arrays = 0  # arrays the lines being generated are in
        for name in (*CAPTURES, *TAILED, *REQUIRED_FOR_RECORD_OPS, *(f for f, _ in MARKS.values())):
            if name not in self.top:
                raise SchemaError(f"the record schema has no field {name!r}")
        for name in TAILED:
            if self.top[name] != "long":
                raise SchemaError(f"{name!r} is in TAILED but is not a long")
        for mark, (name, at) in MARKS.items():
            if _reserved(mark) or mark in self.var.values() or at not in _PLACES:
                raise SchemaError(f"the mark {mark!r} clashes with a variable, or its place "
                                  f"{at!r} is not one of {_PLACES}")
            if at == "value" and _kind(self.top[name], name) != "union":
                raise SchemaError(f"the mark {mark!r} follows a union branch byte, but "
                                  f"{name!r} is not a union")

    def _variable(self, name: str) -> str:
        clash = keyword.iskeyword(name) or hasattr(builtins, name) or name in MARKS
        return name + "_" if clash or _reserved(name) else name

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def build(self) -> str:
        line = self.line
        line(0, f"def scan_records({', '.join(_ARGS)}):")
        line(1, "read_long, read_length, new, tail = varint, length, tuple.__new__, tails.get")
        if TAILED:
            line(1, " = ".join(f"{name}_len" for name in TAILED) + " = 0")
        line(1, "for _ in range(count):")
        for field in self.fields:
            name = field["name"]
            for mark, (at_field, at) in MARKS.items():
                if at_field == name and at == "before":
                    line(2, f"{mark} = pos")
            values = [mark for mark, (at_field, at) in MARKS.items()
                      if at_field == name and at == "value"]
            self.field(field["type"], name, 2, 0, self.var.get(name), values, top=True)
            self.captured.add(name)
            for mark, (at_field, at) in MARKS.items():
                if at_field == name and at == "after":
                    line(2, f"{mark} = pos")
        line(2, "if pos > block_end:")
        line(3, 'raise Damage("a record runs past the end of its block")')
        emitted = [*(self.var[name] for name in CAPTURES), "view", *MARKS, "pos"]
        line(2, "emit(new(cls, (")
        for i in range(0, len(emitted), 8):
            line(4, ", ".join(emitted[i:i + 8]) + ",")
        line(2, ")))")
        line(1, "return pos")
        return "\n".join(self.lines) + "\n"

    def field(self, t: Any, name: str, depth: int, k: int, var: str | None,
              values: list[str], top: bool = False, comment: bool = True) -> None:
        """The lines skipping (and, with ``var``, decoding) a value of type ``t`` at
        ``pos + k``, leaving ``pos`` after it. The first line says what the field is."""
        first = len(self.lines)
        kind = _kind(t, name)
        if var is not None and kind in ("array", "record", "float", "double"):
            raise SchemaError(f"{name!r}: the scanner's generator does not decode a {kind}")
        if top and name in TAILED:
            self.tailed_long(name, depth, var or "_")
        elif kind == "union":
            self.union(t, name, depth, var, values)
        elif kind in ("int", "long"):
            self.long(depth, k, var)
        elif kind in ("string", "bytes"):
            self.sized(kind, depth, k, var, "")
        elif kind == "boolean":
            self.line(depth, f"b = buf[{_at(k)}]")
            self.line(depth, "if b > 1:")
            self.line(depth + 1, f'raise Damage(f"bad boolean byte {{b}} ({name})")')
            if var is not None:
                self.line(depth, f"{var} = b == 1")
            self.line(depth, f"pos += {k + 1}")
        elif kind in _FIXED_SIZE:
            self.line(depth, f"pos += {k + _FIXED_SIZE[kind]}")
        elif kind == "null" and var is not None:
            self.line(depth, f"{var} = None")
        elif kind == "array":
            self.array(t, name, depth, k)
        elif kind == "record":
            if k:
                self.line(depth, f"pos += {k}")
            for sub in t["fields"]:
                self.field(sub["type"], sub["name"], depth, 0, None, [])
        if len(self.lines) == first:  # no bytes: a null, a record of no fields
            self.line(depth, "pass")
        if comment:
            what = f"# {name}: {_describe(t, name)}"
            if "  # " in self.lines[first]:  # a record's first field says what it is
                self.lines.insert(first, "    " * depth + what)
            else:
                self.lines[first] += "  " + what

    def tailed_long(self, name: str, depth: int, var: str) -> None:
        n = f"{name}_len"
        for text in (
                "b = buf[pos]",
                "if b < 0x80:",
                f"    {var} = (b >> 1) ^ -(b & 1)",
                "    pos += 1",
                f"elif (z := tail(buf[pos + 1:pos + {n}])) is not None:",
                "    z = (z << 7) | (b & 0x7F)",
                f"    {var} = (z >> 1) ^ -(z & 1)",
                f"    pos += {n}",
                "else:",
                f"    {var}, q = read_long(buf, pos)",
                f"    {n} = q - pos",
                f"    tails[buf[pos + 1:q]] = ((({var} << 1) ^ ({var} >> 63)) & _U64) >> 7",
                "    pos = q"):
            self.line(depth, text)

    def long(self, depth: int, k: int, var: str | None) -> None:
        """An int or long: one byte inline, two bytes inline when skipped, else a call."""
        line = self.line
        if var is not None:
            line(depth, f"b = buf[{_at(k)}]")
            line(depth, "if b < 0x80:")
            line(depth + 1, f"{var} = (b >> 1) ^ -(b & 1)")
            line(depth + 1, f"pos += {k + 1}")
        else:
            line(depth, f"if buf[{_at(k)}] < 0x80:")
            line(depth + 1, f"pos += {k + 1}")
            line(depth, f"elif buf[{_at(k + 1)}] < 0x80:")
            line(depth + 1, f"pos += {k + 2}")
        line(depth, "else:")
        line(depth + 1, f"{var or '_'}, pos = read_long(buf, {_at(k)})")

    def sized(self, kind: str, depth: int, k: int, var: str | None, marks: str) -> None:
        """A string or bytes: its length in one or two bytes inline, else a call."""
        for text in (
                f"{marks}q = {_at(k)}",
                "b = buf[q]",
                "if not b & 0x81:",
                "    p = q + 1",
                "    pos = p + (b >> 1)",
                "elif b & 0x80 and buf[q + 1] < 0x80:",
                "    n = (buf[q + 1] << 7) | (b & 0x7F)",
                "    if n & 1:",
                '        raise Damage(f"a negative length ({-(n >> 1) - 1})")',
                "    p = q + 2",
                "    pos = p + (n >> 1)",
                "else:",
                "    n, p = read_length(buf, q)",
                "    pos = p + n"):
            self.line(depth, text)
        value = "buf[p:pos].decode()" if kind == "string" else "buf[p:pos]"
        if var is not None:
            self.line(depth, f"{var} = {value}")
        elif kind == "string":
            self.line(depth, value)

    def union(self, t: list[Any], name: str, depth: int, var: str | None,
              values: list[str]) -> None:
        """A union of null and one other type: a branch byte 0x00 or 0x02, then the value."""
        kinds = [_kind(x, name) for x in t]
        if len(t) != 2 or "null" not in kinds or kinds == ["null", "null"]:
            raise SchemaError(f"{name!r}: the scanner's generator handles unions of null and "
                              f"one other type, not {_describe(t, name)}")
        value = t[1 - kinds.index("null")]
        line = self.line
        line(depth, "b = buf[pos]")
        line(depth, "if b:")
        line(depth + 1, "if b != 2:")
        line(depth + 2, f'raise Damage(f"bad union branch byte {{b}} ({name})")')
        branches = [lambda: self.present(value, name, depth + 1, var, values),
                    lambda: self.absent(name, depth + 1, var, values)]
        if kinds[1] == "null":
            branches.reverse()  # 0x00 is the value, 0x02 null
        branches[0]()
        line(depth, "else:")
        branches[1]()

    def present(self, t: Any, name: str, depth: int, var: str | None,
                values: list[str]) -> None:
        kind = _kind(t, name)
        if kind in ("string", "bytes"):
            self.sized(kind, depth, 1, var, "".join(f"{v} = " for v in values))
            return
        for mark in values:
            self.line(depth, f"{mark} = pos + 1")
        if kind in ("array", "record"):
            self.line(depth, "pos += 1")
            self.field(t, name, depth, 0, var, [], comment=False)
        else:
            self.field(t, name, depth, 1, var, [], comment=False)

    def absent(self, name: str, depth: int, var: str | None, values: list[str]) -> None:
        self.line(depth, "pos = " + "".join(f"{v} = " for v in values) + "pos + 1" if values
                  else "pos += 1")
        if var is not None:
            self.line(depth, f"{var} = None")
        if name in REQUIRED_FOR_RECORD_OPS:
            if not {"op", "offset"} <= self.captured & set(CAPTURES):
                raise SchemaError(f"{name!r} is required for record ops: op and offset must "
                                  "be captured, and come before it")
            line = self.line
            line(depth, f"if {self.var['op']} in RECORD_OPS:")
            line(depth + 1, f'raise Damage(f"the {{{self.var["op"]}}} at offset '
                            f'{{{self.var["offset"]}}} has no {name}")')

    def array(self, t: dict[str, Any], name: str, depth: int, k: int) -> None:
        """An array: blocks of items, each a count (negative: a byte size follows), 0 ends."""
        line = self.line
        nest = self.arrays
        items, i = ("items", "_i") if not nest else (f"items{nest}", f"_i{nest}")
        if k:
            line(depth, f"pos += {k}")
        for text in (
                "while True:",
                "    b = buf[pos]",
                "    if b < 0x80:",
                f"        {items} = (b >> 1) ^ -(b & 1)",
                "        pos += 1",
                "    else:",
                f"        {items}, pos = read_long(buf, pos)",
                f"    if {items} == 0:",
                "        break",
                f"    if {items} < 0:",
                "        _, pos = read_long(buf, pos)",
                f"        {items} = -{items}",
                f"    for {i} in range({items}):"):
            line(depth, text)
        self.arrays += 1
        self.field(t["items"], f"{name} item", depth + 2, 0, None, [])
        self.arrays -= 1


def _reserved(name: str) -> bool:
    """Whether the generated code uses ``name`` for something else."""
    return name in _INTERNAL or _LOOP_VARIABLE.fullmatch(name) is not None


def _at(k: int) -> str:
    return f"pos + {k}" if k else "pos"


def generate(schema: dict[str, Any]) -> str:
    """The source of ``scan_records`` for the record schema ``schema`` (parsed)."""
    try:
        return _Generator(schema).build()
    except SchemaError as exc:
        raise SchemaError(f"scan_loop cannot walk {schema.get('name')}: {exc}") from None


def build(schema: dict[str, Any], filename: str) -> tuple[str, Callable[..., int]]:
    """The source of ``scan_records`` for ``schema``, and the function, compiled as
    ``filename`` (its lines registered for tracebacks)."""
    source = generate(schema)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"varint": varint, "length": length, "Damage": Damage,
                                 "RECORD_OPS": RECORD_OPS, "_U64": _U64}
    exec(compile(source, filename, "exec"), namespace)
    return source, namespace["scan_records"]


SOURCE, _scan_records = build(load_schema(SCHEMA_FILE), "<generated by daemon.changelog.scan_loop>")
scan_records: Callable[[bytes, int, int, int, memoryview, Callable[[Any], None],
                        dict[bytes, int], type], int] = _scan_records
"""Walk ``count`` records from ``pos``; emit each (``cls`` built from the ``EMITTED`` values,
with ``tuple.__new__``); return the position after the last."""

if __name__ == "__main__":
    print(SOURCE, end="")
