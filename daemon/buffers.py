"""``ReusedBuffer``: a scratch buffer a process keeps from file to file.

A restore with per-tenant keys opens every bucket file a block at a time: each block is
decrypted into one buffer and its rows opened into another (``snapshot.opened``). A new
``bytearray`` per block costs a zero-fill and a page fault per 4 KiB every time; one kept and
grown to the largest block still pays both each time it grows. This buffer is an anonymous
mapping grown with a quarter of headroom: never zero-filled by hand (the kernel's zero pages
are faulted in on first touch only, so the headroom costs nothing until it is used), and
grown at most once or twice per process.

On the VMs these figures were measured on, memory the kernel had returned to the host
(virtio-balloon free page reporting) costs about 20 us per 4 KiB page on first touch, so a
fault saved is worth far more than the copy it avoids (docs/performance.md, "Client-side
encryption")."""

from __future__ import annotations

import mmap

HEADROOM = 1.25
"""A grown buffer's size over what was asked: blocks of one collection differ by a few
percent, so the second-largest rarely needs another growth."""


class ReusedBuffer:
    """``view(n)``: a writable memoryview of ``n`` bytes, valid until the next ``view``
    call (the memory is reused, its old contents left in place)."""

    def __init__(self) -> None:
        self._map: mmap.mmap | None = None

    @property
    def capacity(self) -> int:
        return 0 if self._map is None else len(self._map)

    def view(self, n: int) -> memoryview:
        if n < 0:
            raise ValueError(f"a buffer of {n} bytes")
        if self._map is None or len(self._map) < n:
            # the old mapping goes when the last view of it does
            self._map = mmap.mmap(-1, max(int(n * HEADROOM), mmap.PAGESIZE))
        return memoryview(self._map)[:n]
