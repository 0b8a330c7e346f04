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


@dataclass
class Lease:
    store: ObjectStore
    name: str
    ttl_s: float = 600.0
    token: str = ""

    @property
    def key(self) -> str:
        return f"locks/{self.name}.json"

    def acquire(self) -> None:
        self.token = uuid.uuid4().hex
        body = orjson.dumps({"owner": writer_identity(), "token": self.token,
                             "expires_at_ms": int((time.time() + self.ttl_s) * 1000)})
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

    def release(self) -> None:
        try:
            held = orjson.loads(self.store.get(self.key))
        except ObjectNotFound:
            return
        if held.get("token") == self.token:
            self.store.delete(self.key)
