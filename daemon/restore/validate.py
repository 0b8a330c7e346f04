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
    probe = getattr(sink, "probe", None)  # vector databases: search checks in the engine
    if probe is not None:
        report.checks.extend(probe())
    return report
