"""``dir:PATH``: a portable export. ``PATH/<collection>/part-<bucket>.avro`` in
``schemas/snapshot_record.avsc``, sorted by (tenant, id), plus ``PATH/catalog.json``
(collections with their schemas, aliases, tenants).

An export holds every tenant's vectors and documents, so it is private like the repository:
files ``file_mode`` (0600 by default), directories the matching mode (0700), whatever the
umask (``daemon.filemode``)."""

from __future__ import annotations

import errno
import mmap
import multiprocessing
import os
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from daemon.atomic import PRIVATE_FILE_MODE, atomic_write, dir_mode, make_dirs, sync_tree
from daemon.avro_long import avro_long
from daemon.errors import IntegrityError, VecwalError
from daemon.restore.sinks import WrittenState, combine_written
from daemon.rows import Row, content_hash_bytes
from daemon.snapshot.datafile import SourceFile, encode_records, encode_rows, key_prefix
from daemon.snapshot.rowindex import digest_of, tenant_counts
from daemon.spans import HeadLast, Piece


class DirSink:
    parallel_safe = True
    """Each bucket is its own file: worker processes may write buckets side by side."""

    def __init__(self, path: Path, codec: str = "null", workers: int = 1,
                 parallel_min_bytes: int = 256 << 20, file_mode: int = PRIVATE_FILE_MODE) -> None:
        self.path = path
        self.codec = codec
        self.workers = workers
        self.parallel_min_bytes = parallel_min_bytes
        self.file_mode = file_mode
        self.dir_mode = dir_mode(file_mode)
        self.name = f"dir:{path}"

    @property
    def spool_dir(self) -> Path:
        """Where a restore from S3 spools a large bucket file it merges (``restore.executor``):
        beside the output, which has room for it; the files are unnamed, so nothing of them
        ever appears in the directory."""
        return self.path

    def begin(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise VecwalError(f"{self.path} is a file, not a directory",
                              "restore into a new or empty directory; nothing is overwritten")
        if self.path.exists() and any(self.path.iterdir()):
            raise VecwalError(f"{self.path} exists and is not empty",
                              "restore into a new or empty directory; nothing is overwritten")
        with self._writing(self.path):
            make_dirs(self.path, mode=self.dir_mode)

    def check_room(self, expected_bytes: int) -> None:
        """Refuse before anything is written when the file system the export goes to has
        less free space than ``expected_bytes`` (the plan's snapshot bytes: about what a
        restore writes, give or take the log's changes)."""
        at = self.path
        while not at.exists() and at != at.parent:
            at = at.parent
        free = shutil.disk_usage(at).free
        if free < expected_bytes:
            raise VecwalError(
                f"{self.path}: {_size(free)} free, and the restore writes about "
                f"{_size(expected_bytes)} (the snapshot's size)",
                "restore into a directory on a larger file system, or fewer collections or "
                "tenants (--collection, --tenant); --no-space-check tries anyway")

    @contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """An OS error writing the export as an error that names it and what to do."""
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
                hint = (f"free space where {self.path} is, or restore into a directory on a "
                        "larger file system; delete the partial restore first")
            elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
                hint = (f"a part of {self.path} is a file, not a directory: restore into a new "
                        "or empty directory")
            elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                hint = (f"vecwal's user cannot write under {self.path}: restore where it can, "
                        "or change the directory's owner or permissions")
            else:
                hint = f"check the file system {self.path} is on; delete the partial restore"
            raise VecwalError(f"cannot write {path}: {exc.strerror or exc}", hint) from None

    def write_bucket(self, collection: str, bucket: int,
                     records: Iterable[dict[str, Any]]) -> WrittenState:
        enc = encode_records(records, self.codec)
        if enc.records:
            self._write(collection, bucket, enc.chunks)
        return WrittenState(enc.records, enc.digest, enc.tenants)

    def _write(self, collection: str, bucket: int,
               data: bytes | Iterable[Piece] | HeadLast) -> None:
        target = self.path / collection / f"part-{bucket:04d}.avro"
        with self._writing(target):
            make_dirs(self.path / collection, mode=self.dir_mode)
            atomic_write(target, data, durable=False, mode=self.file_mode)

    def write_rows(self, collection: str, bucket: int, rows: Iterable[Row]) -> WrittenState:
        """Rows as bytes: a record the log did not change is copied, not re-encoded."""
        enc = encode_rows(rows, self.codec)
        if enc.records:
            self._write(collection, bucket, enc.chunks)
        return WrittenState(enc.records, enc.digest, enc.tenants)

    def write_file(self, collection: str, bucket: int,
                   data: bytes | Iterable[Piece] | HeadLast,
                   state: WrittenState) -> WrittenState:
        """A data file in this sink's format: a snapshot's the log did not touch, or one
        written for this bucket (``restore.runs``)."""
        self._write(collection, bucket, data)
        return state

    def write_catalog(self, catalog: dict[str, Any]) -> None:
        with self._writing(self.path / "catalog.json"):
            atomic_write(self.path / "catalog.json",
                         orjson.dumps(catalog, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS),
                         mode=self.file_mode)

    def finish(self) -> None:
        """Every file durable at once: written without waiting for the disk, each file's
        write-back overlapped the buckets after it."""
        with self._writing(self.path):
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


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def read_back_file(f: Path) -> WrittenState:
    """What one restored file holds, re-read from its bytes (see ``DirSink.read_back``):
    the digest and per-tenant counts are made from the re-hashed bytes, not the index."""
    where = str(f)
    src = SourceFile(_mapped(f), where)  # checks every block's framing against the index
    index = src.index
    if index.deleted.any():
        i = int(np.flatnonzero(index.deleted)[0])
        raise IntegrityError(f"{_row_name(f, index.key(i))} is a tombstone",
                             "a restore never writes one: re-run it")
    coll = key_prefix(f.parent.name, "", "")[:-2]  # the collection field alone
    tenant_fields = [key_prefix("", t, "")[1:-1] for t in index.tenants]
    hashes = bytearray()
    hash_bytes = content_hash_bytes
    for i, (raw, clen, t, rid) in enumerate(zip(src.raws(), index.content_lens.tolist(),
                                                index.tenant_ix.tolist(), index.ids,
                                                strict=True)):
        hashes += hash_bytes(raw[:clen])
        rb = rid.encode()
        prefix = coll + tenant_fields[t] + avro_long(len(rb)) + rb
        if raw[:len(prefix)] != prefix:
            raise IntegrityError(f"{_row_name(f, index.key(i))}: its bytes disagree with the "
                                 "row index", "re-run the restore")
        if i % SPOT_CHECK == 0:
            _spot_check(index.row(i, raw), f.parent.name, f)
    digest = digest_of(np.frombuffer(bytes(hashes), "<u4").reshape(-1, 4))
    tenants = tenant_counts(index, ~index.deleted)  # every row: tombstones were refused
    return WrittenState(len(index), f"{digest:032x}", dict(sorted(tenants.items())))


def _mapped(f: Path) -> bytes | memoryview:
    """The file's bytes, mapped rather than read into a copy."""
    with f.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return b""
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_SEQUENTIAL)
    return memoryview(mapped)


SPOT_CHECK = 64


def _row_name(f: Path, key: tuple[str, str]) -> str:
    return f"{f}: record {key[1]!r} of tenant {key[0]!r}"


def _spot_check(row: Row, collection: str, f: Path) -> None:
    """Decode the record in full with the Avro reader: bytes that only look right fail."""
    where = _row_name(f, row.key)
    try:
        rec = row.record()
    except Exception as exc:  # damaged bytes fail in many ways: each is a failed check
        raise IntegrityError(f"{where} does not decode: {type(exc).__name__}: {exc}",
                             "re-run the restore") from None
    if (rec["collection"], rec["tenant"], rec["id"]) != (collection, *row.key):
        raise IntegrityError(f"{where} does not decode to itself", "re-run the restore")
