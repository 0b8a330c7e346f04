"""Kafka message headers as the change log keeps them (``headers`` and ``headers_truncated``,
the last two fields of ``schemas/changelog_record.avsc``).

A message's headers are kept in the order Kafka delivered them, duplicate keys included, up
to ``MAX_HEADERS`` headers and ``MAX_HEADER_BYTES`` bytes in all (each header's key, UTF-8,
plus its value). Beyond that the headers that fit are kept, in order (a value that does not
fit whole is dropped with its key, never cut), and ``headers_truncated`` says some were left
out. Headers are never a reason to quarantine an event: a key that is not UTF-8 is kept with
its invalid bytes replaced (U+FFFD).

``null`` headers: the message had none. Because the two fields are the record's last, a
record's Avro encoding is its encoding without them followed by ``encode_tail``'s bytes:
the event codec (``daemon/native/eventcodec.c``) ends its datums with null and false itself
when a message has no headers, else with ``encode_tail`` of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from daemon.avro_long import avro_long

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
    """``msg.headers()``, or ``UNREADABLE`` when the client cannot decode them (the event
    codec does the same in C). confluent-kafka keeps a half-built list after that failure,
    which a later ``headers()`` would hand out: it is replaced by ``UNREADABLE`` here."""
    try:
        raw = msg.headers()
    except (SystemError, UnicodeDecodeError):
        msg.set_headers(UNREADABLE)
        return UNREADABLE
    return raw  # type: ignore[no-any-return]


def message_tail(msg: HasHeaders) -> bytes:
    """``encode_tail`` of the message's headers: what ends its record's datum, as the event
    codec wrote it."""
    raw = message_headers(msg)
    return NO_HEADERS_TAIL if raw is None else encode_tail(raw)


def _kept(raw: RawHeaders) -> tuple[list[tuple[bytes, bytes | None]], bool]:
    """The (key UTF-8, value) of the headers kept of ``raw`` (not None), and whether some were
    left out: the bounds, in one place."""
    if isinstance(raw, Unreadable):
        return [], True
    assert raw is not None
    kept: list[tuple[bytes, bytes | None]] = []
    used, truncated = 0, False
    for key, value in raw:
        if isinstance(key, str):
            k = key.encode("utf-8", errors="replace")  # a lone surrogate: "?"
        else:  # a no-op for valid UTF-8; else invalid bytes become U+FFFD
            k = bytes(key).decode("utf-8", errors="replace").encode()
        v = value.encode("utf-8", errors="replace") if isinstance(value, str) else value
        size = len(k) + (0 if v is None else len(v))
        if len(kept) == MAX_HEADERS or used + size > MAX_HEADER_BYTES:
            truncated = True
            continue
        kept.append((k, v))
        used += size
    return kept, truncated


def bound(raw: RawHeaders) -> tuple[list[Header] | None, bool]:
    """The headers the change log keeps of ``raw`` (``headers``), and whether some were left
    out (``headers_truncated``)."""
    if raw is None:
        return None, False
    kept, truncated = _kept(raw)
    return [{"key": k.decode(), "value": v} for k, v in kept], truncated




def encode_tail(raw: RawHeaders) -> bytes:
    """The Avro encoding of the record's ``headers`` and ``headers_truncated`` for a message
    whose headers are ``raw`` (bounded here), as fastavro writes them."""
    if raw is None:
        return NO_HEADERS_TAIL
    kept, truncated = _kept(raw)
    parts = [b"\x02"]
    if kept:
        parts.append(avro_long(len(kept)))
        for k, v in kept:
            if v is None:
                parts += (avro_long(len(k)), k, b"\x00")
            else:
                parts += (avro_long(len(k)), k, b"\x02", avro_long(len(v)), v)
    parts.append(b"\x00\x01" if truncated else b"\x00\x00")
    return b"".join(parts)
