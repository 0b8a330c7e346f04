"""What keeping Kafka headers costs capture's fast path: the native event codec (``encode_batch``
over batches of 1,000 messages, the 768-dim upserts bench_capture produces) on messages without
headers and on messages with bench_capture's two headers (a batch id, a 16-byte binary trace
id), alternating in one process; medians of ``--rounds``, microseconds per event.

With ``--baseline-so PATH`` (the eventcodec extension built from an earlier commit, which has
no headers argument) that build runs on the same messages without headers in the same
alternation: the cost of the change itself, paired, on a busy machine.

    python -m tests.bench.bench_headers [--rounds 15] [--baseline-so PATH]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from daemon.kafka_headers import UNREADABLE, encode_tail
from daemon.native import eventcodec
from tests.bench.bench_capture import BENCH_HEADERS
from tests.bench.workload import event_pool
from tests.component.fakes import FakeMessage

BATCH = 1000
EVENTS = {"json": 4_000, "avro": 20_000}
DIMS = {"docs": 768}


def load_extension(path: str) -> ModuleType:
    """An ``eventcodec`` extension module from another build, beside this one."""
    loader = importlib.machinery.ExtensionFileLoader("eventcodec", path)
    spec = importlib.util.spec_from_file_location("eventcodec", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def per_event_us(encode: Callable[[list[FakeMessage]], Any], msgs: list[FakeMessage]) -> float:
    began = time.perf_counter()
    for i in range(0, len(msgs), BATCH):
        results, _ = encode(msgs[i:i + BATCH])
        assert None not in results
    return (time.perf_counter() - began) / len(msgs) * 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--baseline-so", default=None)
    args = ap.parse_args(argv)
    baseline = load_extension(args.baseline_so) if args.baseline_so else None
    out: dict[str, Any] = {}
    for fmt, n in EVENTS.items():
        pool = event_pool(fmt)
        plain = [FakeMessage("t", 0, i, pool[i % len(pool)], b"k%d" % i, 1000 + i)
                 for i in range(n)]
        headed = [FakeMessage("t", 0, i, pool[i % len(pool)], b"k%d" % i, 1000 + i, False,
                              BENCH_HEADERS) for i in range(n)]
        formats = {"t": fmt == "avro"}

        def ours(m: list[FakeMessage], f: dict[str, bool] = formats) -> Any:
            return eventcodec.encode_batch(m, 0, f, DIMS, 1 << 20, encode_tail, UNREADABLE)

        def theirs(m: list[FakeMessage], f: dict[str, bool] = formats) -> Any:
            assert baseline is not None
            return baseline.encode_batch(m, 0, f, DIMS, 1 << 20)

        times: dict[str, list[float]] = {"plain": [], "headers": [], "baseline": []}
        for _ in range(args.rounds):
            if baseline is not None:
                times["baseline"].append(per_event_us(theirs, plain))
            times["plain"].append(per_event_us(ours, plain))
            times["headers"].append(per_event_us(ours, headed))
        med = {k: statistics.median(v) for k, v in times.items() if v}
        row: dict[str, Any] = {"events": n, "rounds": args.rounds,
                               "us_per_event": {k: round(v, 3) for k, v in med.items()},
                               "headers_over_plain": round(med["headers"] / med["plain"], 3)}
        if baseline is not None:
            row["plain_over_baseline"] = round(med["plain"] / med["baseline"], 3)
            row["headers_over_baseline"] = round(med["headers"] / med["baseline"], 3)
        out[fmt] = row
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
