"""What a rollback changes, per collection and tenant: the dry run's answer, and the record of
every run.

Every record an excluded event touched (or an excluded drop removed) is *affected*; each is
then exactly one of:

- ``reverted``: live in both states, with different content: it goes back to its previous
  version, or on to a later good one;
- ``removed``: live now, absent once rolled back (created only by excluded events, or an
  excluded upsert brought back a record a good delete had removed);
- ``restored``: absent now, live once rolled back (an excluded delete or drop undone);
- ``untouched``: the same in both states (a later good write or delete superseded the bad
  one, or the bad write wrote the same content): no corrective event.

``reverted + removed + restored`` is the number of corrective record events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("reverted", "removed", "restored", "untouched")
SAMPLE = 10


@dataclass
class Tally:
    affected: int = 0
    reverted: int = 0
    removed: int = 0
    restored: int = 0
    untouched: int = 0
    sample: list[dict[str, str]] = field(default_factory=list)
    """Up to ``SAMPLE`` changed ids (the first met), each with its change."""

    def add(self, kind: str, record_id: str) -> None:
        self.affected += 1
        setattr(self, kind, getattr(self, kind) + 1)
        if kind != "untouched" and len(self.sample) < SAMPLE:
            self.sample.append({"id": record_id, "change": kind})

    @property
    def changed(self) -> int:
        return self.reverted + self.removed + self.restored

    def to_dict(self) -> dict[str, Any]:
        return {"affected": self.affected, **{k: getattr(self, k) for k in KINDS},
                "sample": self.sample}


@dataclass
class RollbackReport:
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    """(collection, tenant) -> its counts."""
    base: str | None = None
    """The snapshot the rollback started from (None: the start of the log)."""
    excluded_events: int = 0
    events_read: int = 0
    catalog_changes: list[dict[str, Any]] = field(default_factory=list)
    """The corrective catalog events (collection, alias and tenant puts and drops)."""
    exclude: dict[str, Any] = field(default_factory=dict)
    """The filter, as ``ExcludeFilter.describe`` says it."""

    def add(self, kind: str, collection: str, tenant: str, record_id: str) -> None:
        tally = self.tallies.get((collection, tenant))
        if tally is None:
            tally = self.tallies[(collection, tenant)] = Tally()
        tally.add(kind, record_id)

    def total(self, kind: str) -> int:
        return sum(getattr(t, kind) for t in self.tallies.values())

    @property
    def changed(self) -> int:
        """Records whose rolled-back state differs from the current one."""
        return sum(t.changed for t in self.tallies.values())

    def to_dict(self) -> dict[str, Any]:
        collections: dict[str, dict[str, Any]] = {}
        for (coll, tenant), tally in sorted(self.tallies.items()):
            collections.setdefault(coll, {})[tenant] = tally.to_dict()
        return {"base_snapshot": self.base, "exclude": self.exclude,
                "events_read": self.events_read, "excluded_events": self.excluded_events,
                "affected": self.total("affected"), "changed": self.changed,
                **{k: self.total(k) for k in KINDS},
                "catalog_changes": self.catalog_changes, "collections": collections}

    def lines(self) -> list[str]:
        """The report as a table, for people (the CLI prints it)."""
        out = [f"rollback from {self.base or 'the start of the log'}: "
               f"{self.excluded_events:,} of {self.events_read:,} events excluded; "
               f"{self.changed:,} records change"]
        head = f"  {'collection':20s} {'tenant':14s} " + " ".join(
            f"{k:>10s}" for k in ("affected", *KINDS))
        out.append(head)
        for (coll, tenant), t in sorted(self.tallies.items()):
            out.append(f"  {coll:20s} {tenant or '-':14s} " + " ".join(
                f"{getattr(t, k):>10,}" for k in ("affected", *KINDS)))
            if t.sample:
                out.append("      e.g. " + ", ".join(f"{s['id']} ({s['change']})"
                                                     for s in t.sample))
        for ev in self.catalog_changes:
            what = ev.get("alias") or ev.get("tenant") or ""
            out.append(f"  catalog: {ev['op']} {ev['collection']} {what}".rstrip())
        return out
