"""Data files opened as they are written (``snapshot.opened.OpeningFile``): block by block into
buffers of a block's size, the header written last into room left for it (``spans.HeadLast``,
padded by ``datafile.file_header`` when rows under destroyed keys leave it shorter), read from
a file given whole, as a sealed object's range source, or in pieces (``spans.PiecesSource``)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.atomic import atomic_write
from daemon.changelog.segment import RECORD_SCHEMA
from daemon.errors import IntegrityError
from daemon.keys.sealing import TenantSealer, native
from daemon.keys.tenants import TenantForgotten, TenantKey
from daemon.objectstore.ranged import spooled
from daemon.rows import Row
from daemon.snapshot.datafile import (
    PAD_KEY,
    SourceFile,
    decode_records,
    encode_rows,
    file_header,
    read_index,
    read_rows,
)
from daemon.snapshot.opened import FileOpener, _opened_columns
from daemon.spans import ForwardSource, HeadLast, Parts, PiecesSource, Span
from tests.unit.test_tenantseal import snapshot_record

pytestmark = pytest.mark.skipif(native() is None, reason="the C sealer is not built")


class RotatingKeys:
    """Tenant keys by id: ``destroy`` forgets a tenant's keys so far; the tenant's next row
    gets a new key (a tenant forgotten and then written to again)."""

    def __init__(self) -> None:
        self.current_key: dict[tuple[str, str], TenantKey] = {}
        self.by_id: dict[bytes, TenantKey] = {}
        self.destroyed: set[bytes] = set()

    def current(self, collection: str, tenant: str) -> TenantKey:
        pair = (collection, tenant)
        if pair not in self.current_key:
            key = TenantKey.derive(os.urandom(8), os.urandom(32))
            self.current_key[pair] = self.by_id[key.id] = key
        return self.current_key[pair]

    def key(self, collection: str, tenant: str, key_id: bytes) -> TenantKey:
        if key_id in self.destroyed:
            raise TenantForgotten(collection, tenant)
        return self.by_id[key_id]

    def destroy(self, collection: str, tenant: str) -> None:
        self.destroyed |= {k for k, v in self.by_id.items()
                           if v is self.current_key.get((collection, tenant))}
        self.current_key.pop((collection, tenant), None)


def sealed_file(keys: RotatingKeys, n: int, *, rekey_at: int | None = None,
                tenants: tuple[str, ...] = ("acme", "globex", "initech"),
                vector_bytes: int = 64) -> bytes:
    """A data file of n sealed rows (three blocks at 2,500), tenants taking turns; at
    ``rekey_at`` globex is forgotten and gets a new key for its later rows."""
    sealer = TenantSealer(keys)  # type: ignore[arg-type]
    rows = []
    for i in range(n):
        if i == rekey_at:
            keys.destroy("docs", "globex")
        tenant = tenants[i % len(tenants)]
        rec = {f["name"]: None for f in RECORD_SCHEMA["fields"]}
        rec.update(offset=i, timestamp=i, op="upsert",
                   collection="docs", tenant=tenant, id=f"r{i:05d}", document_is_json=False,
                   vector=os.urandom(vector_bytes), document=f"doc {i} of {tenant}", acl=[f"g:{tenant}"],
                   dimension=vector_bytes // 4)
        rows.append(Row.of(snapshot_record(sealer.seal(rec), i)))
    return encode_rows(sorted(rows, key=lambda r: r.key)).data


def reference(keys: RotatingKeys, data: bytes) -> Any:
    slow = FileOpener(TenantSealer(keys))  # type: ignore[arg-type]
    slow._native = None
    return slow.open(data, "reference")


def written(tmp_path: Path, keys: RotatingKeys, source: Any, name: str = "f") -> tuple[bool, Any]:
    opening = FileOpener(TenantSealer(keys)).opening(source, name)  # type: ignore[arg-type]
    made = atomic_write(tmp_path / name, opening.file, durable=False)
    return made, opening


def test_rows_under_a_destroyed_key_are_left_out_and_the_header_padded(tmp_path: Path) -> None:
    keys = RotatingKeys()
    data = sealed_file(keys, 2500, rekey_at=1200)
    made, opening = written(tmp_path, keys, data)
    out = (tmp_path / "f").read_bytes()
    slow = reference(keys, data)
    assert made
    got = list(decode_records(out, "opened"))
    assert got == list(decode_records(slow.data, "reference"))
    assert (opening.state().records, opening.state().digest, opening.state().tenants) == \
        (slow.records, slow.digest, slow.tenants)
    globex = sorted(int(r["id"][1:]) for r in got if r["tenant"] == "globex")
    assert globex and min(globex) >= 1200  # the old key's rows gone, the new key's kept
    assert got[0]["document"].startswith("doc ") and got[0]["acl"] == [f"g:{got[0]['tenant']}"]
    index = read_index(out, "opened")
    assert len(index) == opening.rows == len(got) and index.header_bytes == opening.file.head_size
    assert PAD_KEY.encode() in out[:index.header_bytes]


def test_without_forgotten_rows_the_file_is_the_references_byte_for_byte(tmp_path: Path) -> None:
    keys = RotatingKeys()
    data = sealed_file(keys, 2500)
    made, opening = written(tmp_path, keys, data)
    assert made and (tmp_path / "f").read_bytes() == reference(keys, data).data
    assert opening.rows == 2500


def test_a_file_of_destroyed_keys_only_is_not_written(tmp_path: Path) -> None:
    keys = RotatingKeys()
    data = sealed_file(keys, 300, tenants=("globex",))
    keys.destroy("docs", "globex")
    (tmp_path / "f").write_bytes(b"before")
    made, opening = written(tmp_path, keys, data)
    assert not made and (tmp_path / "f").read_bytes() == b"before"
    assert opening.state().records == 0
    assert [p.name for p in tmp_path.iterdir()] == ["f"]  # no temporary file left behind


class Bytes:
    """A RangeSource over bytes (as an opened sealed object is one)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def copy_into(self, offset: int, out: memoryview) -> None:
        out[:] = self.data[offset:offset + len(out)]

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]


def test_a_file_in_pieces_opens_as_the_file_whole(tmp_path: Path) -> None:
    keys = RotatingKeys()
    data = sealed_file(keys, 2500, rekey_at=700)
    whole_made, _ = written(tmp_path, keys, data, "whole")
    cuts = [0, 3, 4, 100, 4099, 50_000, 50_001, 333_333, len(data)]
    pieces: list[Any] = []
    for k, (a, b) in enumerate(itertools.pairwise(cuts)):
        pieces.append(Span(Bytes(data), a, b - a) if k % 2 else data[a:b])
    made, _ = written(tmp_path, keys, PiecesSource(pieces), "pieces")
    ranged, _ = written(tmp_path, keys, Bytes(data), "ranged")
    assert whole_made and made and ranged
    want = (tmp_path / "whole").read_bytes()
    assert (tmp_path / "pieces").read_bytes() == want == (tmp_path / "ranged").read_bytes()


def test_a_spooled_file_opens_as_the_file_whole(tmp_path: Path) -> None:
    """A large base file merged from S3 is spooled to a local file and read back by range
    (``restore.executor.SPOOL_MIN_BYTES``): opened from there, and from spans of it among
    the changed rows' bytes, it is the file opened whole."""
    keys = RotatingKeys()
    data = sealed_file(keys, 2500, rekey_at=700)
    assert written(tmp_path, keys, data, "whole")[0]
    spool = spooled((data[a:a + 65_536] for a in range(0, len(data), 65_536)), len(data),
                    tmp_path)
    try:
        assert written(tmp_path, keys, spool, "spooled")[0]
        pieces = [data[:4099], Span(spool, 4099, 300_000), data[304_099:]]
        assert written(tmp_path, keys, PiecesSource(pieces), "pieces")[0]
    finally:
        spool.close()
    want = (tmp_path / "whole").read_bytes()
    assert (tmp_path / "spooled").read_bytes() == want == (tmp_path / "pieces").read_bytes()


def test_pieces_read_across_their_boundaries() -> None:
    data = os.urandom(1000)
    src = PiecesSource([data[:10], Span(Bytes(data), 10, 500), memoryview(data)[510:], b""])
    assert len(src) == 1000 and src.read(5, 600) == data[5:605]
    assert src.read(990, 100) == data[990:]  # clamped to the end
    out = bytearray(1000)
    src.copy_into(0, memoryview(out))
    assert bytes(out) == data
    with pytest.raises(ValueError, match="outside"):
        src.copy_into(999, memoryview(bytearray(2)))


def test_a_header_pads_to_any_room_it_can_fill() -> None:
    keys = RotatingKeys()
    index = read_index(sealed_file(keys, 50), "f")
    cols = _opened_columns(index, np.ones(len(index), bool), bytes(4 * 50), bytes(4 * 50),
                           bytes(16 * 50))
    bare = file_header(cols, index.blocks, "null")
    for gap in [0, *range(len(PAD_KEY) + 3, 300), 16_383, 16_384, 16_385, 2_000_000]:
        head = file_header(cols, index.blocks, "null", size=len(bare) + gap)
        assert len(head) == len(bare) + gap
        again = read_index(head, "padded")
        assert again.ids == index.ids and again.blocks == index.blocks
    with pytest.raises(ValueError, match="cannot be padded"):
        file_header(cols, index.blocks, "null", size=len(bare) + 3)


def test_a_head_of_the_wrong_size_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    with pytest.raises(ValueError, match="gap"):
        atomic_write(target, HeadLast(4, [b"body"], lambda: b"too long"))
    assert list(tmp_path.iterdir()) == []
    assert atomic_write(target, HeadLast(4, iter([b"bo", b"dy"]), lambda: b"head"))
    assert target.read_bytes() == b"headbody"


def test_the_opener_holds_a_block_not_the_file(tmp_path: Path) -> None:
    """Memory per file is a block's, whatever the file's size: its buffers grow to the
    largest block (with headroom), not to the file."""
    keys = RotatingKeys()
    data = sealed_file(keys, 5000)  # five blocks
    opener = FileOpener(TenantSealer(keys))  # type: ignore[arg-type]
    opening = opener.opening(Bytes(data), "f")
    assert atomic_write(tmp_path / "f", opening.file, durable=False)
    block = max(len(b) for b in SourceFile(data, "f").blocks)
    assert block * 4 < len(data)
    assert block <= opener._block.capacity <= 1.25 * block + 4096
    assert opener._into.capacity <= 1.25 * block + 4096


@pytest.mark.parametrize("codec", ["deflate", "zstandard"])
def test_a_compressed_file_opens_as_the_reference(tmp_path: Path, codec: str) -> None:
    keys = RotatingKeys()
    sealer = TenantSealer(keys)  # type: ignore[arg-type]
    data = sealed_file(keys, 2500, rekey_at=900)
    src = SourceFile(data, "f")
    packed = encode_rows(list(src.index.rows_with(src.raws())), codec).data
    opening = FileOpener(sealer).opening(Bytes(packed), "f", codec)
    assert atomic_write(tmp_path / "f", opening.file, durable=False)
    out = (tmp_path / "f").read_bytes()
    assert read_index(out, "f").codec == codec
    assert list(decode_records(out, "f")) == list(decode_records(reference(keys, data).data, "r"))


def test_a_file_arriving_in_parts_opens_as_the_file_whole(tmp_path: Path) -> None:
    """A bucket copied whole from S3 arrives as the parts of ranged GETs: it is opened as
    they arrive, holding only the parts its blocks still need."""
    keys = RotatingKeys()
    data = sealed_file(keys, 8000, rekey_at=2100, vector_bytes=1024)
    assert written(tmp_path, keys, data, "whole")[0]
    part = 64 << 10
    source = ForwardSource(Parts((data[a:a + part] for a in range(0, len(data), part)),
                                 len(data)))
    held: list[int] = []
    real = source.copy_into

    def copy_into(offset: int, out: memoryview) -> None:
        real(offset, out)
        held.append(sum(len(p) for _, p in source._held))

    source.copy_into = copy_into  # type: ignore[method-assign]
    assert written(tmp_path, keys, source, "parts")[0]
    assert (tmp_path / "parts").read_bytes() == (tmp_path / "whole").read_bytes()
    block = max(len(b) for b in SourceFile(data, "f").blocks)
    # the header's first read (1 MiB), or two blocks, and the parts they straddle
    assert max(held) <= max(1 << 20, 2 * block) + 2 * part < len(data) / 3


def test_parts_are_read_forward_only() -> None:
    data = os.urandom(10_000)
    source = ForwardSource(Parts((data[a:a + 1000] for a in range(0, 10_000, 1000)), 10_000))
    assert source.read(0, 10) == data[:10] and source.read(0, 2500) == data[:2500]
    assert source.read(4200, 10) == data[4200:4210]
    assert source.read(3100, 50) == data[3100:3150]  # one read behind is still held
    assert source.read(9990, 100) == data[9990:]
    with pytest.raises(ValueError, match="let go"):
        source.read(100, 10)
    short = ForwardSource(Parts(iter([data[:500]]), 1000))
    with pytest.raises(ValueError, match="end at 500"):
        short.read(400, 200)


def test_rows_opened_in_batches_are_the_references_records(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A sink that takes records (the engines) gets a bucket's rows opened a batch at a time
    in C (``FileOpener.records``): the reference's records, one by one, in order, a forgotten
    tenant's left out, across batch boundaries."""
    from daemon.snapshot import opened

    keys = RotatingKeys()
    data = sealed_file(keys, 900, rekey_at=500, vector_bytes=256)
    slow = FileOpener(TenantSealer(keys))  # type: ignore[arg-type]
    slow._native = None
    want = list(slow.records(read_rows(data, "f"), "f"))
    gone = 900 - len(want)
    assert 100 < gone < 200  # globex's rows before its key was destroyed
    monkeypatch.setattr(opened, "BATCH_BYTES", 5_000)  # about a dozen rows a batch
    fast = FileOpener(TenantSealer(keys))  # type: ignore[arg-type]
    assert fast.native
    got = list(fast.records(read_rows(data, "f"), "f"))
    assert got == want
    assert {r["tenant"] for r in got} == {"acme", "globex", "initech"}
    assert all(r["vector"] is not None and len(r["vector"]) == 256 for r in got)


def test_a_changed_row_in_a_batch_is_refused() -> None:
    keys = RotatingKeys()
    data = bytearray(sealed_file(keys, 50))
    rows = list(read_rows(bytes(data), "f"))
    raw = bytearray(rows[7].raw)  # type: ignore[arg-type]
    raw[-40] ^= 1  # inside the sealed content
    rows[7].raw = bytes(raw)
    with pytest.raises(IntegrityError, match="does not open"):
        list(FileOpener(TenantSealer(keys)).records(rows, "f"))  # type: ignore[arg-type]
