from typing import Any

Encoded = tuple[str, int, int, int, bytes | None, int, bytes, str, str, str]
"""(topic, partition, offset, timestamp, key, value_size, datum, op, collection, id)"""

def encode_batch(messages: list[Any], start: int, formats: dict[str, bool],
                 dimensions: dict[str, int], max_event_bytes: int,
                 ) -> tuple[list[Encoded | None], int]: ...
