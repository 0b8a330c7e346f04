"""Capture's per-event parsing and encoding, without Kafka: the native event codec
(``encode_batch`` over batches of 1,000 messages) against the Python parser it stands in for
(``EventParser.parse`` then ``record_datum``), on the same 768-dim upserts that
bench_capture produces. Microseconds per event, median of ``--rounds``; both paths are timed in
the same run, alternating.

    python -m tests.bench.bench_eventcodec [--events 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from daemon.changelog.segment import record_datum
from daemon.events import EventParser
from daemon.kafka_headers import UNREADABLE, encode_tail
from daemon.native import eventcodec
from tests.bench.workload import event_pool
from tests.component.fakes import FakeMessage

BATCH = 1000


def python_path(msgs: list[FakeMessage], fmt: str) -> float:
    parser = EventParser(1 << 20, {"docs": 768})
    began = time.perf_counter()
    for m in msgs:
        record_datum(parser.parse(m.value(), fmt, key=m.key(), offset=m.offset(),
                                  timestamp=m.timestamp()[1]))
    return time.perf_counter() - began


def codec_path(msgs: list[FakeMessage], fmt: str) -> float:
    formats, dims = {"t": fmt == "avro"}, {"docs": 768}
    began = time.perf_counter()
    for i in range(0, len(msgs), BATCH):
        results, stop = eventcodec.encode_batch(msgs[i:i + BATCH], 0, formats, dims, 1 << 20,
                                                encode_tail, UNREADABLE)
        assert stop == min(BATCH, len(msgs) - i) and None not in results
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    out: dict[str, Any] = {}
    for fmt in ("json", "avro"):
        pool = event_pool(fmt)
        msgs = [FakeMessage("t", 0, i, pool[i % len(pool)], f"doc-{i}".encode(), 1_000 + i)
                for i in range(args.events)]
        py, nat = [], []
        for _ in range(args.rounds):
            py.append(python_path(msgs, fmt) / args.events * 1e6)
            nat.append(codec_path(msgs, fmt) / args.events * 1e6)
        out[fmt] = {"events": args.events, "rounds": args.rounds,
                    "value_bytes": len(pool[0]),
                    "python_us_per_event": round(statistics.median(py), 2),
                    "codec_us_per_event": round(statistics.median(nat), 2),
                    "speedup": round(statistics.median(py) / statistics.median(nat), 1)}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
