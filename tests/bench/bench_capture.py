"""Capture throughput of 768-dim events (JSON and Avro input) against the raw consume rate of
the same topic, measured in the same run: confluent-kafka consuming and discarding.

    python -m tests.bench.bench_capture [--events-json N] [--events-avro N] [--rounds R]
                                        [--headers]

``--headers``: every message carries Kafka headers (a batch id and a 16-byte binary trace id),
which capture keeps in each record.

Rounds alternate baseline and capture; the medians and their ratio are printed as JSON.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer

from daemon.capture.kafka import consumer_settings
from daemon.capture.loop import CaptureLoop
from daemon.changelog.repository import Repository
from daemon.cli import store_opener
from daemon.config import config_from_mapping
from daemon.logs import configure_logging
from daemon.objectstore import open_store
from tests.bench.services import Services, services
from tests.bench.workload import event_pool, produce_n


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat), every core."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


class CoresBusy:
    """How many of the machine's cores were busy (broker, consumer, everything) over a span."""

    def __enter__(self) -> CoresBusy:
        self.busy0, self.t0 = machine_busy()[0], time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cores = (machine_busy()[0] - self.busy0) / (time.monotonic() - self.t0)


BENCH_HEADERS: list[tuple[str, bytes | None]] = [("batch", b"ingest-2026-11-25-0042"),
                                                ("trace", bytes(range(200, 216)))]

FETCH_SETTINGS = ("queued.max.messages.kbytes", "fetch.max.bytes", "max.partition.fetch.bytes",
                  "fetch.queue.backoff.ms")


def capture_fetch_settings(bootstrap: str) -> dict[str, Any]:
    """How capture's consumer fetches (``capture.kafka.consumer_settings`` with the default
    configuration). The baseline fetches the same way: with librdkafka's defaults it stalls a
    whole second whenever its prefetch queue fills (``fetch.queue.backoff.ms`` 1000), and a
    stalled baseline made capture look closer to it than it is."""
    cfg = config_from_mapping({"kafka": {"bootstrap_servers": bootstrap, "topics": ["t"]},
                               "storage": {"url": "file:///unused"}},
                              environ={})
    settings = consumer_settings(cfg)
    return {k: settings[k] for k in FETCH_SETTINGS}


def raw_consume(bootstrap: str, topic: str, n: int) -> float:
    """Seconds from the first message to the n-th, consuming in batches and discarding."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "partition.assignment.strategy": "cooperative-sticky",
                  **capture_fetch_settings(bootstrap)})
    c.subscribe([topic])
    seen, first = 0, None
    try:
        while seen < n:
            msgs = c.consume(num_messages=1000, timeout=1.0)
            if msgs and first is None:
                first = time.monotonic()
            seen += sum(1 for m in msgs if m.error() is None)
        assert first is not None
        return time.monotonic() - first
    finally:
        c.close()


def capture(svc: Services, topic: str, fmt: str, n: int, store: str,
            python_only: bool = False, kafka: dict[str, Any] | None = None,
            encryption: dict[str, Any] | None = None) -> float:
    """Seconds from the first message consumed to every event durable (until caught up).
    ``kafka``: more [kafka] settings (a mapping or Debezium table); ``encryption``: an
    [encryption] table (the store is then opened as ``vecwal run`` opens it)."""
    if store == "s3":
        url, endpoint = f"s3://{svc.bucket()}/repo", svc.s3_endpoint
    else:
        url, endpoint = f"file://{tempfile.mkdtemp(prefix='bench-repo-', dir=svc.workdir)}", ""
    os.environ.update(svc.s3_env)
    cfg = config_from_mapping({
        "kafka": {"bootstrap_servers": svc.bootstrap, "topics": [topic],
                  "group_id": f"cap-{uuid.uuid4().hex[:6]}", "format": fmt, **(kafka or {})},
        "storage": {"url": url, "endpoint_url": endpoint},
        "metrics": {"listen": ""},
        "capture": {"native_codec": not python_only},
        **({"encryption": encryption} if encryption else {}),
    }, environ={})
    opened = store_opener(cfg)() if encryption else open_store(url, endpoint_url=endpoint or None)
    loop = CaptureLoop(cfg, Repository(opened))
    # as `vecwal run` does right before its loop (daemon.cli): what start-up made, out of
    # the cyclic GC's full collections; unfrozen after, for the rest of this process
    gc.collect()
    gc.freeze()
    try:
        assert loop.run(until_caught_up=True) == 0
        done = time.monotonic()
    finally:
        gc.unfreeze()
        if store != "s3":  # as the archiver's output: GBs, and pages the next run may reuse
            shutil.rmtree(url.removeprefix("file://"), ignore_errors=True)
    captured = loop.metrics.registry.get_sample_value("vecwal_events_captured_total",
                                                      {"topic": topic})
    assert captured == n, (captured, n)
    assert loop.first_message_at is not None
    return done - loop.first_message_at


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events-json", type=int, default=20_000)
    ap.add_argument("--events-avro", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stores", default="file,s3")
    ap.add_argument("--python-only", action="store_true",
                    help="capture without the native event codec (the Python parser only)")
    ap.add_argument("--headers", action="store_true",
                    help="every message carries two Kafka headers (batch id, binary trace id)")
    args = ap.parse_args(argv)
    configure_logging("warning", "console")  # figures on stdout, nothing else
    results: dict[str, Any] = {}
    with services() as svc:
        for fmt, n in (("json", args.events_json), ("avro", args.events_avro)):
            topic = svc.topic(partitions=3)
            produce_n(svc.bootstrap, topic, event_pool(fmt), n,
                      headers=BENCH_HEADERS if args.headers else None)
            for store in args.stores.split(","):
                raw, cap, raw_cores, cap_cores = [], [], [], []
                for r in range(args.rounds):
                    with CoresBusy() as busy:
                        raw.append(raw_consume(svc.bootstrap, topic, n))
                    raw_cores.append(busy.cores)
                    with CoresBusy() as busy:
                        cap.append(capture(svc, topic, fmt, n, store, args.python_only))
                    cap_cores.append(busy.cores)
                    print(f"{fmt}/{store} round {r}: raw {n / raw[-1]:,.0f}/s "
                          f"({raw_cores[-1]:.2f} cores busy) capture {n / cap[-1]:,.0f}/s "
                          f"({cap_cores[-1]:.2f} cores busy)", file=sys.stderr)
                raw_rate, cap_rate = n / statistics.median(raw), n / statistics.median(cap)
                results[f"{fmt}/{store}"] = {
                    "events": n, "rounds": args.rounds,
                    "raw_consume_events_per_s": round(raw_rate),
                    "capture_events_per_s": round(cap_rate),
                    "ratio": round(cap_rate / raw_rate, 3),
                    "raw_consume_cores_busy": round(statistics.median(raw_cores), 2),
                    "capture_cores_busy": round(statistics.median(cap_cores), 2),
                    "native_codec": not args.python_only,
                    "headers": args.headers,
                }
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return results


if __name__ == "__main__":
    main()
