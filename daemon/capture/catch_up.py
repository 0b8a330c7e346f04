"""``vecwal run --until-caught-up``: the partition ends seen when the run began, and when every
partition of the configured topics is durable up to them (in this process or, for partitions
another group member owns, by their watermarks in the store)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from daemon.capture.partition import HighWatermarkProof, PartitionState
from daemon.changelog.repository import Repository
from daemon.errors import StoreError

TP = tuple[str, int]


class CatchUp:
    def __init__(self, ends: Mapping[TP, int], seen_ms: int) -> None:
        """``ends``: each partition's high watermark, asked of the broker at wall time
        ``seen_ms`` (taken before asking)."""
        self.targets = dict(ends)
        self.start_ends = {k: HighWatermarkProof(hi, seen_ms) for k, hi in ends.items()}
        """Each end as a proof: every event stamped before the run began is below it."""
        self._remote_durable: dict[TP, int] = {}
        self._next_remote_check = 0.0

    def reached(self, key: TP, ps: PartitionState) -> bool:
        """The partition's open segment covers its target: seal it without waiting."""
        return not ps.open.is_empty and ps.open.end >= self.targets.get(key, -1) >= 0

    def done(self, owned: Mapping[TP, PartitionState], repo: Repository) -> bool:
        """Every target durable: owned partitions by their state, the others by their
        watermarks (read at most once a second)."""
        now = time.monotonic()
        refresh = now >= self._next_remote_check
        if refresh:
            self._next_remote_check = now + 1.0
        for tp, target in self.targets.items():
            ps = owned.get(tp)
            if ps is not None:
                if ps.durable_through < target:
                    return False
                continue
            if self._remote_durable.get(tp, -1) >= target:
                continue
            if not refresh:
                return False
            try:
                wm = repo.read_watermark(*tp)
            except StoreError:
                return False
            self._remote_durable[tp] = wm.captured_through if wm else (0 if target == 0 else -1)
            if self._remote_durable[tp] < target:
                return False
        return True
