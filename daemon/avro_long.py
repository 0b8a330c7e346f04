"""Avro's long encoding (a zigzag varint), for the code that writes Avro bytes without an Avro
library: data files and container blocks (``snapshot.datafile``), the change log's header
fields (``kafka_headers``), capture's restamped records. At the bottom of the layers, so each
of them can use it."""

from __future__ import annotations


def avro_long(n: int) -> bytes:
    """``n`` as an Avro long (zigzag varint). Lengths of ids and short strings are one byte:
    those come from a table, as hot loops (validation, splicing) ask for one per record."""
    if -64 <= n < 64:
        return _ONE_BYTE[n]
    return _encode_long(n)


def _encode_long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_ONE_BYTE = {n: _encode_long(n) for n in range(-64, 64)}
