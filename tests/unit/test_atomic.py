"""atomic_write with data in pieces: more pieces than one writev takes, empty pieces, views."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon import atomic
from daemon.atomic import atomic_write


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
