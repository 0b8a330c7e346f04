"""Reading large objects in parts: ranged GETs, a bounded number in flight, into bounded
buffers, so a restore from S3 reads a bucket file at the bucket's speed without ever holding
more of it than ``(depth + 1) * part_bytes``.

Built on the interface's ``get_range`` alone, so every backend (and the EncryptedStore, which
maps a plaintext range to the sealed chunks that hold it) reads this way unchanged; the
contract suite (``tests/objectstore/test_contract.py``) runs it on each.

One GET of a whole 100 MB object is one TCP stream: its speed is what one connection gets
from the server, and the process holds all of it at once. Parts of a few MB fetched a few at
a time keep several connections busy and the memory flat whatever the object's size; the
first part is in hand after one part's transfer, not the whole object's.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import groupby
from operator import itemgetter

from daemon.errors import IntegrityError
from daemon.objectstore import ObjectStore
from daemon.spans import FileSource

__all__ = ["DEPTH", "PART_BYTES", "RangedReader", "joined", "spooled"]

PART_BYTES = 8 << 20
"""Bytes per ranged GET: large enough that a request's round trip is small beside its
transfer, small enough that ``DEPTH + 1`` of them are a modest buffer."""
DEPTH = 4
"""Ranged GETs in flight per reader."""


class RangedReader:
    """Reads objects of known size as consecutive parts, with up to ``depth`` ranged GETs in
    flight (also across the end of one object and the start of the next). Use as a context
    manager, or call ``close``; one reader serves one thread at a time."""

    def __init__(self, store: ObjectStore, *, part_bytes: int = PART_BYTES,
                 depth: int = DEPTH) -> None:
        if part_bytes < 1 or depth < 1:
            raise ValueError(f"part_bytes and depth must be positive, got {part_bytes}, {depth}")
        self.store, self.part_bytes, self.depth = store, part_bytes, depth
        self._pool = ThreadPoolExecutor(depth, thread_name_prefix="vecwal-ranged")

    def __enter__(self) -> RangedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def parts(self, key: str, size: int) -> Iterator[bytes]:
        """The ``size`` bytes of the object under ``key`` (its size as ``head``, a listing or a
        manifest gives it), in order, as parts of ``part_bytes`` (the last one shorter; one
        ``b""`` part for an empty object, which must still exist).

        Raises what ``get_range`` raises (:class:`ObjectNotFound` for a missing object), and
        :class:`IntegrityError` when the object is shorter than ``size``: it is not the
        object the caller knows of. Bytes past ``size`` are not read."""
        for _, part in self.objects([(key, size)]):
            yield part

    def whole(self, key: str, size: int) -> bytearray:
        """The object's ``size`` bytes in one buffer, filled from parallel ranged GETs (for a
        reader that needs them all at once; only ``depth`` parts are ever held besides)."""
        return joined(self.parts(key, size), size)

    def each(self, objects: Iterable[tuple[str, int]]) -> Iterator[Iterator[bytes]]:
        """One iterator of parts per object of ``objects``, in order, as ``objects`` reads
        them: each must be consumed before the next is taken (whatever is left of it is
        skipped, still fetched)."""
        for _, group in groupby(self.objects(objects), key=itemgetter(0)):
            yield (part for _, part in group)

    def objects(self, objects: Iterable[tuple[str, int]]) -> Iterator[tuple[int, bytes]]:
        """(index of the object in ``objects``, part) for every part of every object, in
        order; the GETs of the next object start while the last parts of one are consumed.
        Memory holds at most ``depth`` parts in flight and the one being consumed."""
        pending: deque[tuple[int, str, int, int, Future[bytes]]] = deque()
        ranges = self._ranges(objects)
        try:
            for _ in range(self.depth):
                if not self._submit(ranges, pending):
                    break
            while pending:
                index, key, start, length, fut = pending.popleft()
                part = fut.result()
                self._submit(ranges, pending)
                if len(part) != length:
                    raise IntegrityError(
                        f"{self.store.url}: {key} ends at byte {start + len(part)}, not "
                        f"{start + length} as its manifest or listing says",
                        "the object was replaced or truncated since it was listed; run "
                        "`vecwal verify --deep`")
                yield index, part
        finally:
            for *_, fut in pending:
                fut.cancel()

    def _ranges(self, objects: Iterable[tuple[str, int]]) -> Iterator[tuple[int, str, int, int]]:
        for index, (key, size) in enumerate(objects):
            if size < 0:
                raise ValueError(f"{key}: negative size {size}")
            yield index, key, 0, min(size, self.part_bytes)
            for start in range(self.part_bytes, size, self.part_bytes):
                yield index, key, start, min(self.part_bytes, size - start)

    def _submit(self, ranges: Iterator[tuple[int, str, int, int]],
                pending: deque[tuple[int, str, int, int, Future[bytes]]]) -> bool:
        nxt = next(ranges, None)
        if nxt is None:
            return False
        index, key, start, length = nxt
        pending.append((index, key, start, length,
                        self._pool.submit(self.store.get_range, key, start, length)))
        return True


def spooled(parts: Iterable[bytes], size: int, directory: str | os.PathLike[str] | None = None
            ) -> FileSource:
    """``size`` bytes from consecutive ``parts`` written to a new unnamed file in
    ``directory`` (the system's temporary directory when None) as they arrive, to be read
    back by range: a large object then costs the process no more memory than its parts in
    flight. The file has no name (``O_TMPFILE`` where the system has it) and is private to
    its owner; it is gone once the source is closed, or the process ends."""
    with tempfile.TemporaryFile(dir=directory, buffering=0) as f:
        at = 0
        for part in parts:
            view = memoryview(part)
            while view:
                wrote = f.write(view)
                view = view[wrote:]
                at += wrote
        if at != size:
            raise IntegrityError(f"{at} bytes arrived of {size}",
                                 "the object changed while it was read; run `vecwal verify`")
        return FileSource(os.dup(f.fileno()), size)


def joined(parts: Iterable[bytes], size: int) -> bytearray:
    """``size`` bytes from consecutive ``parts`` in one buffer, each part copied in once."""
    out = bytearray(size)
    at = 0
    for part in parts:
        out[at:at + len(part)] = part
        at += len(part)
    return out
