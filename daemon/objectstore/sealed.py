"""Sealed objects: the on-storage layout of an encrypted object (issue 13, format 1), pure.

An object is sealed under a random 256-bit data key with AES-256-GCM, in chunks that are each
authenticated on their own, so a ranged read decrypts only the chunks that hold the range
(a layout like Tink's streaming AEAD and age's STREAM):

    header   magic "VWS1" | algorithm (1 byte: 1 = AES-256-GCM) | log2 of the chunk size
             (1 byte) | nonce prefix (7 random bytes) | length of the wrapped key (2 bytes,
             big-endian) | the wrapped key (the data key as the key-encryption key sealed it;
             opaque here)
    chunks   chunk i: AES-256-GCM of plaintext bytes [i*C, (i+1)*C), its 16-byte tag after
             it; every chunk is C bytes of plaintext but the last, which may be shorter (an
             empty object is one empty last chunk)

Chunk i's nonce is the nonce prefix, i (4 bytes, big-endian) and a last-chunk flag (1 byte,
1 on the last chunk): chunks cannot be reordered, and an object cut at a chunk boundary fails
(its new last chunk was sealed as not last). Every chunk's associated data is the object's
key (UTF-8), a NUL byte and the whole header: an object moved to another key, or given
another wrapped key, fails to open. The plaintext length is not stored: it follows from the
object's length (``plaintext_size``).

Key handling (which key-encryption key, KMS) is the caller's: ``seal`` takes the data key and
its wrapped form, ``open_*`` the data key.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.errors import IntegrityError

MAGIC = b"VWS1"
AES_256_GCM = 1
TAG = 16
KEY_BYTES = 32
NONCE_PREFIX = 7
DEFAULT_CHUNK_LOG2 = 16
"""64 KiB of plaintext a chunk: 0.02% of tags, and a ranged read decrypts at most 128 KiB
more than it asked for."""
_FIXED = struct.Struct(">4sBB7sH")


@dataclass(frozen=True)
class Header:
    algorithm: int
    chunk_log2: int
    nonce_prefix: bytes
    wrapped_key: bytes

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_log2

    def encode(self) -> bytes:
        return _FIXED.pack(MAGIC, self.algorithm, self.chunk_log2, self.nonce_prefix,
                           len(self.wrapped_key)) + self.wrapped_key

    @property
    def size(self) -> int:
        return _FIXED.size + len(self.wrapped_key)

    @classmethod
    def parse(cls, data: bytes, where: str) -> Header:
        """The header at the start of ``data`` (at least ``HEADER_PEEK`` bytes of the object,
        or all of it)."""
        if len(data) < _FIXED.size:
            raise IntegrityError(f"{where}: {len(data)} bytes is too short for a sealed object",
                                 "the object is truncated or not encrypted")
        magic, algorithm, chunk_log2, prefix, n = _FIXED.unpack_from(data)
        if magic != MAGIC:
            raise IntegrityError(f"{where}: not a sealed object (starts {magic!r})",
                                 "is [encryption] set for a repository written without it?")
        if algorithm != AES_256_GCM or not 10 <= chunk_log2 <= 24:
            raise IntegrityError(f"{where}: sealed with algorithm {algorithm}, chunks of 2^"
                                 f"{chunk_log2} bytes, which this version does not read",
                                 "use the vecwal version that wrote the repository")
        if len(data) < _FIXED.size + n:
            raise IntegrityError(f"{where}: the header's wrapped key is cut short", "")
        return cls(algorithm, chunk_log2, prefix, bytes(data[_FIXED.size:_FIXED.size + n]))


HEADER_PEEK = _FIXED.size + 1024
"""Bytes to read from an object's start to hold its header (wrapped keys are far shorter)."""


def seal(plaintext: bytes, object_key: str, data_key: bytes, wrapped_key: bytes,
         chunk_log2: int = DEFAULT_CHUNK_LOG2) -> bytes:
    """The sealed object of ``plaintext`` stored under ``object_key``."""
    if len(data_key) != KEY_BYTES:
        raise ValueError("the data key is 32 bytes (AES-256)")
    header = Header(AES_256_GCM, chunk_log2, os.urandom(NONCE_PREFIX), wrapped_key)
    head = header.encode()
    aad = _aad(object_key, head)
    aead = AESGCM(data_key)
    size = header.chunk_size
    view = memoryview(plaintext)
    count = max(1, -(-len(plaintext) // size))
    parts = [head]
    for i in range(count):
        parts.append(aead.encrypt(_nonce(header, i, i == count - 1),
                                  view[i * size:(i + 1) * size], aad))
    return b"".join(parts)


def plaintext_size(header: Header, object_size: int) -> int:
    """The plaintext length of a sealed object of ``object_size`` bytes."""
    body = object_size - header.size
    count = max(1, -(-body // (header.chunk_size + TAG)))
    size = body - count * TAG
    if size < 0:
        raise IntegrityError(f"a sealed object of {object_size} bytes is too short for its "
                             "chunks", "the object is truncated")
    return size


@dataclass(frozen=True)
class RangePlan:
    """Which ciphertext bytes a plaintext range needs: chunks ``first`` to ``last`` (inclusive),
    at object bytes [start, end), and where the range starts in the first chunk's plaintext."""

    first: int
    last: int
    start: int
    end: int
    skip: int
    length: int
    final: int
    """The object's last chunk index."""


def plan_range(header: Header, object_size: int, offset: int, length: int | None) -> RangePlan:
    """The chunks holding plaintext bytes [offset, offset + length) (None: to the end), clamped
    to the object as a ranged GET is."""
    total = plaintext_size(header, object_size)
    size, stride = header.chunk_size, header.chunk_size + TAG
    final = max(0, -(-total // size) - 1)
    offset = min(offset, total)
    stop = total if length is None else min(total, offset + length)
    first = min(offset // size, final)
    last = max(first, min((max(stop, 1) - 1) // size, final))
    start = header.size + first * stride
    end = min(object_size, header.size + (last + 1) * stride)
    return RangePlan(first, last, start, end, offset - first * size, stop - offset, final)


def open_range(plan: RangePlan, chunks: bytes, header: Header, object_key: str,
               data_key: bytes) -> bytes:
    """The plaintext range ``plan`` describes, from its ciphertext bytes ``chunks``."""
    aead = AESGCM(data_key)
    aad = _aad(object_key, header.encode())
    stride = header.chunk_size + TAG
    out = []
    view = memoryview(chunks)
    for n, i in enumerate(range(plan.first, plan.last + 1)):
        piece = view[n * stride:(n + 1) * stride]
        try:
            out.append(aead.decrypt(_nonce(header, i, i == plan.final), piece, aad))
        except InvalidTag:
            raise IntegrityError(f"{object_key}: chunk {i} does not authenticate",
                                 "the object was changed, cut short, moved from another key, "
                                 "or sealed under another key") from None
    data = b"".join(out)
    return data[plan.skip:plan.skip + plan.length]


def open_all(blob: bytes, object_key: str, data_key: bytes) -> bytes:
    """The whole plaintext of a sealed object."""
    header = Header.parse(blob, object_key)
    plan = plan_range(header, len(blob), 0, None)
    return open_range(plan, blob[plan.start:plan.end], header, object_key, data_key)


def _nonce(header: Header, index: int, last: bool) -> bytes:
    return header.nonce_prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _aad(object_key: str, head: bytes) -> bytes:
    return object_key.encode() + b"\x00" + head
