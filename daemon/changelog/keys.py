"""Object keys of a repository (DESIGN section 2). Offsets are zero-padded so that the
lexicographic order of keys is the numeric order of offsets, and a restore plan needs only LIST.

    log/<topic>/p=<partition:05d>/<from:020d>-<to:020d>.avro    segment, offsets [from, to)
    log/<topic>/p=<partition:05d>/<from:020d>-<to:020d>.idx     its sidecar
    state/watermark/<topic>/p=<partition:05d>.json
    quarantine/<topic>/p=<partition:05d>/<from:020d>-<to:020d>.vwq    rejected events of a segment
    quarantine/<topic>/p=<partition:05d>/<offset:020d>.json   one rejected event (older layout, read only)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from daemon.identity import REPOSITORY_FILE as REPOSITORY_FILE

LOG_ROOT = "log/"
WATERMARK_ROOT = "state/watermark/"
QUARANTINE_ROOT = "quarantine/"

_SEGMENT_RE = re.compile(r"^log/(?P<topic>[^/]+)/p=(?P<p>\d{5})/(?P<f>\d{20})-(?P<t>\d{20})\.avro$")
_QUARANTINE_RE = re.compile(r"^quarantine/(?P<topic>[^/]+)/p=(?P<p>\d{5})/"
                            r"(?:(?P<f>\d{20})-(?P<t>\d{20})\.vwq|(?P<o>\d{20})\.json)$")


def partition_dir(topic: str, partition: int) -> str:
    return f"{LOG_ROOT}{topic}/p={partition:05d}/"


@dataclass(frozen=True, order=True)
class SegmentKey:
    """Names one segment: the offsets [start, end) of one partition of one topic."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def avro(self) -> str:
        return f"{partition_dir(self.topic, self.partition)}{self.start:020d}-{self.end:020d}.avro"

    @property
    def sidecar(self) -> str:
        return self.avro[: -len(".avro")] + ".idx"

    @classmethod
    def parse(cls, key: str) -> SegmentKey | None:
        """The SegmentKey of a segment object key, or None for any other key."""
        m = _SEGMENT_RE.match(key)
        if m is None:
            return None
        return cls(m["topic"], int(m["p"]), int(m["f"]), int(m["t"]))


def segment_list_start_after(topic: str, partition: int, offset: int) -> str:
    """A LIST ``start_after`` that yields the segments starting at ``offset`` or later."""
    return f"{partition_dir(topic, partition)}{offset:020d}"


def watermark_key(topic: str, partition: int) -> str:
    return f"{WATERMARK_ROOT}{topic}/p={partition:05d}.json"


def watermark_prefix(topic: str) -> str:
    return f"{WATERMARK_ROOT}{topic}/"


def quarantine_prefix(topic: str) -> str:
    return f"{QUARANTINE_ROOT}{topic}/"


def quarantine_key(topic: str, partition: int, offset: int) -> str:
    """The key of one rejected event in the older per-event layout (read, no longer written)."""
    return f"{quarantine_prefix(topic)}p={partition:05d}/{offset:020d}.json"


@dataclass(frozen=True, order=True)
class QuarantineKey:
    """Names one quarantine object: the rejected events among offsets [start, end) of one
    partition. Capture writes one per segment that had any, under the segment's range; an
    object of the older layout holds one event (``per_event``, range [offset, offset + 1))."""

    topic: str
    partition: int
    start: int
    end: int
    per_event: bool = False

    @classmethod
    def of_segment(cls, key: SegmentKey) -> QuarantineKey:
        return cls(key.topic, key.partition, key.start, key.end)

    @property
    def object_key(self) -> str:
        if self.per_event:
            return quarantine_key(self.topic, self.partition, self.start)
        return (f"{quarantine_prefix(self.topic)}p={self.partition:05d}/"
                f"{self.start:020d}-{self.end:020d}.vwq")

    @staticmethod
    def pattern(topic: str, partition: int, start: int) -> str:
        """The key of the object of a segment that starts at ``start`` and is not sealed yet
        (its end replaced by ``*``): what a log line can name before the end is known."""
        return f"{quarantine_prefix(topic)}p={partition:05d}/{start:020d}-*.vwq"

    @classmethod
    def parse(cls, key: str) -> QuarantineKey | None:
        """The QuarantineKey of a quarantine object key (either layout), or None."""
        m = _QUARANTINE_RE.match(key)
        if m is None:
            return None
        if m["o"] is not None:
            offset = int(m["o"])
            return cls(m["topic"], int(m["p"]), offset, offset + 1, per_event=True)
        return cls(m["topic"], int(m["p"]), int(m["f"]), int(m["t"]))
