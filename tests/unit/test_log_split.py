"""Splitting the log between restore workers (pure parts): ``split_window`` cuts a partition
window into consecutive sub-windows, ``share_log`` spreads sub-windows over workers."""

from __future__ import annotations

import itertools
import random

import pytest

from daemon.changelog.keys import SegmentKey
from daemon.changelog.window import PartitionWindow, plan_window, split_window
from daemon.restore.workers import share_log


def window(seed: int, segments: int) -> PartitionWindow:
    """A window of random segments from offset 10, some overlapping, ending in a gap."""
    rng = random.Random(seed)
    listing, at = [], 10
    for _ in range(segments):
        start = max(10, at - (rng.randint(1, 3) if rng.random() < 0.2 else 0))
        end = at + rng.randint(1, 50)
        listing.append((SegmentKey("t", 0, start, end), rng.randint(0, 5000)))
        at = end
    w = plan_window(listing, "t", 0, 10, at + 7)
    w.gap_safe_until_ms = 1234
    return w


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 16])
def test_sub_windows_read_exactly_the_window(seed: int, parts: int) -> None:
    w = window(seed, random.Random(seed).randint(0, 12))
    subs = split_window(w, parts)
    assert 1 <= len(subs) <= max(1, min(parts, len(w.segments)))
    assert [k for s in subs for k in s.segments] == w.segments
    assert all(s.segments for s in subs) or len(subs) == 1
    assert subs[0].start == w.start
    for before, after in itertools.pairwise(subs):
        # each starts where the segments before it end: an overlap is read once
        assert after.start == max(before.start, before.segments[-1].end) == before.durable_end
        assert before.gap is None and before.gap_safe_until_ms is None
    last = subs[-1]
    assert (last.durable_end, last.gap, last.gap_safe_until_ms) == \
        (w.durable_end, w.gap, w.gap_safe_until_ms)
    assert sum(s.bytes for s in subs) == w.bytes
    assert all((s.topic, s.partition) == (w.topic, w.partition) for s in subs)


def test_sub_windows_are_about_equal_in_bytes() -> None:
    keys = [SegmentKey("t", 3, i * 10, i * 10 + 10) for i in range(12)]
    w = plan_window([(k, 100) for k in keys], "t", 3, 0)
    assert [len(s.segments) for s in split_window(w, 3)] == [4, 4, 4]
    five = [len(s.segments) for s in split_window(w, 5)]
    assert len(five) == 5 and sum(five) == 12 and max(five) - min(five) <= 1


@pytest.mark.parametrize("seed", range(20))
def test_share_log_gives_every_sub_window_once_balanced(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.randint(0, 1000) for _ in range(rng.randint(0, 30))]
    count = rng.randint(1, 5)
    shares = share_log(sizes, count)
    assert len(shares) == count
    assert sorted(i for share in shares for i in share) == list(range(len(sizes)))
    assert all(share == sorted(share) for share in shares)
    loads = [sum(sizes[i] for i in share) for share in shares]
    assert max(loads) - min(loads) <= max(sizes, default=0)  # greedy, largest first
