"""Kafka message headers as the change log keeps them (``headers`` and ``headers_truncated``,
the last two fields of ``schemas/changelog_record.avsc``).

A message's headers are kept in the order Kafka delivered them, duplicate keys included, up
to ``MAX_HEADERS`` headers and ``MAX_HEADER_BYTES`` bytes in all (each header's key, UTF-8,
plus its value). Beyond that the headers that fit are kept, in order (a value that does not
fit whole is dropped with its key, never cut), and ``headers_truncated`` says some were left
out. Headers are never a reason to quarantine an event: a key that is not UTF-8 is kept with
its invalid bytes replaced (U+FFFD).

``null`` headers: the message had none. Because the two fields are the record's last, a
record's Avro encoding is its encoding without them followed by ``encode_tail``'s bytes;
capture's native path appends those to the datums the event codec writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

MAX_HEADERS = 16
"""At most this many headers of a message are kept."""
MAX_HEADER_BYTES = 4096
"""At most this many bytes of headers are kept in all: each key's UTF-8 plus its value."""

RawHeaders = Sequence[tuple[str | bytes, bytes | str | None]] | None
"""What confluent-kafka's ``Message.headers()`` gives: None, or (key, value) pairs."""
Header = dict[str, Any]
"""``{"key": str, "value": bytes | None}``, as the record holds it."""

NO_HEADERS_TAIL = b"\x00\x00"
"""``encode_tail`` of a message without headers: null, false."""


class Unreadable(tuple[()]):
    """The headers of a message the Kafka client could not decode (confluent-kafka raises
    on a header key that is not UTF-8, and cannot give its bytes): kept as none, truncated."""


UNREADABLE = Unreadable()


class HasHeaders(Protocol):
    """A confluent-kafka Message, as far as its headers go."""

    def headers(self) -> Any: ...

    def set_headers(self, headers: Any, /) -> None: ...


def message_headers(msg: HasHeaders) -> RawHeaders:
    """``msg.headers()``, or ``UNREADABLE`` when the client cannot decode them. The only
    place capture asks a message for its headers: confluent-kafka keeps a half-built list
    after that failure (a later ``headers()`` would hand it out), so it is replaced here."""
    try:
        raw = msg.headers()
    except (SystemError, UnicodeDecodeError):
        msg.set_headers(UNREADABLE)
        return UNREADABLE
    return raw  # type: ignore[no-any-return]


def message_tail(msg: HasHeaders) -> bytes:
    """``encode_tail`` of the message's headers: what ends its record's datum (the event
    codec calls it for each message it encodes)."""
    raw = message_headers(msg)
    return NO_HEADERS_TAIL if raw is None else encode_tail(raw)


def bound(raw: RawHeaders) -> tuple[list[Header] | None, bool]:
    """The headers the change log keeps of ``raw``, and whether some were left out."""
    if raw is None:
        return None, False
    if isinstance(raw, Unreadable):
        return [], True
    kept: list[Header] = []
    used, truncated = 0, False
    for key, value in raw:
        raw_key = key.encode("utf-8", errors="replace") if isinstance(key, str) else bytes(key)
        k = raw_key.decode("utf-8", errors="replace")  # a no-op for valid UTF-8
        v = value.encode("utf-8", errors="replace") if isinstance(value, str) else value
        size = len(k.encode()) + (len(v) if v is not None else 0)
        if len(kept) == MAX_HEADERS or used + size > MAX_HEADER_BYTES:
            truncated = True
            continue
        kept.append({"key": k, "value": v})
        used += size
    return kept, truncated


def _long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def encode_tail(raw: RawHeaders) -> bytes:
    """The Avro encoding of the record's ``headers`` and ``headers_truncated`` for a message
    whose headers are ``raw`` (bounded here), as fastavro writes them."""
    if raw is None:
        return NO_HEADERS_TAIL
    kept, truncated = bound(raw)
    assert kept is not None
    parts = [b"\x02"]
    if kept:
        parts.append(_long(len(kept)))
        for h in kept:
            k = h["key"].encode()
            parts += (_long(len(k)), k)
            v = h["value"]
            parts += (b"\x00",) if v is None else (b"\x02", _long(len(v)), v)
    parts.append(b"\x00\x01" if truncated else b"\x00\x00")
    return b"".join(parts)
