"""``dir:PATH``: a portable export. ``PATH/<collection>/part-<bucket>.avro`` in
``schemas/snapshot_record.avsc``, sorted by (tenant, id), plus ``PATH/catalog.json``
(collections with their schemas, aliases, tenants)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from daemon.atomic import atomic_write, make_dirs
from daemon.errors import VecwalError
from daemon.restore.sinks import WrittenState
from daemon.snapshot.datafile import StateDigest, decode_records, encode_records


class DirSink:
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
            atomic_write(self.path / collection / f"part-{bucket:04d}.avro", enc.data)
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
        out: dict[str, WrittenState] = {}
        for coll_dir in sorted(p for p in self.path.iterdir() if p.is_dir()):
            digest = StateDigest()
            tenants: dict[str, int] = {}
            for f in sorted(coll_dir.glob("part-*.avro")):
                for rec in decode_records(f.read_bytes(), str(f)):
                    digest.add(rec)
                    tenants[rec["tenant"]] = tenants.get(rec["tenant"], 0) + 1
            out[coll_dir.name] = WrittenState(digest.count, digest.hex, dict(sorted(tenants.items())))
        return out
