"""Prune: carry out a PrunePlan, chain-safe and crash-safe.

Commit order (a prune killed at any step leaves every kept restore point and every instant of
the window restorable; running it again finishes the work):
1. take the repository lease ``compaction``: prune and compaction exclude each other, so no
   compaction writes files that look unreferenced while prune lists;
2. list and read the repository, plan (``plan.plan_prune``; the dry run stops here, and takes
   no lease: it only reads);
3. write ``state/retention.json``, the window after this prune: from now on a restore to a
   target outside it is refused with the window in the message, never half-read;
4. delete, kind by kind in ``plan.KINDS`` order, in batches (S3 DeleteObjects): manifests first,
   then snapshot files no manifest references that have waited ``grace`` (a manifest deleted in
   step 4 still protected its files when this run listed, so they wait for a later run), then
   the id index, segments and sidecars below the log floor, quarantine, records;
   the lease is renewed between batches and checked before each kind;
5. with Object Lock: extend the locks of restore points kept beyond the window (and pinned
   snapshots) when less than half the lock period is left, and remove old versions of the
   overwritten objects (watermarks, leases) older than grace;
6. write ``state/prune.json``: unreferenced files first seen now start their grace (a prune
   that died before this step simply sees them anew, later);
7. release the lease. With ``grace`` 0 the run plans again once, so the files of the manifests
   it deleted go too.
An object under Object Lock retention is skipped and reported with its retain-until date."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.changelog.repository import Repository
from daemon.errors import ObjectLocked, ObjectNotFound
from daemon.lifecycle.listing import PRUNE_STATE_KEY, PruneState, gather_listing
from daemon.lifecycle.plan import KINDS, PrunePlan, plan_prune
from daemon.lifecycle.policy import Policy
from daemon.snapshot.lease import Lease
from daemon.snapshot.retention import read_retention, write_retention

log = structlog.get_logger("vecwal.prune")

BATCH = 1000
MUTABLE_ROOTS = ("state/", "locks/", "pins/")
Progress = Callable[[str, int, int], None]
"""(kind, objects done, objects of that kind)."""


@dataclass
class PruneResult:
    plans: list[PrunePlan]
    executed: bool
    deleted: dict[str, list[int]] = field(default_factory=dict)
    """kind -> [objects, bytes] deleted."""
    locked: list[tuple[str, int | None]] = field(default_factory=list)
    """(key, retain-until ms) of objects Object Lock kept."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    extended: int = 0
    """Objects of restore points whose Object Lock was extended."""

    @property
    def plan(self) -> PrunePlan:
        return self.plans[0]

    def to_dict(self, keys: bool = False) -> dict[str, Any]:
        from daemon.status import iso_ms

        out = self.plan.to_dict(keys)
        out["executed"] = self.executed
        out["passes"] = len(self.plans)
        if self.executed:
            out["deleted"] = {k: {"objects": n, "bytes": b} for k, (n, b) in self.deleted.items()}
            out["restorable_after"] = self.plans[-1].to_dict()["restorable_after"]
            out["locked"] = [{"key": k, "retain_until": iso_ms(u), "retain_until_ms": u}
                             for k, u in self.locked]
            out["failed"] = [{"key": k, "error": e} for k, e in self.failed]
            out["seconds"] = round(self.seconds, 3)
            out["lock_extended"] = self.extended
        return out


def prune(repo: Repository, policy: Policy, *, confirm: bool, now_ms: int | None = None,
          lease_ttl_s: float = 600.0, progress: Progress | None = None,
          lock_ms: int | None = None) -> PruneResult:
    """Plan (and with ``confirm`` carry out) a prune at ``now_ms`` (default: now).
    ``lock_ms``: the store's Object Lock period, when it locks."""
    began = time.monotonic()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    lease = Lease(repo.store, "compaction", lease_ttl_s)
    if confirm:
        lease.acquire()  # a dry run only reads: it neither waits for nor blocks a compaction
    try:
        result = PruneResult([], confirm)
        for _pass in range(2):
            listing = gather_listing(repo, now, policy)
            plan = plan_prune(listing, policy, now, read_retention(repo), lock_ms)
            result.plans.append(plan)
            if not confirm:
                break
            _carry_out(repo, plan, lease, result, progress, listing.state)
            if policy.grace_ms > 0 or not plan.deletions["manifests"]:
                break
        result.seconds = time.monotonic() - began
        return result
    finally:
        if confirm:
            lease.release()


def _carry_out(repo: Repository, plan: PrunePlan, lease: Lease, result: PruneResult,
               progress: Progress | None, state_before: PruneState) -> None:
    lease.check()
    write_retention(repo, plan.record)  # step 3: before anything goes
    for kind in KINDS:
        items = plan.deletions[kind]
        if not items:
            continue
        lease.check()
        done = result.deleted.setdefault(kind, [0, 0])
        for i in range(0, len(items), BATCH):
            batch = items[i:i + BATCH]
            failed = repo.store.delete_many([d.key for d in batch])
            for d in batch:
                err = failed.get(d.key)
                if err is None:
                    done[0] += 1
                    done[1] += d.bytes
                elif isinstance(err, ObjectLocked):
                    result.locked.append((d.key, err.retain_until_ms))
                else:
                    result.failed.append((d.key, str(err)))
            lease.keep_alive()
            if progress is not None:
                progress(kind, min(i + BATCH, len(items)), len(items))
        log.info("pruned", kind=kind, objects=done[0], bytes=done[1])
    locked_until = _extend_locks(repo, plan, state_before.locked_until, result)
    _purge_old_versions(repo, plan, result)
    state = PruneState(plan.orphans_seen, plan.now_ms, locked_until)
    repo.store.put(PRUNE_STATE_KEY, state.to_json())  # step 5


def _extend_locks(repo: Repository, plan: PrunePlan, given: dict[str, int],
                  result: PruneResult) -> dict[str, int]:
    """Object Lock: a restore point kept beyond the window outlives the lock its objects got
    when written; extend it whenever less than half of the lock period is left."""
    extend = getattr(repo.store, "extend_retention", None)
    if extend is None or not plan.extend:
        return {}
    out: dict[str, int] = {}
    for key, until in plan.extend.items():
        had = given.get(key, 0)
        if had - plan.now_ms >= (until - plan.now_ms) // 2:
            out[key] = had
            continue
        try:
            extend(key, until)
        except ObjectNotFound:
            continue
        out[key] = until
        result.extended += 1
    return out


def _purge_old_versions(repo: Repository, plan: PrunePlan, result: PruneResult) -> None:
    """On a versioned (Object Lock) bucket, overwritten watermarks and leases leave old
    versions behind: remove those older than grace."""
    purge = getattr(repo.store, "purge_noncurrent", None)
    if purge is None or getattr(repo.store, "object_lock", None) is None:
        return
    n, b = purge(list(MUTABLE_ROOTS), plan.now_ms - plan.policy.grace_ms)
    done = result.deleted.setdefault("old versions", [0, 0])
    done[0] += n
    done[1] += b
