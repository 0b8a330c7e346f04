from collections.abc import Callable
from typing import Any

Encoded = tuple[str, int, int, int, bytes | None, int, bytes, str, str, str]
"""(topic, partition, offset, timestamp, key, value_size, datum, op, collection, id)"""

Refused = tuple[str, int, int, int, str, str, bytes | None, bytes]
"""A bad event, as the parser would refuse it: QuarantineEntry's fields, in its order
(topic, partition, offset, timestamp, reason, detail, key, value)."""

def encode_batch(messages: list[Any], start: int, formats: dict[str, bool],
                 dimensions: dict[str, int], max_event_bytes: int,
                 headers_tail: Callable[[Any], bytes], unreadable: Any,
                 ) -> tuple[list[Encoded | Refused | None], int]: ...

Run = tuple[int, str, int, str, list[int], list[int], list[int], list[bytes], list[str],
            list[str]]
"""Consecutive encoded messages of one topic, partition and collection, offsets rising:
(first, topic, partition, collection, offsets, timestamps, value_sizes, datums, ops, ids),
``first`` the index of its first message in the batch, the lists parallel."""

def encode_runs(messages: list[Any], start: int, formats: dict[str, bool],
                dimensions: dict[str, int], max_event_bytes: int,
                headers_tail: Callable[[Any], bytes], unreadable: Any,
                ) -> tuple[list[Run | Refused | int], int]: ...
"""encode_batch's answer with its encoded messages gathered in runs; a message the Python
parser must decide is its index in ``messages``."""

HEADER_LIMITS: tuple[int, int]
"""(MAX_HEADERS, MAX_HEADER_BYTES) the codec bounds headers with: daemon.kafka_headers'."""
