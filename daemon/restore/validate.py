"""Validation: what the sink holds, re-read by another path, must equal what the restore
computed: records per collection and tenant, and the order-independent state digest. A sink
with a ``probe()`` method (the vector databases) adds its own checks, run in the engine
(``daemon/restore/probes.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from daemon.errors import VecwalError
from daemon.restore.executor import RestoreResult
from daemon.restore.sinks import Sink
from daemon.snapshot.rejects import Rejected


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class ValidationReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def left_out_checks(rejected: list[Rejected], shown: int = 10) -> list[Check]:
    """One failed check per collection with records left out for their dimension: the
    restore wrote every other record, but these are not in it."""
    by_coll: dict[str, list[Rejected]] = {}
    for r in rejected:
        by_coll.setdefault(r.collection, []).append(r)
    checks = []
    for name, rs in sorted(by_coll.items()):
        first = ", ".join(r.describe() for r in rs[:shown])
        more = f" and {len(rs) - shown} more" if len(rs) > shown else ""
        checks.append(Check(
            f"{name}: dimension", False,
            f"{len(rs)} records left out, their dimension is not the collection's: "
            f"{first}{more}; re-send them with the collection's dimension, or delete them "
            "(`vecwal verify` lists them)"))
    return checks


def validate(result: RestoreResult, sink: Sink) -> ValidationReport:
    report = ValidationReport()
    try:
        held = sink.read_back()
    except VecwalError as exc:
        report.checks.append(Check("read back", False, f"{exc} ({exc.hint})"))
        return report
    for name, want in sorted(result.collections.items()):
        got = held.get(name)
        if want.records == 0 and got is None:
            report.checks.append(Check(f"{name}: records", True, "0 = 0"))
            continue
        if got is None:
            report.checks.append(Check(f"{name}: present", False, "the sink holds nothing"))
            continue
        report.checks.append(Check(f"{name}: records", got.records == want.records,
                                   f"sink {got.records}, restore {want.records}"))
        report.checks.append(Check(f"{name}: records per tenant", got.tenants == want.tenants,
                                   f"sink {got.tenants}, restore {want.tenants}"))
        report.checks.append(Check(f"{name}: state digest", got.digest == want.digest,
                                   f"sink {got.digest}, restore {want.digest}"))
    for name in sorted(set(held) - set(result.collections)):
        report.checks.append(Check(f"{name}: unexpected", False,
                                   "the sink holds a collection the restore did not write"))
    report.checks.extend(left_out_checks(result.rejected))
    probe = getattr(sink, "probe", None)  # vector databases: search checks in the engine
    if probe is not None:
        report.checks.extend(probe())
    return report
