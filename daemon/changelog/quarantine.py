"""Quarantine: bad input kept whole, never lost. One JSON object per rejected event, with the
raw key and value (base64), the Kafka coordinates and the reason."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass

import orjson

from daemon.changelog.keys import quarantine_key


@dataclass(frozen=True)
class QuarantineEntry:
    topic: str
    partition: int
    offset: int
    timestamp: int
    reason: str
    detail: str
    key_b64: str | None
    value_b64: str | None

    @classmethod
    def of(cls, topic: str, partition: int, offset: int, timestamp: int, reason: str,
           detail: str, key: bytes | None, value: bytes | None) -> QuarantineEntry:
        return cls(topic, partition, offset, timestamp, reason, detail,
                   None if key is None else base64.b64encode(key).decode(),
                   None if value is None else base64.b64encode(value).decode())

    @property
    def object_key(self) -> str:
        return quarantine_key(self.topic, self.partition, self.offset)

    def raw_value(self) -> bytes | None:
        return None if self.value_b64 is None else base64.b64decode(self.value_b64)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> QuarantineEntry:
        return cls(**orjson.loads(data))
