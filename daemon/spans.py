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

import bisect
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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


class Gathered:
    """Bytes given as plain pieces, in order (a segment: its framing and its records as
    the codec made them): an object store writes them where it can without joining them
    (a file: ``writev``), and joins them once where it cannot (an HTTP body). ``len`` is
    the bytes' length."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: list[bytes | bytearray | memoryview]) -> None:
        self.pieces = pieces
        self.size = sum(len(p) for p in pieces)

    def __len__(self) -> int:
        return self.size

    def join(self) -> bytes:
        return b"".join(self.pieces)

    def sha256(self) -> bytes:
        import hashlib

        digest = hashlib.sha256()
        for piece in self.pieces:
            digest.update(piece)
        return digest.digest()


Payload = bytes | bytearray | memoryview | Gathered
"""What ``ObjectStore.put`` stores: bytes, or bytes given as pieces."""


def joined(data: Payload) -> bytes | bytearray | memoryview:
    """``data`` as one buffer (pieces joined; bytes as they are)."""
    return data.join() if isinstance(data, Gathered) else data


class _Sized:
    """What the range sources here share: a size, the bounds check of ``copy_into``, and
    ``read`` as a ``copy_into`` of a new buffer."""

    _size: int

    def __len__(self) -> int:
        return self._size

    def copy_into(self, offset: int, out: memoryview) -> None:
        raise NotImplementedError

    def _check(self, offset: int, n: int) -> None:
        if offset < 0 or offset + n > self._size:
            raise ValueError(f"bytes [{offset}, {offset + n}) outside {self._size}")

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        out = bytearray(length)
        self.copy_into(offset, memoryview(out))
        return bytes(out)


class PiecesSource(_Sized):
    """The pieces one after the other, as one ``RangeSource``: a file assembled from pieces
    (a bucket written by runs of a base's rows) read block by block without joining it.
    A range that spans pieces is copied out of each in turn."""

    def __init__(self, pieces: Iterable[Piece]) -> None:
        self._pieces = [p if isinstance(p, Span) else memoryview(p).cast("B") for p in pieces]
        self._starts: list[int] = []
        at = 0
        for p in self._pieces:
            self._starts.append(at)
            at += len(p)
        self._size = at

    def copy_into(self, offset: int, out: memoryview) -> None:
        n = len(out)
        self._check(offset, n)
        k, done = bisect.bisect_right(self._starts, offset) - 1, 0
        while done < n:
            piece, lo = self._pieces[k], offset + done - self._starts[k]
            take = min(len(piece) - lo, n - done)
            if isinstance(piece, Span):
                piece.copy_into(lo, out[done:done + take])
            else:
                out[done:done + take] = piece[lo:lo + take]
            done += take
            k += 1


@dataclass
class HeadLast:
    """A file whose first ``head_size`` bytes are known only once the rest is made (a data
    file's header holds the index of rows that are opened as they are written): the writer
    leaves them out, writes ``body``'s pieces as they come (each written before the next is
    taken, so the body may reuse its buffers), then writes ``head()`` over the gap. A head of
    None means no file after all (nothing in the body was worth keeping): the target is left
    as it was."""

    head_size: int
    body: Iterable[Piece]
    head: Callable[[], bytes | None]


class Parts:
    """An object's bytes as consecutive parts that arrive in order (a ranged read's), with
    the object's size: iterated once, by a writer, or read as a ``ForwardSource``."""

    def __init__(self, parts: Iterable[bytes], size: int) -> None:
        self._parts = iter(parts)
        self.size = size

    def __iter__(self) -> Iterator[bytes]:
        return self._parts


class ForwardSource(_Sized):
    """``Parts`` as a ``RangeSource`` for a reader that moves forward (a data file read block
    by block: its framing, a little ahead of the block, then the block): only the parts
    still needed are held. A part is let go once it ends before both this read and the one
    before it; reading what was let go is a ``ValueError``."""

    def __init__(self, parts: Parts) -> None:
        self._parts = iter(parts)
        self._size = parts.size
        self._held: deque[tuple[int, bytes]] = deque()  # (start, part), in order
        self._end = 0  # where the next part begins
        self._last = 0  # the previous read's offset

    def copy_into(self, offset: int, out: memoryview) -> None:
        n = len(out)
        self._check(offset, n)
        floor = min(offset, self._last)
        while self._held and self._held[0][0] + len(self._held[0][1]) <= floor:
            self._held.popleft()
        self._last = offset
        if offset < (self._held[0][0] if self._held else self._end):
            raise ValueError(f"bytes from {offset} were let go: the source reads forward")
        while self._end < offset + n:
            part = next(self._parts, None)
            if part is None:
                raise ValueError(f"the parts end at {self._end}, before {offset + n}")
            self._held.append((self._end, part))
            self._end += len(part)
        done = 0
        for start, part in self._held:
            if done == n:
                break
            lo = offset + done - start
            if lo >= len(part):
                continue
            take = min(len(part) - lo, n - done)
            out[done:done + take] = part[lo:lo + take]
            done += take


class FileSource(_Sized):
    """A local file's bytes as a ``RangeSource``, read with ``pread`` as they are copied out:
    nothing of the file is held in the process (what is read stays in the page cache, which
    the kernel may reclaim). Owns ``fd`` once given it: ``close`` closes it."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size

    def copy_into(self, offset: int, out: memoryview) -> None:
        n = len(out)
        self._check(offset, n)
        done = 0
        while done < n:
            got = os.preadv(self._fd, [out[done:]], offset + done)
            if got <= 0:
                raise ValueError(f"the file ends at {offset + done}, before {offset + n}")
            done += got

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
