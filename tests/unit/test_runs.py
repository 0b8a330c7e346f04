"""A bucket written by runs (``restore.runs``) equals the bucket merged row by row
(``executor.bucket_rows``): same records, same bytes, same index, same counts and digest,
whatever the base, deltas, log changes, drops and tenant scope."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.objectstore.sealed import Header, OpenedObject, seal
from daemon.restore.executor import bucket_rows
from daemon.rows import Row
from daemon.snapshot.datafile import BLOCK_RECORDS, decode_records, encode_rows, read_index, read_rows
from daemon.snapshot.manifest import BucketState, DataFile
from daemon.snapshot.runs import write_bucket_runs
from daemon.snapshot.state import BucketChanges, DropTimes

TENANTS = ["", "a", "b", "é", "z"]


def rec(tenant: str, rid: str, ts: int, offset: int, deleted: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "collection": "c", "tenant": tenant, "id": rid, "dimension": 2,
        "vector": bytes([offset % 256]) * 8, "sparse_indices": None, "sparse_values": None,
        "document": f"{rid}@{offset}", "document_is_json": False, "metadata": None,
        "acl": [tenant], "embedding_model": None, "source": None, "event_id": None,
        "event_time": None, "extra": None, "last_offset": offset, "last_timestamp": ts,
        "last_partition": offset % 3, "last_topic": "t" if offset % 2 else "u"}
    if deleted:
        out["deleted"] = True
    return out


keys = st.tuples(st.sampled_from(TENANTS), st.text("abcdé", max_size=4))


def rows_of(entries: list[tuple[tuple[str, str], int, bool]], offset0: int) -> list[Row]:
    """Sorted rows, one per key (the last entry of a key wins)."""
    by_key = {}
    for n, (key, ts, dead) in enumerate(entries):
        by_key[key] = Row.of(rec(key[0], key[1], ts, offset0 + n, dead)).without_record()
    return [by_key[k] for k in sorted(by_key)]


def opened_object(data: bytes, chunk_log2: int = 10) -> OpenedObject:
    key = bytes(range(32))
    sealed = seal(data, "base", key, b"wrapped", chunk_log2)
    return OpenedObject(bytes(sealed), "base", key, Header.parse(bytes(sealed[:64]), "base"))


def data_file(path: str, kind: str, enc: Any) -> DataFile:
    return DataFile(path, 0, enc.records, enc.size, "", enc.digest, enc.tenants,
                    enc.header_bytes, enc.rows, kind)


entries = st.lists(st.tuples(keys, st.integers(0, 20), st.booleans()), max_size=60)


@settings(max_examples=300, deadline=None)
@given(base=st.lists(st.tuples(keys, st.integers(0, 20)), max_size=3000),
       deltas=st.lists(entries, max_size=3), changes=entries,
       drop=st.none() | st.tuples(st.none() | st.integers(0, 20),
                                  st.dictionaries(st.sampled_from(TENANTS), st.integers(0, 20))),
       scope=st.none() | st.frozensets(st.sampled_from(TENANTS)),
       codec=st.sampled_from(["null", "deflate"]), with_base=st.booleans(),
       opened=st.booleans())
def test_runs_equal_the_row_by_row_merge(base: list[tuple[tuple[str, str], int]],
                                         deltas: list[list[tuple[tuple[str, str], int, bool]]],
                                         changes: list[tuple[tuple[str, str], int, bool]],
                                         drop: tuple[int | None, dict[str, int]] | None,
                                         scope: frozenset[str] | None, codec: str,
                                         with_base: bool, opened: bool) -> None:
    """``opened``: the base is an encrypted file opened as it is copied out (small chunks,
    so runs and framing cross chunk edges); its runs are then spans."""
    files: list[DataFile] = []
    datas: list[Any] = []
    if with_base:
        enc = encode_rows(rows_of([(k, ts, False) for k, ts in base], 0), codec)
        files.append(data_file("base", "base", enc))
        datas.append(opened_object(enc.data) if opened else enc.data)
    for n, d in enumerate(deltas):
        enc = encode_rows(rows_of(d, 10_000 * (n + 1)), codec)
        files.append(data_file(f"delta{n}", "delta", enc))
        datas.append(enc.data)
    bucket = BucketState(0, 0, "", {}, files[0] if with_base else None,
                         files[1:] if with_base else files)
    log = BucketChanges()
    for row in rows_of(changes, 100_000):
        log.add(row)
    drops = DropTimes(*drop) if drop else None

    plain = [d if isinstance(d, bytes) else d.read(0, len(d)) for d in datas]
    want = encode_rows(bucket_rows(bucket, plain, log, drops, scope))
    got = write_bucket_runs(bucket.files, datas, log.rows().values(), drops, scope)
    assert (got.records, got.rows, got.digest, got.tenants) == \
        (want.records, want.rows, want.digest, want.tenants)
    assert list(decode_records(got.data, "got")) == list(decode_records(want.data, "want"))
    got_rows = [(r.key, r.version, bytes(r.raw or b""), r.content_len, r.hash, r.deleted)
                for r in read_rows(got.data, "got")]
    want_rows = [(r.key, r.version, bytes(r.raw or b""), r.content_len, r.hash, r.deleted)
                 for r in read_rows(want.data, "want")]
    assert got_rows == want_rows


def test_unchanged_rows_are_copied_as_runs_in_blocks_of_about_the_usual_size() -> None:
    base = rows_of([(("a", f"{i:05d}"), 1, False) for i in range(5 * BLOCK_RECORDS)], 0)
    enc = encode_rows(base)
    bucket = BucketState(0, 0, "", {}, data_file("base", "base", enc))
    log = BucketChanges()
    for row in rows_of([(("a", f"{i:05d}"), 5, i % 7 == 0) for i in range(0, 5000, 97)], 9):
        log.add(row)
    got = write_bucket_runs(bucket.files, [enc.data], log.rows().values(), None, None)
    index = read_index(got.data, "got")
    assert got.records == 5 * BLOCK_RECORDS - sum(1 for i in range(0, 5000, 97) if i % 7 == 0)
    assert all(BLOCK_RECORDS <= n < 2 * BLOCK_RECORDS for n in index.blocks[:-1])


def test_a_damaged_base_is_refused_not_copied() -> None:
    from daemon.errors import IntegrityError

    enc = encode_rows(rows_of([(("a", f"{i:05d}"), 1, False) for i in range(3000)], 0))
    data = bytearray(enc.data)
    data[enc.header_bytes] ^= 0x02  # the first block's record count
    bucket = BucketState(0, 0, "", {}, data_file("base", "base", enc))
    with pytest.raises(IntegrityError, match="record count"):
        write_bucket_runs(bucket.files, [bytes(data)], (), None, None)
