"""Quarantine entries sealed under their tenant's key (per-tenant keys): sealed and opened back
byte for byte, bound to their coordinates, unreadable once the tenant is forgotten; objects
of format 1 (written before sealing existed) read as before."""

from __future__ import annotations

import os
import struct
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from daemon.audit.rejected import QuarantineScan, rejected_events
from daemon.avro_container import zstd as _zstd
from daemon.capture.sealing import QuarantineSealer
from daemon.changelog import quarantine
from daemon.changelog.keys import QuarantineKey, SegmentKey
from daemon.changelog.quarantine import (
    MAGIC,
    QuarantineEntry,
    SegmentQuarantine,
    open_entry,
    seal_entry,
)
from daemon.changelog.repository import Repository
from daemon.errors import EncryptionKeyError, IntegrityError
from daemon.keys import LocalKek
from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import TenantForgotten, TenantKeys
from daemon.objectstore import open_store
from daemon.sources import ContractSource

TOPIC = "ingest.v1"
SEG = SegmentKey(TOPIC, 2, 100, 250)
SECRET = b"qs-secret-document-of-acme"


def sealer_at(tmp_path: Path) -> TenantSealer:
    store = open_store(f"file://{tmp_path / 'repo'}")
    return TenantSealer(TenantKeys(store, LocalKek(os.urandom(32), "keyfile"), "repo-1"))


def event(offset: int, tenant: str | None, doc: bytes = SECRET) -> QuarantineEntry:
    body = {"op": "upsert", "collection": "docs", "id": f"r{offset}", "vector": [1.0, 2.0],
            "document": doc.decode()}
    if tenant is not None:
        body["tenant"] = tenant
    return QuarantineEntry(TOPIC, 2, offset, 1_000 + offset, "wrong_dimension",
                           f"vector has 2 dimensions (r{offset})", f"r{offset}".encode(),
                           orjson.dumps(body))


def test_sealed_entries_round_trip_and_hide_their_bytes(tmp_path: Path) -> None:
    sealer = sealer_at(tmp_path)
    plain = [event(100, "acme"), event(101, None),
             QuarantineEntry(TOPIC, 2, 102, 1_102, "unparseable", "not JSON", None, b"{tor"),
             replace(event(103, "globex"), key=None)]
    sealed = QuarantineSealer(sealer, {TOPIC: ContractSource("json")}).seal(plain)
    assert [e.sealed is not None for e in sealed] == [True, True, False, True]
    assert [(e.collection, e.tenant, e.record_id) for e in sealed] == [
        ("docs", "acme", "r100"), ("docs", "", "r101"), (None, None, None),
        ("docs", "globex", "r103")], "a value naming no tenant is the default tenant's"
    assert sealed[2] is plain[2], "an event naming no collection stays as it was"
    key = QuarantineKey.of_segment(SEG)
    data = SegmentQuarantine(key, sealed).encode()
    (n,) = struct.unpack_from("<I", data, len(MAGIC))
    head = orjson.loads(data[len(MAGIC) + 4:len(MAGIC) + 4 + n])
    assert head["compression"] == "none", "mostly ciphertext: not compressed again"
    payload = data[len(MAGIC) + 4 + n:]
    assert SECRET not in payload and b"{tor" in payload, "only the unattributable in clear"
    assert b"vector has 2" not in data + payload, "the detail is sealed too"
    assert head["format"] == 2
    assert head["entries"][0][:3] == [100, 1_100, "wrong_dimension"]
    assert head["entries"][0][6:] == ["docs", "acme", "r100"]
    back = list(SegmentQuarantine.decode(key, data).entries)
    assert back == sealed
    assert data == SegmentQuarantine(key, sealed).encode(), "entries sealed once encode alike"
    assert sealed[0].sealed != seal_entry(plain[0], "docs", "acme", "r100", sealer).sealed, \
        "a random nonce each time"
    opened = [open_entry(e, sealer) for e in back]
    assert [replace(o, collection=None, tenant=None, record_id=None) for o in opened] == plain
    assert opened[3].key is None and opened[0].detail == "vector has 2 dimensions (r100)"


def test_a_sealed_entry_is_bound_to_its_coordinates_and_tenant(tmp_path: Path) -> None:
    sealer = sealer_at(tmp_path)
    e = seal_entry(event(100, "acme"), "docs", "acme", "r100", sealer)
    for moved in (replace(e, offset=101), replace(e, partition=3),
                  replace(e, tenant="globex", sealed=e.sealed)):
        with pytest.raises((IntegrityError, EncryptionKeyError)):
            open_entry(moved, sealer)


def test_forgotten_tenant_entries_do_not_open_others_do(tmp_path: Path) -> None:
    sealer = sealer_at(tmp_path)
    acme = seal_entry(event(100, "acme"), "docs", "acme", "r100", sealer)
    globex = seal_entry(event(101, "globex"), "docs", "globex", "r101", sealer)
    sealer.keys.forget("docs", "acme", "test")
    fresh = TenantSealer(TenantKeys(sealer.keys.store, sealer.keys.kek, "repo-1"))
    with pytest.raises(TenantForgotten):
        open_entry(acme, fresh)
    assert open_entry(globex, fresh).value == event(101, "globex").value


def test_a_reupload_sealed_under_a_key_made_after_forget_is_the_same(tmp_path: Path) -> None:
    sealer = sealer_at(tmp_path)
    repo = Repository(open_store(f"file://{tmp_path / 'store'}"))
    key = QuarantineKey.of_segment(SEG)
    first = [seal_entry(event(100, "acme"), "docs", "acme", "r100", sealer)]
    repo.put_quarantine(SegmentQuarantine(key, first))
    sealer.keys.forget("docs", "acme", "test")  # a crash, a forget, the range captured again
    again = [seal_entry(event(100, "acme"), "docs", "acme", "r100", sealer)]
    assert again[0].sealed != first[0].sealed
    repo.put_quarantine(SegmentQuarantine(key, again))
    with pytest.raises(IntegrityError, match="different content"):
        repo.put_quarantine(SegmentQuarantine(key, [replace(again[0], reason="oversize")]))


def test_reading_opens_counts_forgotten_and_refuses_without_keys(tmp_path: Path) -> None:
    sealer = sealer_at(tmp_path)
    repo = Repository(open_store(f"file://{tmp_path / 'store'}"))
    plain = [event(100, "acme"), event(101, "globex")]
    sealed = QuarantineSealer(sealer, {TOPIC: ContractSource("json")}).seal(plain)
    repo.put_quarantine(SegmentQuarantine(QuarantineKey.of_segment(SEG), sealed))
    scan = QuarantineScan()
    assert [e.value for e in rejected_events(repo, TOPIC, scan, sealer=sealer)] == \
        [e.value for e in plain]
    with pytest.raises(EncryptionKeyError, match="per_tenant_keys"):
        list(rejected_events(repo, TOPIC, QuarantineScan()))
    sealer.keys.forget("docs", "acme", "test")
    scan = QuarantineScan()
    got = list(rejected_events(repo, TOPIC, scan, sealer=sealer))
    assert [(e.offset, e.sealed is not None, e.value) for e in got] == [
        (100, True, None), (101, False, plain[1].value)]
    assert scan.forgotten == {("docs", "acme"): 1}


def test_an_object_of_format_1_written_before_is_read() -> None:
    """Bytes as capture wrote them before sealing existed (no attribution fields)."""
    header = orjson.dumps({
        "format": 1, "topic": TOPIC, "partition": 2, "start": 100, "end": 250, "count": 2,
        "reasons": {"unparseable": 1, "wrong_dimension": 1}, "compression": "zstd",
        "entries": [[100, 1100, "wrong_dimension", "d", 4, 5], [140, 1140, "unparseable",
                                                               "not JSON", None, 3]]})
    data = MAGIC + struct.pack("<I", len(header)) + header + \
        _zstd().compress(b"r100" + b"{doc}" + b"{x}")
    back = list(SegmentQuarantine.decode(QuarantineKey.of_segment(SEG), data).entries)
    assert back == [
        QuarantineEntry(TOPIC, 2, 100, 1100, "wrong_dimension", "d", b"r100", b"{doc}"),
        QuarantineEntry(TOPIC, 2, 140, 1140, "unparseable", "not JSON", None, b"{x}")]
    assert all(e.sealed is None and e.tenant is None for e in back)
    sealed_row = header.replace(b'"d",4,5]', b'null,null,5,"docs","acme","r100"]')
    with pytest.raises(IntegrityError, match="has 9 fields"):
        SegmentQuarantine.decode(QuarantineKey.of_segment(SEG), MAGIC + struct.pack(
            "<I", len(sealed_row)) + sealed_row + _zstd().compress(b"r100{doc}{x}"))


def test_an_event_naming_a_collection_but_no_id_is_sealed_too(tmp_path: Path) -> None:
    """A `missing_field` upsert still carries the tenant's document and vector."""
    no_id = QuarantineEntry(TOPIC, 2, 100, 1_100, "missing_field", "upsert needs 'id'", None,
                            orjson.dumps({"op": "upsert", "collection": "docs",
                                          "tenant": "acme", "document": SECRET.decode()}))
    (sealed,) = QuarantineSealer(sealer_at(tmp_path), {TOPIC: ContractSource("json")}).seal(
        [no_id])
    assert (sealed.collection, sealed.tenant, sealed.record_id) == ("docs", "acme", None)
    assert sealed.value is None and SECRET not in (sealed.sealed or b"")


@pytest.mark.parametrize("level", [None, 1])
def test_sealed_plaintext_is_compressed_at_the_objects_level(
        tmp_path: Path, level: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quarantine, "ZSTD_LEVEL", level)
    sealer = sealer_at(tmp_path)
    e = event(100, "acme", doc=SECRET * 50)
    sealed = seal_entry(e, "docs", "acme", "r100", sealer)
    assert sealed.sealed is not None and e.value is not None
    assert (len(sealed.sealed) < len(e.value) / 4) == (level is not None)
    assert open_entry(sealed, sealer).value == e.value


def test_a_key_missing_without_an_erasure_is_an_error_not_a_skip(tmp_path: Path) -> None:
    sealer = sealer_at(tmp_path)
    repo = Repository(open_store(f"file://{tmp_path / 'store'}"))
    sealed = [seal_entry(event(100, "acme"), "docs", "acme", "r100", sealer)]
    repo.put_quarantine(SegmentQuarantine(QuarantineKey.of_segment(SEG), sealed))
    store = sealer.keys.store
    store.delete_many([i.key for i in store.list("keys/tenants/")])  # lost, not forgotten
    fresh = TenantSealer(TenantKeys(store, sealer.keys.kek, "repo-1"))
    with pytest.raises(EncryptionKeyError, match="no erasure is recorded"):
        list(rejected_events(repo, TOPIC, QuarantineScan(), sealer=fresh))
