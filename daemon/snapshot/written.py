"""WrittenState: what a collection holds (count, per-tenant counts, state digest), as a
compaction computes it for a manifest and a restore sink reports it for validation. It lives
in the snapshot layer so the compactor need not reach up into restore."""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.rows import DIGEST_MOD


@dataclass
class WrittenState:
    """What a sink holds for one collection: count, per-tenant counts, state digest."""

    records: int = 0
    digest: str = "0" * 32
    tenants: dict[str, int] = field(default_factory=dict)


def combine_written(parts: list[WrittenState]) -> WrittenState:
    """Counts and digests of disjoint parts, combined (digests add up: order does not
    matter)."""
    value = records = 0
    tenants: dict[str, int] = {}
    for w in parts:
        value += int(w.digest, 16)
        records += w.records
        for t, n in w.tenants.items():
            tenants[t] = tenants.get(t, 0) + n
    return WrittenState(records, f"{value % DIGEST_MOD:032x}", dict(sorted(tenants.items())))
