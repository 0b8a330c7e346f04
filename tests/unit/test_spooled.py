"""``ranged.spooled`` and ``spans.FileSource``: an object's parts written to an unnamed local
file as they arrive and read back by range (how a restore from S3 holds a large bucket file it
merges, ``restore.executor.SPOOL_MIN_BYTES``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.errors import IntegrityError
from daemon.objectstore.ranged import spooled
from daemon.spans import Span


def parts_of(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def test_a_spooled_object_reads_back_by_range(tmp_path: Path) -> None:
    data = os.urandom(100_003)
    source = spooled(parts_of(data, 7_919), len(data), tmp_path)
    try:
        assert len(source) == len(data)
        assert source.read(0, len(data)) == data
        for offset, length in ((0, 1), (7_918, 2), (50_000, 30_001), (100_002, 1), (5, 0)):
            assert source.read(offset, length) == data[offset:offset + length]
        out = bytearray(4_096)
        Span(source, 90_000, 4_096).copy_into(0, memoryview(out))
        assert bytes(out) == data[90_000:94_096]
        with pytest.raises(ValueError, match="outside"):
            source.copy_into(100_000, memoryview(bytearray(4)))
    finally:
        source.close()


def test_the_spool_leaves_nothing_in_its_directory(tmp_path: Path) -> None:
    source = spooled([b"a" * 1000, b"b" * 1000], 2000, tmp_path)
    assert list(tmp_path.iterdir()) == []  # unnamed from the start
    assert source.read(999, 2) == b"ab"
    source.close()
    source.close()  # closing twice is harmless
    assert list(tmp_path.iterdir()) == []


def test_parts_that_do_not_make_the_size_are_refused(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="9 bytes arrived of 10"):
        spooled([b"x" * 4, b"y" * 5], 10, tmp_path)
    with pytest.raises(IntegrityError, match="11 bytes arrived of 10"):
        spooled([b"x" * 11], 10, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_file_shorter_than_its_size_is_an_error_not_zeros(tmp_path: Path) -> None:
    source = spooled([b"z" * 100], 100, tmp_path)
    try:
        os.ftruncate(source._fd, 50)  # the spool lost its tail (a full disk, say)
        with pytest.raises(ValueError, match="ends at 50"):
            source.read(40, 20)
    finally:
        source.close()
