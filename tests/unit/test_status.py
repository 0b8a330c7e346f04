"""status: Kafka's committed offset 0 is an offset, its negative sentinels are not."""

from __future__ import annotations

from daemon.status import _valid_offset


def test_committed_offset_zero_is_kept_and_sentinels_are_none() -> None:
    assert _valid_offset(0) == 0
    assert _valid_offset(42) == 42
    assert _valid_offset(-1001) is None  # OFFSET_INVALID: the group never committed
    assert _valid_offset(None) is None
