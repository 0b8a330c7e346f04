"""Pins (legal holds): a pin keeps one snapshot, whatever the retention policy says, until its
``until_ms`` or for ever, and says why and who asked.

A pin is an immutable object ``pins/<id>.json``, written create-only; the id starts with its
creation time (``pin-<created_ms:013d>-<6 hex>``), so listing ``pins/`` sorts them by age.
Removing a pin deletes its object.

Commit order of a pin (``add_pin``; ``pin_at`` compacts first):

1. take the repository lease ``compaction`` (``snapshot.lease``), which prune holds while it
   reads the pins and deletes snapshots: so a prune never deletes a snapshot pinned after it
   read the pins, and a pin never names a snapshot a running prune is deleting;
2. ``pin_at`` only: check the time can be rebuilt (``check_pin_time``: inside the window
   ``vecwal list`` shows, the log complete up to it) and compact to exactly that instant
   under the same lease (``Compactor.compact(exact=True)``), unless a snapshot has that cut;
3. check the snapshot's manifest exists;
4. write ``pins/<id>.json`` create-only: the commit;
5. release the lease.

Removing a pin (``remove_pin``) takes no lease: it only ever lets prune do more, later.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from daemon.changelog.repository import Repository
from daemon.errors import IntegrityError, ObjectExists, ObjectNotFound, VecwalError
from daemon.snapshot.compactor import Compactor, list_manifests
from daemon.snapshot.lease import Lease, LeaseHeld
from daemon.snapshot.manifest import Manifest, manifest_key

PINS_ROOT = "pins/"
LEASE_NAME = "compaction"
"""The lease prune and compaction take: pinning excludes both."""

_SNAPSHOT_ID = re.compile(r"^\d{13}-[0-9a-z]+$")


class PinRefused(VecwalError):
    """A pin or unpin request is wrong: an unknown snapshot or pin, an empty reason, an
    ``until`` in the past."""

    exit_code = 2


class PinTimeRefused(VecwalError):
    """The instant to pin cannot be rebuilt (after the valid-through time, before what the
    log and snapshots hold, or across a hole in the log); nothing was written."""

    exit_code = 4


@dataclass(frozen=True)
class Pin:
    id: str
    snapshot: str
    reason: str
    who: str
    created_ms: int
    until_ms: int | None
    """The hold ends here (epoch ms); None: for ever."""

    def active(self, now_ms: int) -> bool:
        return self.until_ms is None or now_ms < self.until_ms

    @property
    def key(self) -> str:
        return pin_key(self.id)

    def to_dict(self, now_ms: int) -> dict[str, Any]:
        """For people and tools: the fields, the times in RFC 3339, and whether it holds."""
        from daemon.status import iso_ms

        return {**asdict(self), "created": iso_ms(self.created_ms), "until": iso_ms(self.until_ms),
                "active": self.active(now_ms)}

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes) -> Pin:
        try:
            d: dict[str, Any] = orjson.loads(data)
            return cls(str(d["id"]), str(d["snapshot"]), str(d["reason"]), str(d["who"]),
                       int(d["created_ms"]),
                       None if d.get("until_ms") is None else int(d["until_ms"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"a pin is not valid JSON of a pin: {exc}",
                                 "restore it from the repository's history, or delete it with "
                                 "`vecwal unpin`") from None


def pin_key(pin_id: str) -> str:
    return f"{PINS_ROOT}{pin_id}.json"


def new_pin_id(created_ms: int) -> str:
    return f"pin-{created_ms:013d}-{secrets.token_hex(3)}"


def default_who() -> str:
    """The OS user at this host."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def list_pins(repo: Repository) -> list[Pin]:
    """Every pin, active or expired, oldest first."""
    pins = []
    for info in repo.store.list(PINS_ROOT):
        if not info.key.endswith(".json"):
            continue
        try:
            pins.append(Pin.from_json(repo.store.get(info.key)))
        except ObjectNotFound:
            continue  # removed since the listing
    return pins


def pins_by_snapshot(pins: list[Pin]) -> dict[str, list[Pin]]:
    out: dict[str, list[Pin]] = {}
    for pin in pins:
        out.setdefault(pin.snapshot, []).append(pin)
    return out


@contextmanager
def holding_lease(repo: Repository, ttl_s: float = 600.0, wait_s: float = 0.0
                  ) -> Iterator[Lease]:
    """The ``compaction`` lease, waiting up to ``wait_s`` for a compaction or prune to end."""
    lease = Lease(repo.store, LEASE_NAME, ttl_s)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lease.acquire()
            break
        except LeaseHeld as held:
            if time.monotonic() >= deadline:
                waited = f" (waited {wait_s:g} s)" if wait_s > 0 else ""
                raise LeaseHeld(f"cannot pin now: the repository's {held.message}{waited}",
                                f"a compaction or prune is running: retry when it ends, or "
                                f"give a longer --wait; {held.hint}") from None
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    try:
        yield lease
    finally:
        lease.release()


def check_request(reason: str, until_ms: int | None, now_ms: int) -> str:
    """The reason, stripped; PinRefused for an empty one or an ``until`` not in the future."""
    text = reason.strip()
    if not text:
        raise PinRefused("a pin needs a reason", 'say why, e.g. --reason "legal hold, case 4711"')
    if until_ms is not None and until_ms <= now_ms:
        from daemon.status import iso_ms

        raise PinRefused(f"--until {iso_ms(until_ms)} is in the past (now is {iso_ms(now_ms)})",
                         "give a later time, or leave --until out to pin for ever")
    return text


def add_pin(repo: Repository, snapshot_id: str, reason: str, until_ms: int | None = None,
            who: str | None = None, *, lease_ttl_s: float = 600.0, wait_s: float = 0.0,
            lease: Lease | None = None) -> Pin:
    """Pin snapshot ``snapshot_id`` (steps 1, 3-5). ``lease``: already held by the caller."""
    now = int(time.time() * 1000)
    text = check_request(reason, until_ms, now)
    if lease is None:
        with holding_lease(repo, lease_ttl_s, wait_s) as held:
            return add_pin(repo, snapshot_id, text, until_ms, who, lease=held)
    if not _SNAPSHOT_ID.match(snapshot_id) or not _exists(repo, manifest_key(snapshot_id)):
        raise PinRefused(f"no snapshot {snapshot_id!r} in {repo.store.url}",
                         "`vecwal list` shows the snapshots; or pin an instant with --at TIME, "
                         "which makes a snapshot there")
    for _ in range(3):
        pin = Pin(new_pin_id(now), snapshot_id, text, who or default_who(), now, until_ms)
        lease.check()  # a lease lost to a prune: that prune may be deleting the snapshot
        try:
            repo.store.put(pin.key, pin.to_json(), create_only=True)
            return pin
        except ObjectExists:
            continue  # the same millisecond and random part: draw again
    raise VecwalError(f"could not write a pin under {PINS_ROOT}", "retry")


def _exists(repo: Repository, key: str) -> bool:
    try:
        repo.store.head(key)
        return True
    except ObjectNotFound:
        return False


def check_pin_time(at_ms: int, restorable_from_ms: int | None, valid_through_ms: int | None,
                   label: str) -> None:
    """Refuse an instant outside the window the repository can rebuild (pure)."""
    from daemon.status import iso_ms

    if valid_through_ms is None:
        raise PinTimeRefused(f"cannot pin {label}: the repository has no valid-through time "
                             "yet (nothing is proven durable)", "run capture first")
    if at_ms > valid_through_ms:
        raise PinTimeRefused(
            f"cannot pin {label} ({iso_ms(at_ms)}): it is after the repository's valid-through "
            f"time {iso_ms(valid_through_ms)}, up to which every event is proven durable",
            "pin an earlier time, or wait for capture to pass it (`vecwal status`)")
    if restorable_from_ms is None or at_ms < restorable_from_ms:
        window = "nothing" if restorable_from_ms is None else (
            f"{iso_ms(restorable_from_ms)} .. {iso_ms(valid_through_ms)}")
        raise PinTimeRefused(
            f"cannot pin {label} ({iso_ms(at_ms)}): it is before what the log and snapshots can "
            f"rebuild (restorable: {window})",
            "pin a time inside the restorable window; `vecwal list` shows it")


def pin_at(compactor: Compactor, at_ms: int | None, label: str, reason: str,
           until_ms: int | None = None, who: str | None = None, *,
           wait_s: float = 0.0) -> tuple[Pin, Manifest, bool]:
    """Pin the instant ``at_ms`` (None: the valid-through time) of the compactor's
    repository, compacting to exactly it first unless a snapshot has that cut (steps 1-5).
    Returns the pin, its snapshot, and whether that snapshot was made now."""
    from daemon.inventory import collect_inventory
    from daemon.restore.planner import Scope, gather, make_plan
    from daemon.restore.target import RestoreTarget

    repo, topics = compactor.repo, compactor.topics

    check_request(reason, until_ms, int(time.time() * 1000))
    with holding_lease(repo, compactor.lease_ttl_s, wait_s) as lease:
        inv = collect_inventory(repo, topics)
        at = inv.restorable_to_ms if at_ms is None else at_ms
        if at is None:
            raise PinTimeRefused(f"cannot pin {label}: the repository has no valid-through "
                                 "time yet (nothing is proven durable)", "run capture first")
        before = set(list_manifests(repo))
        existing = [s for s in inv.snapshots if s.cut_time_ms == at]
        if existing:
            manifest = Manifest.from_json(repo.store.get(manifest_key(existing[-1].id)))
        else:
            check_pin_time(at, inv.restorable_from_ms, inv.restorable_to_ms, label)
            target = RestoreTarget(label, time_ms=at)
            try:  # the planner's own checks: holes in the log, what retention kept
                make_plan(gather(repo, topics, target), target, Scope())
            except VecwalError as exc:
                raise PinTimeRefused(f"cannot pin {label}: {exc.message}", exc.hint) from None
            manifest = compactor.compact(at, exact=True, lease=lease)
        pin = add_pin(repo, manifest.id, reason, until_ms, who, lease=lease)
        return pin, manifest, manifest.id not in before


def remove_pin(repo: Repository, pin_id_or_snapshot_id: str) -> list[Pin]:
    """Remove the pin with that id, or every pin of the snapshot with that id."""
    wanted = pin_id_or_snapshot_id.strip()
    pins = list_pins(repo)
    chosen = [p for p in pins if p.id == wanted] or [p for p in pins if p.snapshot == wanted]
    if not chosen:
        raise PinRefused(f"no pin {wanted!r} and no pinned snapshot of that id in "
                         f"{repo.store.url}", "`vecwal pins` lists the pins with their ids and "
                         "snapshots")
    for pin in chosen:
        repo.store.delete(pin.key)
    return chosen
