"""How the capture loop waits after an empty batch (``capture.idle_wait``)."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from daemon.capture.idle_wait import IDLE_WAIT_S, UPLOAD_WAIT_S, idle_wait
from daemon.capture.partition import PartitionState
from daemon.capture.segment_buffer import OpenSegment


def state(p: int, uploading: bool = False, queued: int = 0) -> PartitionState:
    ps = PartitionState("t", p, OpenSegment("t", p, 0), durable_through=0)
    if uploading:
        ps.in_flight = Future()
    ps.pending.extend([object()] * queued)  # type: ignore[list-item]
    return ps


def test_nothing_uploading_waits_long_for_events() -> None:
    assert idle_wait([state(0), state(1)], paused=False, catching_up=False) == ([], IDLE_WAIT_S)


def test_an_upload_alone_does_not_make_the_poll_short() -> None:
    """The last upload of a burst, nothing behind it: a step every 5 ms would cost about
    1 us a partition for nothing."""
    assert idle_wait([state(0, True, queued=1)], paused=False, catching_up=False) == \
        ([], IDLE_WAIT_S)


def test_a_segment_queued_behind_an_upload_makes_the_poll_short() -> None:
    assert idle_wait([state(0), state(1, True, queued=2)], paused=False,
                     catching_up=False) == ([], UPLOAD_WAIT_S)


def test_a_run_catching_up_polls_briefly_while_anything_uploads() -> None:
    assert idle_wait([state(0, True, queued=1)], paused=False, catching_up=True) == \
        ([], UPLOAD_WAIT_S)
    assert idle_wait([state(0)], paused=False, catching_up=True) == ([], IDLE_WAIT_S)


def test_paused_for_the_buffer_it_waits_on_the_uploads_then_only_serves_the_consumer() -> None:
    a, b = state(0, True, queued=1), state(1, True, queued=3)
    uploads, timeout = idle_wait([a, state(2), b], paused=True, catching_up=False)
    want: list[Any] = [a.in_flight, b.in_flight]
    assert uploads == want and timeout == 0.0
