"""Folding one change-log segment into snapshot rows: the fastavro path (decode every record,
``record_from_event``, ``Row.of``) against the scanner (``daemon/changelog/scan.py``: walk
the bytes, splice each row). Microseconds per event, median of ``--rounds`` runs, on
``--events`` upserts of ``--dim`` dimensions built like bench_restore's ``Pool``.

    python -m tests.bench.bench_fold [--events 5000] [--dim 768] [--rounds 5] [--codec null]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from daemon.changelog.keys import SegmentKey
from daemon.changelog.scan import scan_segment
from daemon.changelog.segment import encode_segment, read_records
from daemon.rows import Row, record_from_event
from tests.bench.restore_repo import T0, Pool

TOPIC = "ingest"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--codec", default="null")
    args = ap.parse_args(argv)
    pool = Pool(args.dim)
    n = args.events
    start = 1_000_000
    recs = [pool.change(i, 1, "upsert", start + i, T0 + i // 4) for i in range(n)]
    key = SegmentKey(TOPIC, 0, start, start + n)
    data = encode_segment(key, recs, args.codec)

    def old() -> list[Row]:
        return [Row.of(record_from_event(ev, TOPIC, 0)).without_record()
                for ev in read_records(key, data)]

    def new() -> list[Row]:
        return [ev.row(TOPIC, 0) for ev in scan_segment(key, data)]

    def decode_only() -> object:
        return read_records(key, data)

    def scan_only() -> object:
        return scan_segment(key, data)

    def per_event(fn: Callable[[], object]) -> float:
        times = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
        return round(statistics.median(times) / n * 1e6, 2)

    a, b = old(), new()
    assert [(r.raw, r.hash) for r in a] == [(bytes(r.raw), r.hash) for r in b]  # type: ignore[arg-type]
    out = {"events": n, "dim": args.dim, "codec": args.codec, "segment_bytes": len(data),
           "us_per_event": {"old_decode_record_from_event_row_of": per_event(old),
                            "new_scan_splice": per_event(new),
                            "old_decode_only": per_event(decode_only),
                            "new_scan_only": per_event(scan_only)}}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
