"""Sealed objects (daemon.objectstore.sealed): every plaintext range reads back from only the
chunks that hold it, and any change to the object (a byte, a cut at a chunk boundary, chunks
swapped, another key, another wrapped key) fails to open instead of giving other bytes."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import IntegrityError
from daemon.objectstore.sealed import (
    TAG,
    Header,
    open_all,
    open_range,
    plaintext_size,
    plan_range,
    seal,
)

KEY = bytes(range(32))
WRAPPED = b"wrapped-by-the-kek"
LOG2 = 10  # 1 KiB chunks: many chunk boundaries in small objects


def read(blob: bytes, key: str, offset: int, length: int | None) -> bytes:
    header = Header.parse(blob[:2048], key)
    plan = plan_range(header, len(blob), offset, length)
    return open_range(plan, blob[plan.start:plan.end], header, key, KEY)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=5000), offset=st.integers(0, 5200),
       length=st.one_of(st.none(), st.integers(0, 5200)))
def test_any_range_reads_back(data: bytes, offset: int, length: int | None) -> None:
    blob = seal(data, "log/t/p=00000/a.avro", KEY, WRAPPED, LOG2)
    header = Header.parse(blob, "k")
    assert plaintext_size(header, len(blob)) == len(data)
    assert open_all(blob, "log/t/p=00000/a.avro", KEY) == data
    want = data[offset:] if length is None else data[offset:offset + length]
    assert read(blob, "log/t/p=00000/a.avro", offset, length) == want
    plan = plan_range(header, len(blob), offset, length)
    assert plan.end - plan.start <= (plan.last - plan.first + 1) * (1024 + TAG)


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 4096, 4097])
def test_sizes_at_chunk_boundaries(size: int) -> None:
    data = os.urandom(size)
    blob = seal(data, "k", KEY, WRAPPED, LOG2)
    chunks = max(1, -(-size // 1024))
    assert len(blob) == Header.parse(blob, "k").size + size + chunks * TAG
    assert open_all(blob, "k", KEY) == data


def test_the_plaintext_is_not_in_the_object() -> None:
    secret = b"the tenant's distinctive document " * 100
    blob = seal(secret, "k", KEY, WRAPPED, LOG2)
    assert b"distinctive" not in blob
    assert seal(secret, "k", KEY, WRAPPED, LOG2) != blob  # a fresh nonce prefix each time


def mutations(blob: bytes) -> dict[str, bytes]:
    head = Header.parse(blob, "k").size
    stride = 1024 + TAG
    chunk = [blob[head + i * stride:head + (i + 1) * stride] for i in range(3)]
    return {
        "a byte flipped": blob[:head + 5] + bytes([blob[head + 5] ^ 1]) + blob[head + 6:],
        "the last chunk dropped": blob[:head + 2 * stride],
        "chunks swapped": blob[:head] + chunk[1] + chunk[0] + blob[head + 2 * stride:],
        "the wrapped key replaced": blob.replace(WRAPPED, b"wrapped-by-the-keK", 1),
        "the tail cut": blob[:-1],
    }


@pytest.mark.parametrize("what", list(mutations(seal(os.urandom(2500), "k", KEY, WRAPPED,
                                                     LOG2))))
def test_a_changed_object_does_not_open(what: str) -> None:
    blob = seal(os.urandom(2500), "k", KEY, WRAPPED, LOG2)
    with pytest.raises(IntegrityError):
        open_all(mutations(blob)[what], "k", KEY)


def test_another_object_key_or_data_key_does_not_open() -> None:
    blob = seal(b"x" * 3000, "data/docs/a.avro", KEY, WRAPPED, LOG2)
    with pytest.raises(IntegrityError, match="moved from another key"):
        open_all(blob, "data/docs/b.avro", KEY)
    with pytest.raises(IntegrityError):
        open_all(blob, "data/docs/a.avro", bytes(32))


def test_not_sealed_and_unknown_versions_are_named() -> None:
    with pytest.raises(IntegrityError, match="not a sealed object"):
        open_all(b"Obj\x01" + b"\x00" * 64, "k", KEY)
    with pytest.raises(IntegrityError, match="too short"):
        open_all(b"VWS1", "k", KEY)
    blob = bytearray(seal(b"abc", "k", KEY, WRAPPED, LOG2))
    blob[4] = 9
    with pytest.raises(IntegrityError, match="algorithm 9"):
        open_all(bytes(blob), "k", KEY)


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(0, 2600), max_size=12), seed=st.integers(0, 255))
def test_pieces_seal_as_their_concatenation(lengths: list[int], seed: int) -> None:
    """A segment given as pieces (``spans.Gathered``) is sealed without joining them: it
    opens to their concatenation and has its size, whatever the pieces' lengths against the
    chunk size (pieces shorter than, longer than, and ending on a chunk; empty ones)."""
    from daemon.spans import Gathered

    pieces = [bytes((seed + k + i) % 251 for i in range(n)) for k, n in enumerate(lengths)]
    data = b"".join(pieces)
    key = "log/t/p=00000/a.avro"
    blob = seal(Gathered([memoryview(p) if i % 2 else p for i, p in enumerate(pieces)]),
                key, KEY, WRAPPED, LOG2)
    assert len(blob) == len(seal(data, key, KEY, WRAPPED, LOG2))
    assert open_all(bytes(blob), key, KEY) == data


def test_pieces_on_chunk_boundaries_seal_as_their_concatenation() -> None:
    from daemon.spans import Gathered

    size = 1 << LOG2
    for lengths in ([size], [size, size], [size - 1, 1, size], [1, size - 1], [3 * size + 5],
                    [0, 0], [], [size, 0, 7], [5, size + 10], [size - 1, 2 * size, 1]):
        pieces = [os.urandom(n) for n in lengths]
        blob = seal(Gathered(pieces), "k", KEY, WRAPPED, LOG2)
        assert open_all(bytes(blob), "k", KEY) == b"".join(pieces), lengths
        assert len(blob) == len(seal(b"".join(pieces), "k", KEY, WRAPPED, LOG2)), lengths
