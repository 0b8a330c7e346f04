"""``dir:PATH``: a portable export. ``PATH/<collection>/part-<bucket>.avro`` in
``schemas/snapshot_record.avsc``, sorted by (tenant, id), plus ``PATH/catalog.json``
(collections with their schemas, aliases, tenants)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from daemon.atomic import atomic_write, make_dirs
from daemon.errors import IntegrityError, VecwalError
from daemon.restore.sinks import WrittenState
from daemon.snapshot.datafile import (
    Row,
    StateDigest,
    content_hash,
    encode_records,
    encode_rows,
    leading_strings,
    read_rows,
)


class DirSink:
    parallel_safe = True
    """Each bucket is its own file: worker processes may write buckets side by side."""

    def __init__(self, path: Path, codec: str = "null") -> None:
        self.path = path
        self.codec = codec
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
            atomic_write(self.path / collection / f"part-{bucket:04d}.avro", enc.chunks)
        return WrittenState(enc.records, enc.digest, enc.tenants)

    def write_rows(self, collection: str, bucket: int, rows: Iterable[Row]) -> WrittenState:
        """Rows as bytes: a record the log did not change is copied, not re-encoded."""
        enc = encode_rows(rows, self.codec)
        if enc.records:
            make_dirs(self.path / collection)
            atomic_write(self.path / collection / f"part-{bucket:04d}.avro", enc.chunks)
        return WrittenState(enc.records, enc.digest, enc.tenants)

    def write_file(self, collection: str, bucket: int, data: bytes,
                   state: WrittenState) -> WrittenState:
        """A snapshot data file the log did not touch: already this sink's format."""
        make_dirs(self.path / collection)
        atomic_write(self.path / collection / f"part-{bucket:04d}.avro", data)
        return state

    def write_catalog(self, catalog: dict[str, Any]) -> None:
        atomic_write(self.path / "catalog.json",
                     orjson.dumps(catalog, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    def finish(self) -> None:
        pass

    def read_back(self) -> dict[str, WrittenState]:
        """Re-read every file: each record's content bytes re-hashed (the digest is made of
        those hashes), its collection, tenant and id read from its own bytes and matched
        with the row index, and one record in ``SPOT_CHECK`` decoded in full by the Avro
        reader, so a file that only looks right fails."""
        out: dict[str, WrittenState] = {}
        for coll_dir in sorted(p for p in self.path.iterdir() if p.is_dir()):
            digest = StateDigest()
            tenants: dict[str, int] = {}
            for f in sorted(coll_dir.glob("part-*.avro")):
                for i, row in enumerate(read_rows(f.read_bytes(), str(f))):
                    _check_row(row, coll_dir.name, f, spot=i % SPOT_CHECK == 0)
                    digest.add_hash(content_hash(row.raw[:row.content_len]))  # type: ignore[index]
                    tenants[row.key[0]] = tenants.get(row.key[0], 0) + 1
            out[coll_dir.name] = WrittenState(digest.count, digest.hex, dict(sorted(tenants.items())))
        return out


SPOT_CHECK = 64


def _check_row(row: Row, collection: str, f: Path, spot: bool) -> None:
    assert row.raw is not None
    where = f"{f}: record {row.key[1]!r} of tenant {row.key[0]!r}"
    if row.deleted:
        raise IntegrityError(f"{where} is a tombstone", "a restore never writes one: re-run it")
    if leading_strings(row.raw, 3) != [collection, *row.key]:
        raise IntegrityError(f"{where}: its bytes disagree with the row index", "re-run the restore")
    if spot:
        rec = row.record()
        if (rec["collection"], rec["tenant"], rec["id"]) != (collection, *row.key):
            raise IntegrityError(f"{where} does not decode to itself", "re-run the restore")
