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
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.errors import IntegrityError
from daemon.spans import Gathered

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


def seal(plaintext: bytes | bytearray | memoryview | Gathered, object_key: str, data_key: bytes,
         wrapped_key: bytes, chunk_log2: int = DEFAULT_CHUNK_LOG2) -> bytearray:
    """The sealed object of ``plaintext`` stored under ``object_key``. Each chunk is encrypted
    straight into its place in the output: the plaintext is copied once. Given as pieces (a
    segment's framing and datums, ``spans.Gathered``), a chunk that lies in one piece is
    encrypted from it, and one that spans pieces from a chunk-sized scratch buffer they are
    copied into: the pieces are never joined."""
    if len(data_key) != KEY_BYTES:
        raise ValueError("the data key is 32 bytes (AES-256)")
    header = Header(AES_256_GCM, chunk_log2, os.urandom(NONCE_PREFIX), wrapped_key)
    head = header.encode()
    aad = _aad(object_key, head)
    aead = AESGCM(data_key)
    size, stride = header.chunk_size, header.chunk_size + TAG
    total = len(plaintext)
    count = max(1, -(-total // size))
    out = bytearray(len(head) + total + count * TAG)
    out[:len(head)] = head
    target = memoryview(out)[len(head):]
    chunks = _chunks(plaintext.pieces, size) if isinstance(plaintext, Gathered) else (
        memoryview(plaintext)[i * size:(i + 1) * size] for i in range(count))
    for i, piece in enumerate(chunks):
        aead.encrypt_into(_nonce(header, i, i == count - 1), piece, aad,
                          target[i * stride:i * stride + len(piece) + TAG])
    return out


def _chunks(pieces: list[bytes | bytearray | memoryview], size: int) -> Iterator[memoryview]:
    """The bytes of ``pieces`` one after the other, cut into chunks of ``size`` (the last may be
    shorter; one empty chunk for no bytes, as an empty object has). A chunk inside one piece is
    a view of it; one across pieces is gathered into a reused scratch buffer, valid until the
    next chunk is taken."""
    scratch = memoryview(bytearray(size))
    used = 0
    produced = False
    for piece in pieces:
        view = memoryview(piece).cast("B")
        at = 0
        while at < len(view):
            if used == 0 and len(view) - at >= size:
                yield view[at:at + size]
                produced = True
                at += size
                continue
            take = min(size - used, len(view) - at)
            scratch[used:used + take] = view[at:at + take]
            used += take
            at += take
            if used == size:
                yield scratch
                produced = True
                used = 0
    if used or not produced:
        yield scratch[:used]


def sealed_size(plaintext_length: int, header_size: int, chunk_log2: int) -> int:
    """The length of the sealed object of ``plaintext_length`` bytes."""
    count = max(1, -(-plaintext_length // (1 << chunk_log2)))
    return header_size + plaintext_length + count * TAG


def plaintext_size(header: Header, object_size: int) -> int:
    """The plaintext length of a sealed object of ``object_size`` bytes."""
    return plaintext_length(object_size, header.size, header.chunk_log2)


def plaintext_length(object_size: int, header_size: int, chunk_log2: int) -> int:
    """The plaintext length of a sealed object of ``object_size`` bytes whose header is
    ``header_size`` bytes (the inverse of :func:`sealed_size`)."""
    body = object_size - header_size
    count = max(1, -(-body // ((1 << chunk_log2) + TAG)))
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


def open_range(plan: RangePlan, chunks: bytes | memoryview, header: Header, object_key: str,
               data_key: bytes) -> bytes:
    """The plaintext range ``plan`` describes, from its ciphertext bytes ``chunks``, as bytes
    (decrypted into one buffer, then copied out: see ``open_chunks`` to keep the buffer)."""
    out = open_chunks(plan, chunks, header, object_key, data_key)
    return bytes(memoryview(out)[plan.skip:plan.skip + plan.length])


def open_chunks(plan: RangePlan, chunks: bytes | memoryview, header: Header, object_key: str,
                data_key: bytes) -> bytearray:
    """The plaintext of the chunks ``plan`` names, each decrypted straight into its place in
    one buffer (the only copy); the range is ``[plan.skip, plan.skip + plan.length)`` of it."""
    aead = AESGCM(data_key)
    aad = _aad(object_key, header.encode())
    size, stride = header.chunk_size, header.chunk_size + TAG
    view = memoryview(chunks)
    count = plan.last - plan.first + 1
    if len(view) < (count - 1) * stride + TAG:
        raise IntegrityError(f"{object_key}: {len(view)} bytes cannot hold chunks {plan.first}"
                             f"-{plan.last}", "the object was cut short")
    out = bytearray(len(view) - count * TAG)
    target = memoryview(out)
    for n in range(count):
        i = plan.first + n
        piece = view[n * stride:(n + 1) * stride]
        try:
            aead.decrypt_into(_nonce(header, i, i == plan.final), piece, aad,
                              target[n * size:n * size + len(piece) - TAG])
        except (InvalidTag, ValueError):
            raise IntegrityError(f"{object_key}: chunk {i} does not authenticate",
                                 "the object was changed, cut short, moved from another key, "
                                 "or sealed under another key") from None
    return out


class OpenedObject:
    """A sealed object's plaintext, opened chunk by chunk only when its bytes are copied out
    (a :class:`daemon.spans.RangeSource`): a restore writes the runs of a base file straight
    from the mapped ciphertext into its output, each chunk decrypted into the writer's
    scratch buffer, never into one buffer for the whole object. Every chunk is authenticated
    before a byte of it is used; the last chunk opened is kept, so reads that share a chunk
    (a block's framing, then the block) open it once."""

    def __init__(self, sealed: bytes | memoryview, object_key: str, data_key: bytes,
                 header: Header) -> None:
        self._sealed = memoryview(sealed)
        self.object_key = object_key
        self._header = header
        plan = plan_range(header, len(self._sealed), 0, None)
        self._size = plaintext_size(header, len(self._sealed))
        self._final = plan.final
        self._aead = AESGCM(data_key)
        self._aad = _aad(object_key, header.encode())
        self._kept = -1
        self._chunk = bytearray(header.chunk_size)
        self._kept_chunk(self._final)  # authenticated now: an object cut short fails here

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"OpenedObject({self.object_key!r}, {self._size} bytes)"

    def copy_into(self, offset: int, out: memoryview) -> None:
        """Plaintext bytes ``[offset, offset + len(out))`` into ``out``: whole chunks are
        decrypted straight into it, partial ones through the kept chunk. (The loop is the
        restore's per-chunk cost: its names are bound once.)"""
        end = offset + len(out)
        if offset < 0 or end > self._size:
            raise ValueError(f"{self.object_key}: bytes [{offset}, {end}) outside its "
                             f"{self._size}")
        size = self._header.chunk_size
        at, pos = 0, offset
        decrypt, sealed, aad = self._aead.decrypt_into, self._sealed, self._aad
        header, final, total = self._header, self._final, self._size
        head, stride = header.size, size + TAG
        while pos < end:
            i = pos // size
            lo = i * size
            hi = min(lo + size, total)
            n = min(hi, end) - pos
            if pos == lo and n == hi - lo:
                start = head + i * stride
                try:
                    decrypt(_nonce(header, i, i == final), sealed[start:start + n + TAG], aad,
                            out[at:at + n])
                except (InvalidTag, ValueError):
                    raise self._damaged(i) from None
            else:
                out[at:at + n] = self._kept_chunk(i)[pos - lo:pos - lo + n]
            at += n
            pos += n

    def read(self, offset: int, length: int) -> bytes:
        """Plaintext bytes ``[offset, offset + length)``, clamped to the object's end."""
        length = max(0, min(length, self._size - offset))
        out = bytearray(length)
        self.copy_into(offset, memoryview(out))
        return bytes(out)

    def _kept_chunk(self, i: int) -> memoryview:
        size = self._header.chunk_size
        n = min(size, self._size - i * size)
        view = memoryview(self._chunk)[:n]
        if self._kept != i:
            self._kept = -1  # not kept if opening fails
            self._open(i, view)
            self._kept = i
        return view

    def _open(self, i: int, out: memoryview) -> None:
        stride = self._header.chunk_size + TAG
        start = self._header.size + i * stride
        piece = self._sealed[start:start + len(out) + TAG]
        try:
            self._aead.decrypt_into(_nonce(self._header, i, i == self._final), piece,
                                    self._aad, out)
        except (InvalidTag, ValueError):
            raise self._damaged(i) from None

    def _damaged(self, i: int) -> IntegrityError:
        return IntegrityError(f"{self.object_key}: chunk {i} does not authenticate",
                              "the object was changed, cut short, moved from another key, "
                              "or sealed under another key")


def open_all(blob: bytes, object_key: str, data_key: bytes) -> bytes:
    """The whole plaintext of a sealed object."""
    header = Header.parse(blob, object_key)
    plan = plan_range(header, len(blob), 0, None)
    return open_range(plan, blob[plan.start:plan.end], header, object_key, data_key)


def _nonce(header: Header, index: int, last: bool) -> bytes:
    return header.nonce_prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _aad(object_key: str, head: bytes) -> bytes:
    return object_key.encode() + b"\x00" + head
