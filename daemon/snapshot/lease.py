"""Lease: one holder at a time of a named critical section per repository (``compaction``:
compaction and prune), with an expiry so a dead holder does not block the next for ever.

Layout. A lease is a chain of immutable objects ``locks/<name>/<generation:020d>.json``, each
written create-only. The holder is the highest generation: ``{"owner", "token",
"generation", "expires_at_ms", "released"}``. A generation is *live* while it is not
released and its ``expires_at_ms`` (the writer's wall clock) is in the future. Every change of
hands or of expiry creates the next generation, never rewrites or deletes the top, so the one
decision point of every transition is a create-only put, which exactly one of concurrent
writers wins (``ObjectStore.put``'s contract).

Commit order:

1. acquire: read the old layout ``locks/<name>.json`` (an older vecwal's lease): while it is
   live, LeaseHeld. Find the top: LIST ``locks/<name>/``, then GET forward from the highest
   listed until a generation is missing (a listing may lag a create). A live top: LeaseHeld.
   Otherwise (none, expired or released) create generation top+1 create-only: *the commit*.
   ObjectExists means another taker won it: read it; it is ours when its token is (our own
   put retried after a lost response), else it is the new top and, being live, LeaseHeld.
   Then LIST again: a generation above ours means what we read had gone stale and been
   pruned, so ours re-created an old number behind the top: not held, read the chain again.
2. keep_alive: read our generation g (gone: the chain was deleted under us, LeaseLost), then
   create g+1 create-only with the same token and a later expiry. ObjectExists: a taker
   created it first (our generation had expired), so LeaseLost. A renewal racing a
   takeover: exactly one creates g+1, and ``check`` tells who.
3. check (before committing work): our generation must still exist (an operator may have
   deleted the chain) and no generation after it may exist.
4. release: read our generation g (gone: nothing to release), then create generation g+1
   create-only marked ``released``; ObjectExists: it had been taken over, nothing to do.
5. after 1, 2 and 4 the writer deletes generations older than the newest ``KEEP``, oldest
   first, best-effort (a failure leaves them for the next writer).

Why release writes a successor rather than deleting its own generation: deleting the top
makes generation numbers go backwards, which revives lost holders. Say X held g-1, it
expired and we took over with g, worked, and released by deleting g. X (stalled, not dead)
then checks for a successor of g-1, finds none and believes it still holds the lease; its
renewal creates g again and it commits work it did while we held the lease: two holders, the
very thing a lease prevents. Nor can a delete be conditional on the object being ours on
every S3-compatible store. A released successor keeps the chain monotonic: a lost holder
always finds a generation after its own, and the next acquirer sees a released top and
takes generation g+2 at once, with no wait for an expiry.

Limits: expiry compares wall clocks of different machines (keep them in sync; the ttl is
minutes). An older vecwal knows only ``locks/<name>.json``: this one respects its live lease
but the older one does not see this chain, so run one version at a time; this one never
deletes the old object (an older vecwal may be creating it again), an operator may once no
older vecwal runs.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from daemon.changelog.repository import writer_identity
from daemon.errors import ObjectExists, ObjectNotFound, StoreError, VecwalError
from daemon.objectstore import ObjectStore

log = structlog.get_logger("vecwal.lease")

LOCKS_ROOT = "locks/"
KEEP = 3
"""Generations kept behind the newest deletions (the top and two before it)."""
ATTEMPTS = 8
"""Walks forward past generations that turned out dead before acquire gives up."""


class LeaseHeld(VecwalError):
    """Another process holds the lease."""


class LeaseLost(VecwalError):
    """Our lease expired and another process took it over: our work must not be committed."""


def generation_key(name: str, generation: int) -> str:
    return f"{LOCKS_ROOT}{name}/{generation:020d}.json"


def old_layout_key(name: str) -> str:
    """Where vecwal before the generation chain kept the lease (read, never written)."""
    return f"{LOCKS_ROOT}{name}.json"


def is_live(held: dict[str, Any], now_ms: float) -> bool:
    return not held.get("released") and int(held.get("expires_at_ms", 0)) > now_ms


@dataclass
class Lease:
    store: ObjectStore
    name: str
    ttl_s: float = 600.0
    token: str = ""
    renewed_at: float = 0.0
    generation: int = 0
    """Ours, once acquired (0: never held)."""

    @property
    def prefix(self) -> str:
        return f"{LOCKS_ROOT}{self.name}/"

    @property
    def key(self) -> str:
        """Our current generation's object."""
        return generation_key(self.name, self.generation)

    def _body(self, generation: int, released: bool = False) -> bytes:
        expires = time.time() if released else time.time() + self.ttl_s
        return orjson.dumps({"owner": writer_identity(), "token": self.token,
                             "generation": generation, "expires_at_ms": int(expires * 1000),
                             "released": released})

    def _read(self, generation: int) -> dict[str, Any] | None:
        try:
            held: dict[str, Any] = orjson.loads(self.store.get(generation_key(self.name,
                                                                              generation)))
        except ObjectNotFound:
            return None
        return held

    def _create(self, generation: int, body: bytes) -> dict[str, Any] | None:
        """Create ``generation`` create-only: None when we did (or had, through a retried
        put), else what the winner wrote."""
        try:
            self.store.put(generation_key(self.name, generation), body, create_only=True)
            return None
        except ObjectExists:
            held = self._read(generation)
            if held is None:  # created and pruned since: long gone, certainly not ours
                return {"owner": "another process", "token": "", "expires_at_ms": 0}
            return None if held.get("token") == self.token else held

    def _listed(self) -> list[int]:
        gens = []
        for info in self.store.list(self.prefix):
            stem = info.key[len(self.prefix):].removesuffix(".json")
            if stem.isdigit() and len(stem) == 20:
                gens.append(int(stem))
        return sorted(gens)

    def _top(self) -> tuple[int, dict[str, Any] | None, list[int]]:
        """The highest generation (0 if none), what it says, and the listed generations."""
        for _ in range(ATTEMPTS):
            listed = self._listed()
            top, held = 0, None
            for gen in reversed(listed):  # the highest listed may be pruned since; rare
                held = self._read(gen)
                if held is not None:
                    top = gen
                    break
            if listed and held is None:
                continue  # every listed one pruned since: the chain moved on, list again
            while (after := self._read(top + 1)) is not None:  # a listing may lag a create
                top, held = top + 1, after
            return top, held, listed
        raise LeaseHeld(f"the {self.name} lease changed hands faster than it could be read",
                        "retry")

    def _refuse(self, held: dict[str, Any], where: str) -> LeaseHeld:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(held["expires_at_ms"] / 1000))
        return LeaseHeld(
            f"{self.name} lease is held by {held['owner']} until {until} "
            f"({held['expires_at_ms']} ms)",
            f"wait for it to finish; if that process is dead, it is taken over after {until}, "
            f"or delete {where} from the repository to take it now")

    def acquire(self) -> None:
        now_ms = time.time() * 1000
        try:
            old = orjson.loads(self.store.get(old_layout_key(self.name)))
        except ObjectNotFound:
            old = None
        if old is not None and is_live(old, now_ms):
            raise self._refuse(old, old_layout_key(self.name))
        self.token = uuid.uuid4().hex
        top, held, listed = self._top()
        for _ in range(ATTEMPTS):
            if held is not None and is_live(held, time.time() * 1000):
                raise self._refuse(held, self.prefix)
            self.renewed_at = time.monotonic()
            winner = self._create(top + 1, self._body(top + 1))
            if winner is None:
                listed = self._listed()
                if any(g > top + 1 for g in listed):
                    # What we read was already stale and pruned: we re-created a generation
                    # behind the top. Left for the holder's pruning; read the chain again.
                    top, held, listed = self._top()
                    continue
                self.generation = top + 1
                self._prune(self.generation, listed)
                return
            top, held = top + 1, winner
        raise LeaseHeld(f"could not take the {self.name} lease: {ATTEMPTS} takers in a row "
                        "beat this process to it", "retry")

    def check(self) -> None:
        """Raise LeaseLost unless we still hold the lease: our generation is the top."""
        if self._ours():
            later = [g for g in self._listed() if g > self.generation]
            after = self._read(self.generation + 1)
            if not later and after is None:
                return
        _, top, _ = self._top()
        raise self._lost(top if top and top.get("token") != self.token else {"owner": "nobody"})

    def _lost(self, winner: dict[str, Any]) -> LeaseLost:
        return LeaseLost(
            f"the {self.name} lease was taken over by {winner['owner']} while this process "
            "worked (it ran longer than the lease's ttl)",
            "raise [compaction] lease_ttl_s above the longest compaction; nothing was "
            "committed, the next run starts over")

    def keep_alive(self) -> None:
        """Extend the lease when a third of its ttl has passed (call it often; it is cheap):
        create the next generation, which a takeover would have had to create first."""
        if time.monotonic() - self.renewed_at < self.ttl_s / 3:
            return
        renewed_at = time.monotonic()
        if not self._ours():  # the chain was deleted under us
            raise self._lost({"owner": "nobody"})
        winner = self._create(self.generation + 1, self._body(self.generation + 1))
        if winner is not None:
            raise self._lost(winner)
        self.generation += 1
        self.renewed_at = renewed_at
        self._prune(self.generation, [self.generation - KEEP])

    def release(self) -> None:
        """Hand the lease back (a no-op when it is no longer ours): a released successor."""
        top = self.generation + 1
        if self._ours() and self._create(top, self._body(top, released=True)) is None:
            self._prune(top, [top - KEEP])
        self.generation = 0

    def _ours(self) -> bool:
        """Our generation is still stored (it may have successors)."""
        ours = self._read(self.generation) if self.generation else None
        return ours is not None and ours.get("token") == self.token and not ours.get("released")

    def _prune(self, top: int, candidates: list[int]) -> None:
        """Delete the generations among ``candidates`` older than the KEEP newest up to ``top``
        (ours), oldest first; best-effort: what fails is left for the next writer."""
        for gen in sorted(g for g in candidates if 0 < g <= top - KEEP):
            try:
                self.store.delete(generation_key(self.name, gen))
            except StoreError as exc:
                log.info("old lease generation left", key=generation_key(self.name, gen),
                         reason=str(exc))
                return
