"""Watermark: per partition, the offset through which the log is durable and the time through
which every event is durable (valid-through). One object per partition, written only by the
partition's owner, after the segment and its sidecar (DESIGN section 3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import orjson

from daemon.errors import IntegrityError

WATERMARK_FORMAT = 1


@dataclass(frozen=True)
class Watermark:
    topic: str
    partition: int
    captured_through: int
    """Every offset below this is in a segment (or quarantine): the next offset to capture."""
    valid_through_ms: int | None
    """Every event with a timestamp at or before this is durable; None before the first one."""
    updated_at_ms: int
    writer: str
    last_segment: str | None = None
    last_error: dict[str, Any] | None = None
    """The newest error this writer met on the partition: {kind, message, at_ms}."""
    future_stamped: int = 0
    """Events stamped ahead of the time capture saw them by more than the clock margin."""
    last_future_stamped: dict[str, int] | None = None
    """The newest of them: {offset, timestamp_ms, seen_ms}."""
    format: int = WATERMARK_FORMAT

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> Watermark:
        try:
            return cls(**orjson.loads(data))
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise IntegrityError(f"watermark object is not valid: {exc}",
                                 "delete it; the daemon rebuilds it from the segments") from None
