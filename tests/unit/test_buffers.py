"""daemon.buffers.ReusedBuffer: views of the asked size, memory reused until a larger one is
asked for, grown with headroom, and a grown buffer never invalidates a view still held."""

from __future__ import annotations

import pytest

from daemon.buffers import HEADROOM, ReusedBuffer


def test_views_reuse_the_memory_until_a_larger_one_is_asked_for() -> None:
    buf = ReusedBuffer()
    first = buf.view(1000)
    first[:3] = b"abc"
    assert len(first) == 1000 and buf.capacity >= 1000
    capacity = buf.capacity
    again = buf.view(int(1000 * HEADROOM))  # within the headroom: the same memory
    assert buf.capacity == capacity and bytes(again[:3]) == b"abc"
    bigger = buf.view(capacity + 1)
    assert len(bigger) == capacity + 1 and buf.capacity >= int((capacity + 1) * HEADROOM)
    assert bytes(first[:3]) == b"abc"  # the old view still reads its own memory
    bigger[:3] = b"xyz"
    assert bytes(first[:3]) == b"abc"


def test_a_grown_buffer_is_zero_and_writable() -> None:
    buf = ReusedBuffer()
    view = buf.view(10 << 20)
    assert view[0] == 0 and view[-1] == 0 and not view.readonly
    view[-1] = 7
    assert buf.view(10 << 20)[-1] == 7
    assert len(buf.view(0)) == 0
    with pytest.raises(ValueError):
        buf.view(-1)
