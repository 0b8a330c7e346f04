"""What opening per-tenant sealed rows costs in C, part by part, on one core.

    python -m tests.bench.bench_tenant_open [--rows 600] [--dim 768] [--repeats 300]

One block of snapshot rows sealed under one tenant's key (the restore benchmark's record
shape: a 768-dim vector, a short document, metadata and an ACL, about 3.4 KB), then, per
row, the medians of 7 timings of:

- ``open_rows``, the rows' AES-SIV checked 8 at a time (``siv_lanes.h``), as restores run it;
- ``open_rows`` with OpenSSL's AES-SIV one row at a time (``set_lanes(False)``): the baseline;
- one AES-256-CTR call over the whole block (the decryption half of opening, at OpenSSL's
  best), XXH3-128 of the block (the row index's hashes) and a copy of the block;
- what a sink that takes records (the engines) is given: the same rows in the clear decoded
  (the plain baseline), the sealed rows decoded and opened one by one in Python, and opened
  a batch at a time in C then decoded (``FileOpener.records``).

What is left of ``open_rows`` after CTR, hashing and copying is the CMAC half (S2V) and the
rows' walk. Figures as JSON on stdout; read them in docs/performance.md (per-tenant keys)."""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import fastavro
import numpy as np
import xxhash
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from daemon.changelog.segment import RECORD_SCHEMA
from daemon.keys.sealing import TenantSealer
from daemon.rows import SNAPSHOT_SCHEMA, Row
from daemon.snapshot.opened import FileOpener
from tests.unit.test_tenantseal import C, FixedKeys, snapshot_record


def blocks(rows: int, dim: int) -> tuple[list[Row], list[Row], FixedKeys]:
    """The rows sealed, the same rows in the clear, and the keys."""
    keys = FixedKeys()
    sealer = TenantSealer(keys)  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    raws, plains = [], []
    for i in range(rows):
        rec: dict[str, Any] = {f["name"]: None for f in RECORD_SCHEMA["fields"]}
        rec.update(offset=i, timestamp=2, op="upsert", collection="docs", tenant="acme",
                   id=f"doc-{i:08d}", document_is_json=False,
                   vector=rng.random(dim, dtype=np.float32).tobytes(),
                   document="some document text " * 10, acl=["group:eng", "user:42"],
                   metadata='{"k": 1, "lang": "en"}')
        plains.append(Row.of(snapshot_record(dict(rec), i)).without_record())
        raws.append(Row.of(snapshot_record(sealer.seal(rec), i)).without_record())
    return raws, plains, keys


def per_row_us(work: Callable[[], object], rows: int, repeats: int) -> float:
    timings = []
    for _ in range(7):
        began = time.perf_counter()
        for _ in range(repeats):
            work()
        timings.append((time.perf_counter() - began) / repeats / rows * 1e6)
    return round(statistics.median(timings), 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    if C is None:
        raise SystemExit("the C sealer is not built (OpenSSL headers): nothing to measure")
    sealed_rows, plain_rows, keys = blocks(args.rows, args.dim)
    block = b"".join(row.raw for row in sealed_rows)  # type: ignore[misc]
    into = bytearray(len(block))
    found: dict[bytes, bytes | None] = {}
    resolve = keys.row_resolver()
    n, r = args.rows, args.repeats
    out: dict[str, Any] = {"rows": n, "row_bytes": len(block) // n}
    was = C.set_lanes(True)
    out["open_rows_lanes_us"] = per_row_us(lambda: C.open_rows(block, into, found, resolve), n, r)
    C.set_lanes(False)
    out["open_rows_openssl_us"] = per_row_us(lambda: C.open_rows(block, into, found, resolve),
                                             n, max(1, r // 4))
    C.set_lanes(was)
    key, iv = os.urandom(32), os.urandom(16)
    out["ctr_block_us"] = per_row_us(
        lambda: Cipher(algorithms.AES(key), modes.CTR(iv)).decryptor().update(block), n, r)
    out["xxh3_128_block_us"] = per_row_us(lambda: xxhash.xxh3_128_digest(block), n, r)
    view = memoryview(block)
    out["copy_block_us"] = per_row_us(lambda: bytearray(view), n, r)
    # What a sink that takes records (the engines) is given, per row: the clear rows decoded
    # (a plain repository), the sealed rows decoded and opened one by one in Python (before
    # 2026-12-07), and opened a batch at a time in C, then decoded (FileOpener.records).
    sealer = TenantSealer(keys)  # type: ignore[arg-type]
    opener = FileOpener(sealer)
    reps = max(1, r // 30)
    out["records_plain_us"] = per_row_us(
        lambda: [fastavro.schemaless_reader(io.BytesIO(row.raw), SNAPSHOT_SCHEMA, None)
                 for row in plain_rows], n, reps)
    out["records_sealed_python_us"] = per_row_us(
        lambda: list(sealer.open_all(fastavro.schemaless_reader(
            io.BytesIO(row.raw), SNAPSHOT_SCHEMA, None) for row in sealed_rows)), n, reps)
    out["records_sealed_c_batches_us"] = per_row_us(
        lambda: list(opener.records(sealed_rows, "b")), n, reps)
    assert list(opener.records(sealed_rows, "b")) == list(sealer.open_all(
        row.record() for row in sealed_rows))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
