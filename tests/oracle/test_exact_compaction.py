"""Exact compactions (what ``vecwal pin --at`` makes): snapshots cut in any order, past ones
folded onto the newest snapshot at or before them, each equal to the replay at its cut, and
every restore afterwards equal to the replay."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.changelog.repository import Repository
from daemon.errors import VecwalError
from daemon.objectstore import open_store
from daemon.snapshot.compactor import Compactor, list_manifests, newest_manifest, read_manifest
from tests.oracle.history import TOPIC, generate, write_log
from tests.oracle.test_oracle import assert_restores_are_replay, assert_snapshot_is_replay


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 120), data=st.data(),
       delta_ratio=st.sampled_from([0.0, 0.25, 1e9]), max_step_bytes=st.sampled_from([0, 4000]))
def test_exact_cuts_in_any_order_equal_replay(seed: int, n: int, data: st.DataObject,
                                              delta_ratio: float, max_step_bytes: int) -> None:
    history = generate(seed, n)
    valid = min((p[-1]["timestamp"] for p in history.events if p), default=0)
    if any(not p for p in history.events):
        valid = 0  # a partition without events has no valid-through time of its own here
    times = [t for t in history.times if t <= valid]
    if not times:
        return
    cuts = data.draw(st.lists(st.sampled_from(times), min_size=1, max_size=4))
    targets = data.draw(st.lists(st.sampled_from(history.times), min_size=1, max_size=3))
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository(open_store(f"file://{tmp}/repo"))
        write_log(repo, history, seed)
        for cut in cuts:  # unsorted: later cuts first, then past ones
            newest_before = newest_manifest(repo)
            m = Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4,
                          delta_ratio=delta_ratio, max_step_bytes=max_step_bytes
                          ).compact(cut, exact=True)
            assert m.cut_time_ms == cut
            parent = read_manifest(repo, m.parent) if m.parent else None
            assert parent is None or parent.cut_time_ms < cut
            assert_snapshot_is_replay(history, m)
            newest = newest_manifest(repo)
            assert newest is not None and newest.cut_time_ms == max(
                cut, newest_before.cut_time_ms if newest_before else cut)
        assert {int(i.split("-")[0]) for i in list_manifests(repo)} >= set(cuts)
        assert_restores_are_replay(repo, history, targets, Path(tmp))


def test_an_exact_cut_past_the_valid_through_is_refused(tmp_path: Path) -> None:
    history = generate(3, 60)
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, 3)
    valid = min(p[-1]["timestamp"] for p in history.events)
    compactor = Compactor(repo, [TOPIC], min_buckets=2)
    with pytest.raises(VecwalError, match="after the repository's valid-through"):
        compactor.compact(valid + 1, exact=True)
    assert compactor.compact(valid + 1).cut_time_ms == valid, "not exact: clamped"
    assert len(list_manifests(repo)) == 1, "the refused exact cut wrote no snapshot"
