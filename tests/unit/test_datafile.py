"""Indexed data files: what the row index says agrees with the Avro bytes, byte for byte."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.errors import IntegrityError
from daemon.rows import SCHEMA_TEXT, Row, content_hash
from daemon.snapshot.datafile import (
    decode_records,
    encode_rows,
    key_prefix,
    leading_strings,
    read_index,
    read_rows,
)

CONTENT = fastavro.parse_schema({
    "type": "record", "name": "C",
    "fields": json.loads(SCHEMA_TEXT)["fields"][:-4]})

texts = st.text(max_size=12)
records = st.fixed_dictionaries({
    "collection": st.sampled_from(["docs", "img"]), "tenant": texts, "id": texts,
    "dimension": st.none() | st.integers(1, 8),
    "vector": st.none() | st.binary(max_size=64),
    "sparse_indices": st.none(), "sparse_values": st.none(),
    "document": st.none() | texts, "document_is_json": st.booleans(),
    "metadata": st.none() | st.just('{"a":1}'),
    "acl": st.none() | st.lists(texts, max_size=3),
    "embedding_model": st.none() | st.fixed_dictionaries(
        {"name": texts, "version": st.none() | texts}),
    "source": st.none() | texts, "event_id": st.none(), "event_time": st.none(),
    "extra": st.none(),
    "last_offset": st.integers(0, 2**62), "last_timestamp": st.integers(-(2**40), 2**62),
    "last_partition": st.integers(0, 2**31 - 1), "last_topic": st.text(min_size=1, max_size=300),
})


def content_bytes(rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, CONTENT, rec)
    return buf.getvalue()


@settings(max_examples=200, deadline=None)
@given(rec=records)
def test_row_content_is_the_encoding_of_every_field_but_the_version(rec: dict[str, Any]) -> None:
    row = Row.of(rec)
    assert row.raw is not None
    assert bytes(row.raw[:row.content_len]) == content_bytes(rec)
    assert row.hash == content_hash(content_bytes(rec))
    assert leading_strings(row.raw, 3) == [rec["collection"], rec["tenant"], rec["id"]]
    assert bytes(row.raw).startswith(key_prefix(rec["collection"], rec["tenant"], rec["id"]))
    decoded = Row(row.key, row.version, row.raw, row.content_len, row.hash, False)
    assert decoded.record() == rec  # decoded from the bytes: Row.of keeps the dict


@settings(max_examples=40, deadline=None)
@given(recs=st.lists(records, max_size=2500), codec=st.sampled_from(["null", "deflate",
                                                                      "zstandard"]))
def test_a_file_reads_back_as_written_by_the_index_and_by_any_avro_reader(
        recs: list[dict[str, Any]], codec: str) -> None:
    recs = sorted({(r["tenant"], r["id"]): r for r in recs}.values(),
                  key=lambda r: (r["tenant"], r["id"]))
    rows = [Row.of(r) for r in recs]
    enc = encode_rows(rows, codec)
    assert enc.data.startswith(b"Obj\x01") and enc.size == len(enc.data) >= enc.header_bytes
    assert enc.records == enc.rows == len(recs)
    assert list(decode_records(enc.data, "f")) == recs
    index = read_index(enc.data[:enc.header_bytes], "f")
    assert [r.key for r in index.index_rows()] == [r.key for r in rows]
    again = list(read_rows(enc.data, "f"))
    assert [bytes(r.raw) for r in again] == [bytes(r.raw) for r in rows]  # type: ignore[arg-type]
    assert [(r.version, r.hash, r.content_len) for r in again] == \
        [(r.version, r.hash, r.content_len) for r in rows]
    # Copied rows make the same file as the records they came from.
    assert encode_rows(again, codec).data == enc.data


def test_tombstones_are_marked_in_the_index_and_not_counted() -> None:
    base = {"collection": "docs", "tenant": "t", "dimension": None, "vector": None,
            "sparse_indices": None, "sparse_values": None, "document": None,
            "document_is_json": False, "metadata": None, "acl": None, "embedding_model": None,
            "source": None, "event_id": None, "event_time": None, "extra": None,
            "last_offset": 1, "last_timestamp": 2, "last_partition": 0, "last_topic": "x"}
    enc = encode_rows([dict(base, id="a"), dict(base, id="b", deleted=True)])
    assert (enc.rows, enc.records, enc.tenants) == (2, 1, {"t": 1})
    assert [r.deleted for r in read_rows(enc.data, "f")] == [False, True]


def test_a_truncated_file_is_refused() -> None:
    rec = {"collection": "docs", "tenant": "t", "id": "a", "dimension": None,
           "vector": b"\x00" * 4000, "sparse_indices": None, "sparse_values": None,
           "document": None, "document_is_json": False, "metadata": None, "acl": None,
           "embedding_model": None, "source": None, "event_id": None, "event_time": None,
           "extra": None, "last_offset": 1, "last_timestamp": 2, "last_partition": 0,
           "last_topic": "x"}
    data = encode_rows([rec]).data
    with pytest.raises(IntegrityError, match="ends inside"):
        list(read_rows(data[:-100], "f"))
    with pytest.raises(IntegrityError, match="ends inside its header"):
        read_index(data[:50], "f")


def test_a_batch_of_non_durable_writes_is_synced_together(tmp_path: Path) -> None:
    from daemon.atomic import atomic_write, is_temp_name, sync_tree

    root = tmp_path / "out"
    (root / "docs").mkdir(parents=True)
    for i in range(3):
        atomic_write(root / "docs" / f"part-{i}.avro", [b"abc", memoryview(b"def")],
                     durable=False)
    sync_tree(root)
    files = sorted(p.name for p in (root / "docs").iterdir())
    assert files == ["part-0.avro", "part-1.avro", "part-2.avro"]
    assert not any(is_temp_name(n) for n in files)
    assert (root / "docs" / "part-1.avro").read_bytes() == b"abcdef"


@settings(max_examples=50, deadline=None)
@given(rec=records)
def test_record_hash_needs_no_version_and_equals_the_row_hash(rec: dict[str, Any]) -> None:
    from daemon.rows import record_hash

    content = {k: v for k, v in rec.items() if not k.startswith("last_")}
    assert record_hash(content) == Row.of(rec).hash


@given(n=st.integers(-(2**63), 2**63 - 1) | st.integers(-200, 200))
def test_avro_long_is_avros_encoding_of_a_long(n: int) -> None:
    from daemon.avro_long import avro_long

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    assert avro_long(n) == buf.getvalue()
