"""The native event codec (``daemon/native/eventcodec.c``), when it is built.

It encodes plain upserts and deletes, JSON or Avro, into change-log record datums with the GIL
released, and leaves every other event to ``daemon.events.EventParser``, whose records it
equals byte for byte. Without it capture is correct but several times slower, so a missing
build is said once, loudly, with the fix.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType

import structlog

from daemon.kafka_headers import MAX_HEADER_BYTES, MAX_HEADERS

log = structlog.get_logger("vecwal.capture")


@cache
def event_codec() -> ModuleType | None:
    """The ``daemon.native.eventcodec`` module, or None (said once) when it is not built or
    bounds headers otherwise than ``daemon.kafka_headers``."""
    try:
        from daemon.native import eventcodec
    except ImportError as exc:
        log.warning("native event codec not built: every event goes through the Python parser",
                    error=str(exc), hint="run `make setup` (or `pip install -e .`) to build it")
        return None
    if eventcodec.HEADER_LIMITS != (MAX_HEADERS, MAX_HEADER_BYTES):
        log.warning("native event codec bounds Kafka headers otherwise than daemon.kafka_headers: "
                    "every event goes through the Python parser",
                    codec=eventcodec.HEADER_LIMITS, python=(MAX_HEADERS, MAX_HEADER_BYTES),
                    hint="rebuild it: `make setup`")
        return None
    return eventcodec
