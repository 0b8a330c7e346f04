"""PartitionState's valid-through rules: what a look at a partition's end proves, and what a
segment's own timestamps prove."""

from __future__ import annotations

from daemon.capture.partition import MAX_PROOFS, PartitionState
from daemon.capture.segment_buffer import OpenSegment

MARGIN = 500


def state(durable: int = 0, valid: int | None = None) -> PartitionState:
    return PartitionState("t", 0, OpenSegment("t", 0, durable), durable_through=durable,
                          valid_through_ms=valid)


def test_a_look_at_the_end_proves_its_time_once_the_log_reaches_it() -> None:
    ps = state()
    ps.observe_end(100, 50_000)
    assert ps.proven_through(99, MARGIN) is None, "offset 99 is not durable: nothing proven"
    assert ps.proven_through(100, MARGIN) == 50_000 - MARGIN
    assert ps.proven_through(250, MARGIN) == 50_000 - MARGIN


def test_the_latest_look_the_log_reaches_wins() -> None:
    ps = state()
    ps.observe_end(100, 50_000)
    ps.observe_end(180, 51_000)
    ps.observe_end(260, 52_000)
    assert ps.proven_through(180, MARGIN) == 51_000 - MARGIN
    assert ps.proven_through(259, MARGIN) == 51_000 - MARGIN
    ps.drop_proofs_through(180)
    assert [p.offset for p in ps.proofs] == [180, 260], "the proof in use is kept"


def test_a_later_look_at_the_same_end_replaces_the_earlier() -> None:
    ps = state()
    ps.observe_end(100, 50_000)
    ps.observe_end(100, 53_000)
    assert len(ps.proofs) == 1 and ps.proven_through(100, MARGIN) == 53_000 - MARGIN
    ps.observe_end(100, 52_000)  # an older look arriving late proves less: ignored
    assert ps.proven_through(100, MARGIN) == 53_000 - MARGIN
    ps.observe_end(90, 54_000)  # a lower end seen later (a stale answer) still proves its time
    assert ps.proven_through(90, MARGIN) == 54_000 - MARGIN
    assert ps.high_watermark == 100


def test_proofs_are_bounded() -> None:
    ps = state()
    for i in range(MAX_PROOFS * 3):
        ps.observe_end(10 * (i + 1), 1_000 * (i + 1))
    assert len(ps.proofs) == MAX_PROOFS
    newest = MAX_PROOFS * 3
    assert ps.proven_through(10 * newest, MARGIN) == 1_000 * newest - MARGIN


def test_valid_through_at_takes_the_best_rule() -> None:
    ps = state(valid=10_000)
    wall = 60_000
    # The segment's last timestamp, less one ms (its millisecond may have more events).
    assert ps.valid_through_at(50, 20_000, MARGIN, wall) == 19_999
    # A look at the end at the segment's end covers that last millisecond too.
    ps.observe_end(50, 40_000)
    assert ps.valid_through_at(50, 20_000, MARGIN, wall) == 40_000 - MARGIN
    # Never backwards.
    assert state(valid=45_000).valid_through_at(50, 20_000, MARGIN, wall) == 45_000


def test_valid_through_never_runs_ahead_of_the_wall_clock() -> None:
    ps = state()
    wall = 60_000
    hour = 3_600_000
    assert ps.valid_through_at(50, wall + hour, MARGIN, wall) == wall


def test_on_captures_timeline_the_last_millisecond_is_closed() -> None:
    """capture.timeline = capture: sealing a segment gives every later event a later
    millisecond (CaptureClock.close), so the segment's last timestamp itself is valid."""
    from daemon.capture.timeline import CaptureClock

    ps = state()
    assert ps.valid_through_at(50, 20_000, 1, 60_000, last_ms_closed=True) == 20_000
    CaptureClock.close(ps, 20_000)
    assert CaptureClock.stamp(ps, 19_500) == 20_001
