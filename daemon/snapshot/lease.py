"""Lease: one compactor at a time per repository, through a create-only lock object with an
expiry. An expired lease is taken over by deleting it and creating it again; a live one is
refused with a hint."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import orjson

from daemon.changelog.repository import writer_identity
from daemon.errors import ObjectExists, ObjectNotFound, VecwalError
from daemon.objectstore import ObjectStore


class LeaseHeld(VecwalError):
    """Another process holds the lease."""


class LeaseLost(VecwalError):
    """Our lease expired and another process took it over: our work must not be committed."""


@dataclass
class Lease:
    store: ObjectStore
    name: str
    ttl_s: float = 600.0
    token: str = ""
    renewed_at: float = 0.0

    @property
    def key(self) -> str:
        return f"locks/{self.name}.json"

    def _body(self) -> bytes:
        return orjson.dumps({"owner": writer_identity(), "token": self.token,
                             "expires_at_ms": int((time.time() + self.ttl_s) * 1000)})

    def acquire(self) -> None:
        self.token = uuid.uuid4().hex
        body = self._body()
        self.renewed_at = time.monotonic()
        for _ in range(2):
            try:
                self.store.put(self.key, body, create_only=True)
                return
            except ObjectExists:
                try:
                    held = orjson.loads(self.store.get(self.key))
                except ObjectNotFound:
                    continue
                if held["expires_at_ms"] > time.time() * 1000:
                    raise LeaseHeld(
                        f"{self.name} lease is held by {held['owner']} until "
                        f"{held['expires_at_ms']} ms", "wait for it to finish, or if that "
                        f"process is dead, delete {self.key} from the repository") from None
                self.store.delete(self.key)  # expired: its holder died
        raise LeaseHeld(f"could not take the {self.name} lease", "retry")

    def check(self) -> None:
        """Raise LeaseLost unless the stored lease is still ours."""
        try:
            held = orjson.loads(self.store.get(self.key))
        except ObjectNotFound:
            held = {}
        if held.get("token") != self.token:
            raise LeaseLost(
                f"the {self.name} lease was taken over by {held.get('owner', 'nobody')} while "
                "this process worked (it ran longer than the lease's ttl)",
                "raise [compaction] lease_ttl_s above the longest compaction; nothing was "
                "committed, the next run starts over")

    def keep_alive(self) -> None:
        """Extend the lease when a third of its ttl has passed (call it often; it is cheap)."""
        if time.monotonic() - self.renewed_at < self.ttl_s / 3:
            return
        self.check()
        self.store.put(self.key, self._body())
        self.renewed_at = time.monotonic()

    def release(self) -> None:
        try:
            held = orjson.loads(self.store.get(self.key))
        except ObjectNotFound:
            return
        if held.get("token") == self.token:
            self.store.delete(self.key)
