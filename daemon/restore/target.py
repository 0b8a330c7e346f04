"""Restore targets: a time (RFC 3339 or epoch milliseconds), ``now``, ``latest``, or explicit
offsets (``topic/partition=offset,...``). Inclusive by default.

``now`` is one consistent instant: the repository's valid-through time, the latest time up to
which every partition has proven every event durable (the planner resolves it). ``latest`` is
not an instant: every partition to its durable offset, everything captured so far, for an
operator who wants all of it rather than a consistent cut across partitions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from daemon.errors import VecwalError

_OFFSETS = re.compile(r"^[^/=,\s]+/\d+=\d+(,[^/=,\s]+/\d+=\d+)*$")


class BadTarget(VecwalError):
    exit_code = 2


@dataclass(frozen=True)
class RestoreTarget:
    label: str
    time_ms: int | None = None
    """Events with a timestamp at or before this are restored (after, with exclusive)."""
    offsets: dict[str, dict[str, int]] | None = None
    """topic -> partition -> first offset NOT restored."""
    now: bool = False
    latest: bool = False

    @property
    def until_ms(self) -> int | None:
        return self.time_ms


def parse_target(text: str, now_ms: int, exclusive: bool = False) -> RestoreTarget:
    text = text.strip()
    if text == "now":
        return RestoreTarget("now", time_ms=now_ms - (1 if exclusive else 0), now=True)
    if text == "latest":
        if exclusive:
            raise BadTarget("--to latest cannot be --exclusive",
                            "latest includes every captured event; give a time or offsets")
        return RestoreTarget("latest", latest=True)
    if text.isdigit():
        ms = int(text)
        return RestoreTarget(text, time_ms=ms - 1 if exclusive else ms)
    if _OFFSETS.match(text):
        offsets: dict[str, dict[str, int]] = {}
        for part in text.split(","):
            tp, _, off = part.partition("=")
            topic, _, partition = tp.rpartition("/")
            offsets.setdefault(topic, {})[str(int(partition))] = int(off) + (0 if exclusive else 1)
        return RestoreTarget(text, offsets=offsets)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadTarget(
            f"--to {text!r} is not a time or an offset list",
            "use RFC 3339 (2026-11-25T14:05:00Z), epoch milliseconds, now, latest, or "
            "topic/partition=offset[,...]") from None
    if dt.tzinfo is None:
        raise BadTarget(f"--to {text!r} has no time zone",
                        "add Z or an offset such as +01:00, so the moment is unambiguous")
    ms = int(dt.timestamp() * 1000)
    return RestoreTarget(text, time_ms=ms - 1 if exclusive else ms)
