"""Avro object container framing, shared by the change log's segments and the snapshots' data
files: the header (magic, metadata map, sync marker), a block (record count, byte size, the
records' bytes compressed by the file's codec, the sync marker), and the codecs (null,
deflate, zstandard). At the bottom of the layers: it knows bytes, not records, so
``changelog`` and ``snapshot`` both build on it without reaching into each other."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from functools import cache
from typing import Any, TypeVar

from daemon.avro_long import avro_long
from daemon.errors import IntegrityError
from daemon.spans import Piece, copy_pieces

MAGIC = b"Obj\x01"

P = TypeVar("P", bound=Piece)


def container_header(meta: dict[str, bytes], sync: bytes) -> bytes:
    """The header of an Avro object container file: magic, metadata map, sync marker."""
    out = bytearray(MAGIC)
    out += avro_long(len(meta))
    for k, v in meta.items():
        kb = k.encode()
        out += avro_long(len(kb)) + kb + avro_long(len(v)) + v
    out += avro_long(0) + sync
    return bytes(out)


def container_block(pieces: Sequence[P], count: int, size: int, codec: str,
                    sync: bytes) -> list[P | bytes]:
    """One block of an Avro object container file: ``count`` records whose bytes are
    ``pieces`` (``size`` bytes in all), compressed by ``codec``, then the sync marker. With
    the null codec the pieces are kept as they are (no copy)."""
    data: list[P | bytes]
    if codec == "null":
        data = list(pieces)
    else:
        joined = bytearray(size)
        copy_pieces(pieces, memoryview(joined))
        data = [compress(joined, codec)]
        size = len(data[0])
    return [avro_long(count) + avro_long(size), *data, sync]


def long_len(n: int) -> int:
    """Bytes of ``n`` as an Avro (zigzag varint) long."""
    z = (n << 1) ^ (n >> 63)
    return max(1, (z.bit_length() + 6) // 7)


def compress(data: bytes | bytearray, codec: str) -> bytes:
    """One block's bytes in ``codec`` (null, deflate or zstandard)."""
    if codec == "null":
        return bytes(data)
    if codec == "deflate":
        c = zlib.compressobj(wbits=-15)
        return c.compress(data) + c.flush()
    if codec == "zstandard":
        return zstd().compress(data)  # type: ignore[no-any-return]
    raise ValueError(f"unknown codec {codec!r}")


def decompress(data: bytes | memoryview, codec: str) -> bytes | memoryview:
    if codec == "null":
        return data
    if codec == "deflate":
        return zlib.decompress(data, wbits=-15)
    if codec == "zstandard":
        return zstd().decompress(data)  # type: ignore[no-any-return]
    raise IntegrityError(f"unknown codec {codec!r}", "use the vecwal version that wrote the file")


@cache
def zstd() -> Any:
    """The zstd module (looked up once: a failed import searches the path every time)."""
    import importlib

    try:
        return importlib.import_module("compression.zstd")
    except ImportError:
        return importlib.import_module("backports.zstd")
