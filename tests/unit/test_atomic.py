"""atomic_write with data in pieces: more pieces than one writev takes, empty pieces, views."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon import atomic
from daemon.atomic import atomic_write
from daemon.spans import Piece, Span


def test_many_pieces_are_written_in_order(tmp_path: Path) -> None:
    pieces: list[bytes | memoryview] = [bytes([i % 251]) * (i % 7) for i in range(5000)]
    pieces[10] = memoryview(b"xyz-view")[1:5]
    atomic_write(tmp_path / "f", pieces, durable=False)
    assert (tmp_path / "f").read_bytes() == b"".join(bytes(p) for p in pieces)


def test_partial_writes_are_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.writev

    def short(fd: int, buffers: list[memoryview]) -> int:  # at most 5 bytes a call
        first = bytes(buffers[0])[:5]
        return real(fd, [first])

    monkeypatch.setattr(atomic.os, "writev", short)
    pieces = [b"hello ", b"", b"partial ", b"world"]
    atomic_write(tmp_path / "f", pieces)
    assert (tmp_path / "f").read_bytes() == b"hello partial world"


class _Counting:
    """A RangeSource of known bytes that counts the bytes copied out of it."""

    def __init__(self, data: bytes) -> None:
        self.data, self.copied = data, 0

    def __len__(self) -> int:
        return len(self.data)

    def copy_into(self, offset: int, out: memoryview) -> None:
        out[:] = self.data[offset:offset + len(out)]
        self.copied += len(out)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]


def test_spans_are_copied_out_through_the_scratch_buffer(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans mixed with bytes, spans longer than the scratch buffer and more pieces than one
    writev takes: the file is the pieces in order, and each span byte is copied out once."""
    monkeypatch.setattr(atomic, "_SCRATCH", 4096)
    monkeypatch.setattr(atomic, "_IOV_MAX", 7)
    source = _Counting(os.urandom(50_000))
    pieces: list[Piece] = []
    want = b""
    for i in range(40):
        if i % 3:
            start, n = (i * 997) % 40_000, (i * 331) % 9000
            pieces.append(Span(source, start, n)[1:])
            want += source.data[start + 1:start + n]
        else:
            pieces.append(bytes([i]) * i)
            want += bytes([i]) * i
    atomic_write(tmp_path / "f", pieces, durable=False)
    assert (tmp_path / "f").read_bytes() == want
    assert source.copied == sum(len(p) for p in pieces if isinstance(p, Span))
