"""One bucket's file written by runs: the bucket's base file copied as long slices of its
blocks, with the rows that deltas and the log changed put in between. Restore writes each
bucket this way for the directory sink, and compaction when it rewrites a bucket's base.

A bucket at the target is its base file (sorted by key) with the bucket's later rows laid
over it: its delta files in order, then the log window's winning changes (``overlay``), the
greater version winning per key, tombstones removing, and drops removing records written at
or before the drop. ``bucket_rows`` in the executor does that row by row. Here the same
result is built from the base's row index instead:

1. each overlaid key is found in the base by bisecting ids within its tenant's range;
2. a ``keep`` mask over the base rows loses every row a newer change replaces or deletes,
   every row a drop removed, and every tenant out of scope (array operations, per tenant);
3. the output's bytes are the runs of kept base rows (slices of the base's blocks) with the
   live changed rows' bytes put in at their places, and its row index is the base's columns
   masked by ``keep`` with the changed rows inserted (``merged_columns``: whole-array
   operations).

So a restore costs per changed row and per run, not per record. Which rows survive is exactly
``bucket_rows``'s answer (``tests/unit/test_runs.py`` checks both ways agree)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from daemon.rows import Row
from daemon.snapshot.datafile import DataFileWriter, EncodedFile, SourceFile, read_rows
from daemon.snapshot.manifest import DataFile
from daemon.snapshot.rowindex import merged_columns
from daemon.snapshot.state import is_live, overlay
from daemon.spans import RangeSource


def write_bucket_runs(files: list[DataFile], datas: Sequence[bytes | memoryview | RangeSource],
                      changes: Iterable[Row],
                      drop: Callable[[str], int | None] | None,
                      tenants: frozenset[str] | None, codec: str = "null") -> EncodedFile:
    """The bucket's live records as one data file: ``files`` (its base and deltas, with
    their bytes ``datas``) with ``changes`` laid over them (see the module's docstring).
    The base may be a ``RangeSource`` (an encrypted file opened as it is copied out): the
    output's runs are then spans of it, produced when the file is written."""
    src: SourceFile | None = None
    later: list[Iterable[Row]] = []
    for f, data in zip(files, datas, strict=True):
        if f.kind == "base":
            src = SourceFile(data, f.path)
        elif isinstance(data, (bytes, memoryview)):
            later.append(read_rows(data, f.path))
        else:
            raise TypeError(f"{f.path}: a delta file is read row by row, not opened as copied")
    later.append(changes)
    over = overlay(later)
    out = DataFileWriter(codec)
    if src is None:
        for _, row in sorted(over.items()):
            if _in_scope(row, drop, tenants):
                out.add(row)
        return out.finish()

    index = src.index
    keep = ~index.deleted
    inserts: list[tuple[int, tuple[str, str], Row]] = []
    for key, row in over.items():
        pos, found = index.find(key)
        if found:
            if row.version < index.version(pos):
                continue  # the base is newer: the change lost
            keep[pos] = False
        if _in_scope(row, drop, tenants):
            inserts.append((pos, key, row))
    for tenant, (lo, hi) in index.tenant_ranges.items():
        if tenants is not None and tenant not in tenants:
            keep[lo:hi] = False
        elif drop is not None and (dropped := drop(tenant)) is not None:
            keep[lo:hi] &= index.ts[lo:hi] > dropped
    inserts.sort(key=lambda ins: (ins[0], ins[1]))

    edges = np.flatnonzero(np.diff(keep.astype(np.int8), prepend=0, append=0)).tolist()
    starts, ends = edges[0::2], edges[1::2]
    r = 0

    def copy_kept(lo: int, hi: int) -> None:
        """The kept base rows in [lo, hi), run by run, as block slices."""
        nonlocal r
        while r < len(starts) and starts[r] < hi:
            a, b = max(starts[r], lo), min(ends[r], hi)
            for piece, count in src.pieces(a, b):
                out.put(piece, count)
            if ends[r] > hi:
                return
            r += 1

    at = 0
    for pos, _, row in inserts:
        copy_kept(at, pos)
        out.put(row.raw, 1)  # type: ignore[arg-type]
        at = pos
    copy_kept(at, len(index))
    return out.finish(merged_columns(index, keep, [ins[2] for ins in inserts],
                                     [ins[0] for ins in inserts]))


def _in_scope(row: Row, drop: Callable[[str], int | None] | None,
              tenants: frozenset[str] | None) -> bool:
    return is_live(row, drop) and (tenants is None or row.key[0] in tenants)
