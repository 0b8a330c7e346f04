"""The hot loop of ``scan.py``: walking the records of one block of a change-log segment
(``schemas/changelog_record.avsc``, field by field) without decoding them.

It is written out field by field, on purpose: a call per field would cost more than the
field. ``scan.py`` says what the positions it records are for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RECORD_OPS = frozenset({"upsert", "delete"})
_U64 = (1 << 64) - 1


class Damage(Exception):
    """The bytes disagree with the container format or the record schema."""


def varint(buf: bytes, pos: int) -> tuple[int, int]:
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


def scan_records(buf: bytes, pos: int, block_end: int, count: int, view: memoryview,
                 emit: Callable[[Any], None], tails: dict[bytes, int], cls: type) -> int:
    """Walk ``count`` records from ``pos``; emit each; return the position after the last.

    The hot loop, written out field by field: locals only, a length of one byte (two, for
    fields often longer than 63 bytes) read inline, a longer one with a call. Offsets and
    timestamps are varints of several bytes whose every byte but the first changes rarely:
    ``tails`` maps those bytes (when they ended a varint before) to their value. A read past
    ``buf`` raises IndexError; a record ending past ``block_end`` is caught after it. A union
    [null, X] must say 0x00 or 0x02, a boolean 0x00 or 0x01; a length must not be negative;
    strings must be UTF-8."""
    read_long, read_length, new, tail = varint, length, tuple.__new__, tails.get
    olen = tlen = 0
    for _ in range(count):
        start = pos
        b = buf[pos]  # offset: long
        if b < 0x80:
            offset = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (z := tail(buf[pos + 1:pos + olen])) is not None:
            z = (z << 7) | (b & 0x7F)
            offset = (z >> 1) ^ -(z & 1)
            pos += olen
        else:
            offset, q = read_long(buf, pos)
            olen = q - pos
            tails[buf[pos + 1:q]] = (((offset << 1) ^ (offset >> 63)) & _U64) >> 7
            pos = q
        b = buf[pos]  # timestamp: long
        if b < 0x80:
            timestamp = (b >> 1) ^ -(b & 1)
            pos += 1
        elif (z := tail(buf[pos + 1:pos + tlen])) is not None:
            z = (z << 7) | (b & 0x7F)
            timestamp = (z >> 1) ^ -(z & 1)
            pos += tlen
        else:
            timestamp, q = read_long(buf, pos)
            tlen = q - pos
            tails[buf[pos + 1:q]] = (((timestamp << 1) ^ (timestamp >> 63)) & _U64) >> 7
            pos = q
        version_end = pos
        b = buf[pos]  # key: [null, bytes]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (key)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
        else:
            pos += 1
        q = pos  # op: string
        b = buf[q]
        if not b & 0x81:
            p = q + 1
            pos = p + (b >> 1)
        else:
            n, p = read_length(buf, q)
            pos = p + n
        op = buf[p:pos].decode()
        content_start = pos
        q = pos  # collection: string
        b = buf[q]
        if not b & 0x81:
            p = q + 1
            pos = p + (b >> 1)
        else:
            n, p = read_length(buf, q)
            pos = p + n
        collection = buf[p:pos].decode()
        q = pos  # tenant: string
        b = buf[q]
        if not b & 0x81:
            p = q + 1
            pos = p + (b >> 1)
        else:
            n, p = read_length(buf, q)
            pos = p + n
        tenant = buf[p:pos].decode()
        id_mark = pos
        b = buf[pos]  # id: [null, string]
        if b == 2:
            id_start = q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            rid: str | None = buf[p:pos].decode()
        elif b:
            raise Damage(f"bad union branch byte {b} (id)")
        else:
            pos = id_start = pos + 1
            rid = None
            if op in RECORD_OPS:
                raise Damage(f"the {op} at offset {offset} has no id")
        b = buf[pos]  # dimension: [null, int]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (dimension)")
            if buf[pos + 1] < 0x80:
                pos += 2
            elif buf[pos + 2] < 0x80:
                pos += 3
            else:
                _, pos = read_long(buf, pos + 1)
        else:
            pos += 1
        b = buf[pos]  # vector: [null, bytes]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (vector)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            elif b & 0x80 and buf[q + 1] < 0x80:
                n = (buf[q + 1] << 7) | (b & 0x7F)
                if n & 1:
                    raise Damage("a negative length")
                p = q + 2
                pos = p + (n >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
        else:
            pos += 1
        b = buf[pos]  # sparse_indices: [null, bytes]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (sparse_indices)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            elif b & 0x80 and buf[q + 1] < 0x80:
                n = (buf[q + 1] << 7) | (b & 0x7F)
                if n & 1:
                    raise Damage("a negative length")
                p = q + 2
                pos = p + (n >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
        else:
            pos += 1
        b = buf[pos]  # sparse_values: [null, bytes]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (sparse_values)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            elif b & 0x80 and buf[q + 1] < 0x80:
                n = (buf[q + 1] << 7) | (b & 0x7F)
                if n & 1:
                    raise Damage("a negative length")
                p = q + 2
                pos = p + (n >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
        else:
            pos += 1
        b = buf[pos]  # document: [null, string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (document)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            elif b & 0x80 and buf[q + 1] < 0x80:
                n = (buf[q + 1] << 7) | (b & 0x7F)
                if n & 1:
                    raise Damage("a negative length")
                p = q + 2
                pos = p + (n >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
        else:
            pos += 1
        b = buf[pos]  # document_is_json: boolean
        if b > 1:
            raise Damage(f"bad boolean byte {b} (document_is_json)")
        pos += 1
        b = buf[pos]  # metadata: [null, string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (metadata)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            elif b & 0x80 and buf[q + 1] < 0x80:
                n = (buf[q + 1] << 7) | (b & 0x7F)
                if n & 1:
                    raise Damage("a negative length")
                p = q + 2
                pos = p + (n >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
        else:
            pos += 1
        b = buf[pos]  # acl: [null, array of string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (acl)")
            pos += 1
            while True:  # blocks: a count (negative: a byte size follows), 0 ends
                b = buf[pos]
                if b < 0x80:
                    n = (b >> 1) ^ -(b & 1)
                    pos += 1
                else:
                    n, pos = read_long(buf, pos)
                if n == 0:
                    break
                if n < 0:
                    _, pos = read_long(buf, pos)
                    n = -n
                for _i in range(n):
                    q = pos  # an item: string
                    b = buf[q]
                    if not b & 0x81:
                        p = q + 1
                        pos = p + (b >> 1)
                    else:
                        k, p = read_length(buf, q)
                        pos = p + k
                    buf[p:pos].decode()
        else:
            pos += 1
        b = buf[pos]  # embedding_model: [null, {name: string, version: [null, string]}]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (embedding_model)")
            pos += 1
            q = pos  # name: string
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
            b = buf[pos]  # version: [null, string]
            if b:
                if b != 2:
                    raise Damage(f"bad union branch byte {b} (version)")
                q = pos + 1
                b = buf[q]
                if not b & 0x81:
                    p = q + 1
                    pos = p + (b >> 1)
                else:
                    n, p = read_length(buf, q)
                    pos = p + n
                buf[p:pos].decode()
            else:
                pos += 1
        else:
            pos += 1
        b = buf[pos]  # source: [null, string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (source)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            elif b & 0x80 and buf[q + 1] < 0x80:
                n = (buf[q + 1] << 7) | (b & 0x7F)
                if n & 1:
                    raise Damage("a negative length")
                p = q + 2
                pos = p + (n >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
        else:
            pos += 1
        source_end = pos
        b = buf[pos]  # alias: [null, string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (alias)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
        else:
            pos += 1
        b = buf[pos]  # schema: [null, string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (schema)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            elif b & 0x80 and buf[q + 1] < 0x80:
                n = (buf[q + 1] << 7) | (b & 0x7F)
                if n & 1:
                    raise Damage("a negative length")
                p = q + 2
                pos = p + (n >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
        else:
            pos += 1
        b = buf[pos]  # settings: [null, string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (settings)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            elif b & 0x80 and buf[q + 1] < 0x80:
                n = (buf[q + 1] << 7) | (b & 0x7F)
                if n & 1:
                    raise Damage("a negative length")
                p = q + 2
                pos = p + (n >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
        else:
            pos += 1
        tail_start = pos
        b = buf[pos]  # event_id: [null, string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (event_id)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
        else:
            pos += 1
        b = buf[pos]  # event_time: [null, string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (event_time)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
        else:
            pos += 1
        b = buf[pos]  # extra: [null, string]
        if b:
            if b != 2:
                raise Damage(f"bad union branch byte {b} (extra)")
            q = pos + 1
            b = buf[q]
            if not b & 0x81:
                p = q + 1
                pos = p + (b >> 1)
            elif b & 0x80 and buf[q + 1] < 0x80:
                n = (buf[q + 1] << 7) | (b & 0x7F)
                if n & 1:
                    raise Damage("a negative length")
                p = q + 2
                pos = p + (n >> 1)
            else:
                n, p = read_length(buf, q)
                pos = p + n
            buf[p:pos].decode()
        else:
            pos += 1
        if pos > block_end:
            raise Damage("a record runs past the end of its block")
        emit(new(cls, (offset, timestamp, op, collection, tenant, rid, view, start,
                       version_end, content_start, id_mark, id_start, source_end,
                       tail_start, pos)))
    return pos
