"""The C sealer (daemon/native/tenantseal.c) against its reference, TenantSealer on record
dicts: a change-log datum sealed in C is the reference's sealed record encoded, byte for byte;
snapshot rows opened in C are the reference's opened records encoded, with their lengths and
content lengths; a forgotten tenant's rows are left out and named; anything changed, moved or
unsealed is refused."""

from __future__ import annotations

import copy
import io
import os
from typing import Any

import fastavro
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.changelog.segment import RECORD_SCHEMA
from daemon.errors import IntegrityError
from daemon.keys.sealing import CONTENT_FIELDS, TenantSealer, native
from daemon.keys.tenants import TenantForgotten, TenantKey
from daemon.rows import SNAPSHOT_SCHEMA, Row, content_hash_bytes
from daemon.snapshot.datafile import decode_records, encode_rows
from daemon.snapshot.opened import FileOpener
from tests.unit.test_recordcodec import RECORDS

C = native()
pytestmark = pytest.mark.skipif(C is None, reason="the C sealer is not built (OpenSSL headers)")


@pytest.fixture(params=["lanes", "one by one"])
def lanes(request: pytest.FixtureRequest) -> Any:
    """open_rows both ways: the block's rows checked LANES at a time (AES-NI), and each with
    OpenSSL's AES-SIV."""
    assert C is not None
    was = C.set_lanes(request.param == "lanes")
    yield request.param
    C.set_lanes(was)


class FixedKeys:
    """TenantKeys' two lookups over keys made here; ``forgotten`` tenants have none."""

    def __init__(self) -> None:
        self.by_tenant: dict[tuple[str, str], TenantKey] = {}
        self.forgotten: set[tuple[str, str]] = set()

    def current(self, collection: str, tenant: str) -> TenantKey:
        pair = (collection, tenant)
        if pair not in self.by_tenant:
            self.by_tenant[pair] = TenantKey.derive(os.urandom(8), os.urandom(32))
        return self.by_tenant[pair]

    def key(self, collection: str, tenant: str, key_id: bytes) -> TenantKey:
        if (collection, tenant) in self.forgotten:
            raise TenantForgotten(collection, tenant)
        found = self.by_tenant[(collection, tenant)]
        assert found.id == key_id
        return found

    def log_resolver(self) -> Any:
        def resolve(coll: bytes, tenant: bytes) -> tuple[bytes, bytes]:
            key = self.current(coll.decode(), tenant.decode())
            return key.id, key.siv
        return resolve

    def row_resolver(self) -> Any:
        def resolve(key_id: bytes, coll: bytes, tenant: bytes) -> bytes | None:
            try:
                return self.key(coll.decode(), tenant.decode(), key_id).siv
            except TenantForgotten:
                return None
        return resolve


def open_rows(data: bytes, keys: FixedKeys) -> tuple[bytes, bytes, bytes, bytes, list[int]]:
    """C.open_rows, its opened rows as bytes."""
    assert C is not None
    into = bytearray(len(data) + 5)
    used, lens, clens, hashes, gone = C.open_rows(data, into, {}, keys.row_resolver())
    return bytes(into[:used]), lens, clens, hashes, gone


def u4(data: bytes) -> list[int]:
    return np.frombuffer(data, "<u4").tolist()  # type: ignore[no-any-return]


def encode(schema: Any, rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, rec)
    return buf.getvalue()


def snapshot_record(log: dict[str, Any], offset: int) -> dict[str, Any]:
    rec = {f["name"]: log.get(f["name"]) for f in SNAPSHOT_SCHEMA["fields"]}
    rec.update(tenant=log["tenant"] or "", last_offset=offset, last_timestamp=7,
               last_partition=2, last_topic="t")
    return rec


@settings(max_examples=300, deadline=None)
@given(RECORDS)
def test_a_sealed_datum_is_the_references_byte_for_byte(record: dict[str, Any]) -> None:
    assert C is not None
    keys = FixedKeys()
    cache: dict[bytes, tuple[bytes, bytes]] = {}
    got = C.seal_record(encode(RECORD_SCHEMA, record), cache, keys.log_resolver())
    want = encode(RECORD_SCHEMA, TenantSealer(keys).seal(copy.deepcopy(record)))  # type: ignore[arg-type]
    assert got == want
    if record["op"] == "upsert" and record["id"] is not None:
        assert len(cache) == 1  # the key is kept for the next record of the tenant


UPSERTS = RECORDS.map(lambda r: {**r, "op": "upsert", "id": r["id"] or "x"})


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(UPSERTS, min_size=1, max_size=20), st.data())
def test_opened_rows_are_the_references_rows(lanes: str, records: list[dict[str, Any]],
                                             data: st.DataObject) -> None:
    assert C is not None
    keys = FixedKeys()
    sealer = TenantSealer(keys)  # type: ignore[arg-type]
    sealed = [snapshot_record(sealer.seal(copy.deepcopy(r)), i) for i, r in enumerate(records)]
    tenants = sorted({(r["collection"], r["tenant"]) for r in sealed})
    keys.forgotten = set(data.draw(st.lists(st.sampled_from(tenants), max_size=1)))
    block = b"".join(encode(SNAPSHOT_SCHEMA, r) for r in sealed)
    out, lens, clens, hashes, gone = open_rows(block, keys)
    lengths, content_lens = u4(lens), u4(clens)
    want_rows, want_gone = [], []
    for i, rec in enumerate(sealed):
        try:
            want_rows.append(Row.of(sealer.open(copy.deepcopy(rec))))
        except TenantForgotten:
            want_gone.append(i)
    assert gone == want_gone
    assert out == b"".join(bytes(r.raw) for r in want_rows)  # type: ignore[arg-type]
    assert lengths == [len(r.raw) for r in want_rows]  # type: ignore[arg-type]
    assert content_lens == [r.content_len for r in want_rows]
    assert hashes == b"".join(content_hash_bytes(bytes(r.raw)[:r.content_len])  # type: ignore[arg-type]
                              for r in want_rows)


def one_row(keys: FixedKeys, **change: Any) -> tuple[dict[str, Any], bytes]:
    rec = {f["name"]: None for f in RECORD_SCHEMA["fields"]}
    rec.update(offset=1, timestamp=2, op="upsert", collection="docs", tenant="acme", id="a1",
               document_is_json=False, vector=b"\x00" * 12, document="hello", acl=["g"])
    sealed = snapshot_record(TenantSealer(keys).seal(rec), 3)  # type: ignore[arg-type]
    sealed.update(change)
    return sealed, encode(SNAPSHOT_SCHEMA, sealed)


def test_content_is_sealed_and_the_rest_readable() -> None:
    sealed, _ = one_row(FixedKeys())
    assert sealed["vector"] is not None and sealed["dimension"] is None
    assert all(sealed[f] is None for f in CONTENT_FIELDS[1:])
    assert b"hello" not in sealed["vector"]
    assert (sealed["collection"], sealed["tenant"], sealed["id"]) == ("docs", "acme", "a1")


@pytest.mark.parametrize("change", [
    {"id": "a2"}, {"tenant": "globex"}, {"collection": "other"},  # moved
    {"document": "x"},  # not sealed by this format
])
def test_changed_or_moved_content_is_refused(lanes: str, change: dict[str, Any]) -> None:
    assert C is not None
    keys = FixedKeys()
    sealed, _ = one_row(keys)
    keys.by_tenant[(change.get("collection", "docs"), change.get("tenant", "acme"))] = \
        keys.by_tenant[("docs", "acme")]
    moved = encode(SNAPSHOT_SCHEMA, {**sealed, **change})
    with pytest.raises(ValueError):
        open_rows(moved, keys)
    with pytest.raises(IntegrityError):
        TenantSealer(keys).open({**sealed, **change})  # type: ignore[arg-type]


def test_a_flipped_byte_does_not_open(lanes: str) -> None:
    assert C is not None
    keys = FixedKeys()
    sealed, _ = one_row(keys)
    box = bytearray(sealed["vector"])
    box[-1] ^= 1
    with pytest.raises(ValueError, match="does not open"):
        open_rows(encode(SNAPSHOT_SCHEMA, {**sealed, "vector": bytes(box)}), keys)


def test_truncated_rows_are_refused(lanes: str) -> None:
    assert C is not None
    keys = FixedKeys()
    _, raw = one_row(keys)
    with pytest.raises(ValueError, match="does not read"):
        open_rows(raw[:-3], keys)
    with pytest.raises(ValueError):
        C.seal_record(b"\x02\x04", {}, keys.log_resolver())


def mixed_block(keys: FixedKeys, n: int) -> tuple[list[dict[str, Any]], list[bytes]]:
    """n sealed rows of five tenants taking turns, with envelopes of every size from all
    null (8 bytes, under one AES block) to a few blocks, so lanes hold different keys and end
    at different blocks, whole and partial."""
    sealer = TenantSealer(keys)  # type: ignore[arg-type]
    sealed, raws = [], []
    for i in range(n):
        rec = {f["name"]: None for f in RECORD_SCHEMA["fields"]}
        rec.update(offset=i, timestamp=i, op="upsert", collection="docs", tenant=f"t{i % 5}",
                   id=f"r{i}", document_is_json=False)
        if i % 4:
            rec["document"] = "d" * (i * 7 % 61)
        if i % 3 == 0:
            rec["vector"] = bytes(range(i % 50))
        sealed.append(snapshot_record(sealer.seal(rec), i))
        raws.append(encode(SNAPSHOT_SCHEMA, sealed[-1]))
    return sealed, raws


def test_many_tenants_and_sizes_open_as_the_reference(lanes: str) -> None:
    assert C is not None
    keys = FixedKeys()
    sealed, raws = mixed_block(keys, 90)
    sealer = TenantSealer(keys)  # type: ignore[arg-type]
    out, lengths, _, _, gone = open_rows(b"".join(raws), keys)
    want = [bytes(Row.of(sealer.open(copy.deepcopy(r))).raw) for r in sealed]  # type: ignore[arg-type]
    assert gone == [] and u4(lengths) == [len(w) for w in want] and out == b"".join(want)


@pytest.mark.parametrize("row", [0, 7, 8, 45, 89])
def test_a_changed_row_anywhere_in_a_block_does_not_open(lanes: str, row: int) -> None:
    """Each row's check is its own, whichever lane it ran in and whoever ran beside it."""
    assert C is not None
    keys = FixedKeys()
    sealed, raws = mixed_block(keys, 90)
    box = bytearray(sealed[row]["vector"])
    box[len(box) // 2] ^= 0x40
    raws[row] = encode(SNAPSHOT_SCHEMA, {**sealed[row], "vector": bytes(box)})
    with pytest.raises(ValueError, match="does not open"):
        open_rows(b"".join(raws), keys)


def test_a_data_file_opens_alike_with_and_without_the_c_sealer() -> None:
    keys = FixedKeys()
    sealer = TenantSealer(keys)  # type: ignore[arg-type]
    rows = []
    for i in range(2500):  # three blocks
        tenant = ("acme", "globex", "initech")[i % 3]
        rec = {f["name"]: None for f in RECORD_SCHEMA["fields"]}
        rec.update(offset=i, timestamp=i, op="upsert", collection="docs", tenant=tenant,
                   id=f"r{i:05d}", document_is_json=False, vector=os.urandom(16),
                   document=f"doc {i}", acl=[f"g:{tenant}"], dimension=4)
        rows.append(Row.of(snapshot_record(sealer.seal(rec), i)))
    data = encode_rows(sorted(rows, key=lambda r: r.key)).data
    keys.forgotten = {("docs", "globex")}
    fast = FileOpener(sealer).open(data, "test")
    slow_opener = FileOpener(sealer)
    slow_opener._native = None
    slow = slow_opener.open(data, "test")
    # the same rows and index; blocks may end elsewhere (a forgotten tenant's rows are gone)
    assert list(decode_records(fast.data, "fast")) == list(decode_records(slow.data, "slow"))
    assert (fast.records, fast.digest, fast.tenants) == (slow.records, slow.digest, slow.tenants)
    assert fast.tenants == {"acme": 834, "initech": 833}
    opened = {r["id"]: r for r in decode_records(fast.data, "test")}
    assert opened["r00000"]["document"] == "doc 0" and opened["r00000"]["acl"] == ["g:acme"]


def test_rows_open_only_into_a_buffer_that_holds_them() -> None:
    assert C is not None
    keys = FixedKeys()
    _, raw = one_row(keys)
    with pytest.raises(ValueError, match="shorter"):
        C.open_rows(raw, bytearray(len(raw) - 1), {}, keys.row_resolver())


def test_one_opener_opens_file_after_file() -> None:
    """The opener writes every file into the buffer it keeps: each file read before the next
    is opened is whole, whatever the sizes."""
    keys = FixedKeys()
    opener = FileOpener(TenantSealer(keys))  # type: ignore[arg-type]
    for n in (300, 40, 900):
        sealed, _ = mixed_block(keys, n)
        data = encode_rows(sorted((Row.of(r) for r in sealed), key=lambda r: r.key)).data
        got = list(decode_records(b"".join(opener.open(data, "t").chunks), "t"))
        assert sorted(r["id"] for r in got) == sorted(f"r{i}" for i in range(n))
        for r in got:
            i = int(r["id"][1:])
            assert r["document"] == ("d" * (i * 7 % 61) if i % 4 else None)
            assert r["vector"] == (bytes(range(i % 50)) if i % 3 == 0 else None)
