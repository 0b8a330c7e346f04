"""What a malformed event costs capture, against a good one: a producer bug floods the topic
with bad events among the good ones, and capture must not fall behind.

    python -m tests.bench.bench_quarantine [--events N] [--rounds R] [--stores file,s3]
                                           [--format json|avro] [--layouts segment,per_event]
                                           [--per-kind] [--zstd-levels 1,-3]
                                           [--per-tenant-keys]

Two topics of 3 partitions: N good 768-dim upserts alone, and the same N good events with N
malformed ones interleaved (good, bad, good, bad...: every kind daemon/workload.py makes, in
turn). Per store, each round captures (``CaptureLoop.run(until_caught_up=True)``, the real
broker, a fresh repository and consumer group each time): the good topic; the mixed topic with
capture as it is (``segment``: one quarantine object per segment, rate-limited log lines); and
the mixed topic as capture was before (``per_event``: ``make_durable`` writing one object per
malformed event, ``tests/component/legacy.py``, and a log line for each, swapped in for that
run). ``--per-kind`` adds one topic per kind of malformed event (N good + N of that kind),
captured as capture is. ``--zstd-levels`` adds the mixed topic again with the quarantine
objects compressed at each other level (``daemon.changelog.quarantine.ZSTD_LEVEL`` patched for
that run; ``none``: not compressed), an A/B in the same rounds. ``--per-tenant-keys`` adds the
good and the mixed topic again into an encrypted repository with ``per_tenant_keys`` (every
good record's content and every attributable rejected event sealed under its tenant's key);
the malformed event's cost there is against the good topic with per-tenant keys. Each run is
timed from its first message to every event durable.

Printed as JSON: per store and layout the median seconds, and the cost of one malformed event
against one good event, ``((t_mixed - t_good) / N) / (t_good / N)``; the goal is at most 2.
The daemon's JSON log (level info, as in production) goes to a file per run; its line count is
reported too.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import orjson
import structlog

from daemon.capture import loop as capture_loop
from daemon.capture.loop import CaptureLoop
from daemon.capture.quarantine_log import QuarantineLog
from daemon.changelog import quarantine
from daemon.changelog.repository import Repository
from daemon.config import config_from_mapping
from daemon.keys.opener import open_encrypted
from daemon.logs import configure_logging
from daemon.objectstore import open_store
from daemon.workload import BAD_KINDS, Workload
from tests.bench.services import Services, services
from tests.bench.workload import event_pool, produce_n
from tests.component.legacy import make_durable_per_event

DIM = 768
LAYOUTS = ("segment", "per_event")
PTK_GOOD, PTK_MIXED = "good, per-tenant keys", "segment, per-tenant keys"


def bad_pool(fmt: str, limit: int, size: int = 500) -> list[bytes]:
    """Malformed events of every kind in turn; ``oversize`` is an upsert whose document makes
    it 1 KiB over ``limit`` (``capture.max_event_bytes``)."""
    bare = len(Workload(fmt=fmt, collections={"docs": DIM}, oversize_bytes=0)
               .bad_event("oversize").value)
    w = Workload(seed=13, collections={"docs": DIM}, tenants=["acme", "globex"], fmt=fmt,
                 oversize_bytes=limit + 1024 - bare)
    with np.errstate(over="ignore"):  # non_finite: 1e39 becomes infinity in Avro's float32
        return [w.bad_event(BAD_KINDS[i % len(BAD_KINDS)]).value for i in range(size)]


def capture(svc: Services, topic: str, fmt: str, good: int, bad: int, store: str,
            layout: str, limit: int, log_path: Path, zstd_level: int | str | None = "as is",
            per_tenant_keys: bool = False) -> float:
    """Seconds from the first message consumed to every event durable."""
    work = Path(tempfile.mkdtemp(prefix="bench-repo-", dir=svc.workdir))
    if store == "s3":
        url, endpoint = f"s3://{svc.bucket()}/repo", svc.s3_endpoint
    else:
        url, endpoint = f"file://{work / 'repo'}", ""
    encryption: dict[str, Any] = {}
    repo = Repository(open_store(url, endpoint_url=endpoint or None))
    if per_tenant_keys:
        kek = work / "kek"
        kek.write_bytes(os.urandom(32))
        kek.chmod(0o600)
        encryption = {"enabled": True, "kek": f"keyfile:{kek}", "per_tenant_keys": True}
        repo = Repository(open_encrypted(partial(open_store, url, endpoint_url=endpoint or None),
                                         f"keyfile:{kek}", per_tenant_keys=True))
    cfg = config_from_mapping({
        "kafka": {"bootstrap_servers": svc.bootstrap, "topics": [topic],
                  "group_id": f"q-{uuid.uuid4().hex[:6]}", "format": fmt},
        "storage": {"url": url, "endpoint_url": endpoint},
        "metrics": {"listen": ""},
        "capture": {"max_event_bytes": limit, "dimensions": {"docs": DIM}},
        **({"encryption": encryption} if encryption else {}),
    }, environ={})
    loop = CaptureLoop(cfg, repo)
    with ExitStack() as stack, open(log_path, "w") as log_file:
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=log_file))
        stack.callback(structlog.configure,
                       logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
        if zstd_level != "as is":
            stack.enter_context(mock.patch.object(quarantine, "ZSTD_LEVEL", zstd_level))
        if layout == "per_event":
            stack.enter_context(mock.patch.object(capture_loop, "make_durable",
                                                  make_durable_per_event))
            loop.rejected.log = QuarantineLog(interval_s=0.0)  # a line per event, as before
        assert loop.run(until_caught_up=True) == 0
        done = time.monotonic()
    samples = loop.metrics.registry
    assert samples.get_sample_value("vecwal_events_captured_total", {"topic": topic}) == good
    rejected = sum(samples.get_sample_value("vecwal_quarantined_events_total",
                                            {"topic": topic, "reason": r}) or 0
                   for r in ("unparseable", "unknown_op", "missing_field", "wrong_dimension",
                             "non_finite", "oversize", "bad_vector", "bad_field"))
    assert rejected == bad, (rejected, bad)
    objects = sum(1 for _ in repo.list_quarantine(topic))
    segments = sum(1 for p in range(3) for _ in repo.list_segments(topic, p))
    assert bad == 0 or objects == (bad if layout == "per_event" else segments), objects
    shutil.rmtree(work, ignore_errors=True)
    assert loop.first_message_at is not None
    return done - loop.first_message_at


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000, help="good events (and as many bad)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stores", default="file,s3")
    ap.add_argument("--format", default="json", choices=("json", "avro"))
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--zstd-levels", default="",
                    help="also the mixed topic with quarantine objects at these zstd levels")
    ap.add_argument("--per-tenant-keys", action="store_true",
                    help="also the good and the mixed topic with [encryption] per_tenant_keys")
    ap.add_argument("--per-kind", action="store_true",
                    help="also one topic per kind of malformed event (N good + N of that kind), "
                         "captured as capture is")
    args = ap.parse_args(argv)
    n, fmt = args.events, args.format
    configure_logging("info", "json")
    results: dict[str, Any] = {}
    with services() as svc:
        os.environ.update(svc.s3_env)
        good = event_pool(fmt, dim=DIM)
        limit = 2 * max(len(v) for v in good)
        bad = bad_pool(fmt, limit)

        def topic_of(malformed: list[bytes]) -> str:
            topic = svc.topic(partitions=3)
            pool = [v for pair in zip(good, itertools.cycle(malformed)) for v in pair]
            produce_n(svc.bootstrap, topic, pool if malformed else good, 2 * n if malformed else n)
            return topic

        mixed = topic_of(bad)
        good_topic = topic_of([])
        modes = {"good": (good_topic, 0, "segment"),
                 **{m: (mixed, n, m) for m in args.layouts.split(",")}}
        if args.per_tenant_keys:
            modes |= {PTK_GOOD: (good_topic, 0, "segment"), PTK_MIXED: (mixed, n, "segment")}
        levels: dict[str, int | None] = {
            f"segment, zstd {lv}": None if lv == "none" else int(lv)
            for lv in args.zstd_levels.split(",") if lv}
        modes |= {m: (mixed, n, "segment") for m in levels}
        if args.per_kind:
            modes |= {f"only {kind}": (topic_of(bad[k::len(BAD_KINDS)]), n, "segment")
                      for k, kind in enumerate(BAD_KINDS)}
        for store in args.stores.split(","):
            times: dict[str, list[float]] = {m: [] for m in modes}
            lines: dict[str, int] = {}
            for r in range(args.rounds):
                for mode, (topic, bad_n, layout) in modes.items():
                    log_path = svc.workdir / f"{store}-{r}.log"
                    times[mode].append(capture(svc, topic, fmt, n, bad_n, store, layout, limit,
                                               log_path, levels.get(mode, "as is"),
                                               mode in (PTK_GOOD, PTK_MIXED)))
                    lines[mode] = log_path.read_bytes().count(b"\n")
                print(f"{fmt}/{store} round {r}: " + ", ".join(
                    f"{m} {t[-1]:.2f}s" for m, t in times.items()), file=sys.stderr)
            t_good = statistics.median(times.pop("good"))
            t_good_ptk = statistics.median(times[PTK_GOOD]) if PTK_GOOD in times else None
            out: dict[str, Any] = {
                "events_good": n, "events_malformed": n, "rounds": args.rounds,
                "good_alone_s": round(t_good, 3), "good_event_us": round(t_good / n * 1e6, 1),
                "log_lines_good_alone": lines["good"],
            }
            for mode, ts in times.items():
                t = statistics.median(ts)
                base = t_good_ptk if mode == PTK_MIXED and t_good_ptk else t_good
                out[mode] = {"mixed_s": round(t, 3),
                             "malformed_event_us": round((t - base) / n * 1e6, 1),
                             "cost_ratio": round((t - base) / base, 2),
                             "log_lines": lines[mode]}
            results[f"{fmt}/{store}"] = out
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return results


if __name__ == "__main__":
    main()
