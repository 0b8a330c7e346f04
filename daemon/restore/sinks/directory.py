"""``dir:PATH``: a portable export. ``PATH/<collection>/part-<bucket>.avro`` in
``schemas/snapshot_record.avsc``, sorted by (tenant, id), plus ``PATH/catalog.json``
(collections with their schemas, aliases, tenants)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from daemon.atomic import atomic_write, make_dirs, sync_tree
from daemon.errors import IntegrityError, VecwalError
from daemon.restore.sinks import WrittenState, combine_written
from daemon.snapshot.datafile import (
    Row,
    StateDigest,
    content_hash,
    encode_records,
    encode_rows,
    key_prefix,
    read_rows,
)


class DirSink:
    parallel_safe = True
    """Each bucket is its own file: worker processes may write buckets side by side."""

    def __init__(self, path: Path, codec: str = "null", workers: int = 1,
                 parallel_min_bytes: int = 256 << 20) -> None:
        self.path = path
        self.codec = codec
        self.workers = workers
        self.parallel_min_bytes = parallel_min_bytes
        self.name = f"dir:{path}"

    def begin(self) -> None:
        if self.path.exists() and any(self.path.iterdir()):
            raise VecwalError(f"{self.path} exists and is not empty",
                              "restore into a new or empty directory; nothing is overwritten")
        self.path.mkdir(parents=True, exist_ok=True)

    def write_bucket(self, collection: str, bucket: int,
                     records: Iterable[dict[str, Any]]) -> WrittenState:
        enc = encode_records(records, self.codec)
        if enc.records:
            make_dirs(self.path / collection)
            atomic_write(self.path / collection / f"part-{bucket:04d}.avro", enc.chunks,
                         durable=False)
        return WrittenState(enc.records, enc.digest, enc.tenants)

    def write_rows(self, collection: str, bucket: int, rows: Iterable[Row]) -> WrittenState:
        """Rows as bytes: a record the log did not change is copied, not re-encoded."""
        enc = encode_rows(rows, self.codec)
        if enc.records:
            make_dirs(self.path / collection)
            atomic_write(self.path / collection / f"part-{bucket:04d}.avro", enc.chunks,
                         durable=False)
        return WrittenState(enc.records, enc.digest, enc.tenants)

    def write_file(self, collection: str, bucket: int,
                   data: bytes | Sequence[bytes | memoryview],
                   state: WrittenState) -> WrittenState:
        """A data file in this sink's format: a snapshot's the log did not touch, or one
        written for this bucket (``restore.runs``)."""
        make_dirs(self.path / collection)
        atomic_write(self.path / collection / f"part-{bucket:04d}.avro", data, durable=False)
        return state

    def write_catalog(self, catalog: dict[str, Any]) -> None:
        atomic_write(self.path / "catalog.json",
                     orjson.dumps(catalog, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    def finish(self) -> None:
        """Every file durable at once: written without waiting for the disk, each file's
        write-back overlapped the buckets after it."""
        sync_tree(self.path)

    def read_back(self) -> dict[str, WrittenState]:
        """Re-read every file: each record's content bytes re-hashed (the digest is made of
        those hashes), its collection, tenant and id read from its own bytes and matched
        with the row index, and one record in ``SPOT_CHECK`` decoded in full by the Avro
        reader, so a file that only looks right fails. With ``workers`` > 1 and much to
        read, files are read in that many worker processes."""
        files = [f for d in sorted(p for p in self.path.iterdir() if p.is_dir())
                 for f in sorted(d.glob("part-*.avro"))]
        if self.workers > 1 and len(files) > 1 and \
                sum(f.stat().st_size for f in files) >= self.parallel_min_bytes:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(self.workers, len(files)), mp_context=ctx) as pool:
                parts = list(pool.map(read_back_file, files))
        else:
            parts = [read_back_file(f) for f in files]
        out: dict[str, WrittenState] = {}
        for f, part in zip(files, parts, strict=True):
            coll = f.parent.name
            have = out.get(coll, WrittenState())
            out[coll] = combine_written([have, part])
        return out


def read_back_file(f: Path) -> WrittenState:
    """What one restored file holds, re-read from its bytes (see ``DirSink.read_back``)."""
    digest = StateDigest()
    tenants: dict[str, int] = {}
    for i, row in enumerate(read_rows(f.read_bytes(), str(f))):
        _check_row(row, f.parent.name, f, spot=i % SPOT_CHECK == 0)
        digest.add_hash(content_hash(row.raw[:row.content_len]))  # type: ignore[index]
        tenants[row.key[0]] = tenants.get(row.key[0], 0) + 1
    return WrittenState(digest.count, digest.hex, dict(sorted(tenants.items())))


SPOT_CHECK = 64


def _check_row(row: Row, collection: str, f: Path, spot: bool) -> None:
    assert row.raw is not None
    where = f"{f}: record {row.key[1]!r} of tenant {row.key[0]!r}"
    if row.deleted:
        raise IntegrityError(f"{where} is a tombstone", "a restore never writes one: re-run it")
    prefix = key_prefix(collection, *row.key)
    if row.raw[:len(prefix)] != prefix:
        raise IntegrityError(f"{where}: its bytes disagree with the row index", "re-run the restore")
    try:
        rec = row.record() if spot else None
    except Exception as exc:  # damaged bytes fail in many ways: each is a failed check
        raise IntegrityError(f"{where} does not decode: {type(exc).__name__}: {exc}",
                             "re-run the restore") from None
    if rec is not None and (rec["collection"], rec["tenant"], rec["id"]) != (collection, *row.key):
        raise IntegrityError(f"{where} does not decode to itself", "re-run the restore")
