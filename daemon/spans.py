"""Spans: byte ranges of a source that produces its bytes only when they are copied out.

A restore from an encrypted repository writes each bucket file as long runs of its base
file's rows. Decrypting the whole base into a buffer first, then copying the runs out of it
into the output, passes every byte through memory twice, and through fresh pages (a page
fault per 4 KiB) at that. A :class:`Span` instead names a range of a :class:`RangeSource`
(an opened sealed object: ``objectstore.sealed.OpenedObject``) and the writer copies it out
when it writes (``atomic.write_pieces``): the source decrypts it straight into the writer's
small scratch buffer, which stays in the CPU's cache until it is written.

A data file's pieces may mix plain buffers (bytes, memoryviews) and spans; ``length`` and
``copy_pieces`` handle both."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable


@runtime_checkable
class RangeSource(Protocol):
    """Bytes produced on demand: ``copy_into`` fills ``out`` with bytes
    ``[offset, offset + len(out))``; ``read`` returns a short range (framing)."""

    def __len__(self) -> int: ...

    def copy_into(self, offset: int, out: memoryview) -> None: ...

    def read(self, offset: int, length: int) -> bytes: ...


class Span:
    """Bytes ``[offset, offset + length)`` of ``source``, not produced yet. Slicing gives a
    span; ``copy_into(start, out)`` copies the span's bytes from ``start`` on into ``out``."""

    __slots__ = ("length", "offset", "source")

    def __init__(self, source: RangeSource, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > len(source):
            raise ValueError(f"span [{offset}, {offset + length}) outside a source of "
                             f"{len(source)} bytes")
        self.source, self.offset, self.length = source, offset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, part: slice) -> Span:
        start, stop, step = part.indices(self.length)
        if step != 1:
            raise ValueError("a span slices with step 1 only")
        return Span(self.source, self.offset + start, max(0, stop - start))

    def copy_into(self, start: int, out: memoryview) -> None:
        if start < 0 or start + len(out) > self.length:
            raise ValueError(f"bytes [{start}, {start + len(out)}) outside a span of "
                             f"{self.length}")
        self.source.copy_into(self.offset + start, out)

    def __repr__(self) -> str:
        return f"Span({self.source!r}, {self.offset}, {self.length})"


Piece = bytes | bytearray | memoryview | Span
"""A piece of a file being written: bytes at hand, or a span copied out when written."""


def whole(source: bytes | memoryview | RangeSource) -> bytes | memoryview | Span:
    """All of ``source`` as one piece."""
    if isinstance(source, (bytes, memoryview)):
        return source
    return Span(source, 0, len(source))


def piece_length(piece: Piece) -> int:
    return len(piece) if isinstance(piece, Span) else memoryview(piece).nbytes


def copy_pieces(pieces: Iterable[Piece], out: memoryview) -> int:
    """The pieces one after the other into ``out`` (which must hold them); bytes copied."""
    at = 0
    for piece in pieces:
        n = piece_length(piece)
        if isinstance(piece, Span):
            piece.copy_into(0, out[at:at + n])
        else:
            out[at:at + n] = memoryview(piece).cast("B")
        at += n
    return at
