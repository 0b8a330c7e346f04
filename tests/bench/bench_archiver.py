"""Capture against the plain archiver a team would write instead (tests/bench/archiver.py), on
the same topic in the same run: JSON and Avro input, ``file://`` and S3.

    python -m tests.bench.bench_archiver [--events-json N] [--events-avro N] [--rounds R]
                                         [--stores file,s3]

Each round runs the archiver and ``CaptureLoop.run(until_caught_up=True)`` (as bench_capture
drives it), the order alternating between rounds, and times the native codec alone
(``encode_batch``, as bench_eventcodec does) on the same events: the parse-only rate. For each
run: events/s from the first message to the last event stored, this process's CPU seconds
(every thread: librdkafka's, the upload pool's) and the whole machine's (broker and S3 server
included), per 10,000 events. Medians of the rounds, and the median of each round's ratio
(capture / archiver, the two runs of a round being next to each other in time), printed as
JSON.

Goals (issue 15): Avro capture >= 0.8 x the archiver; JSON capture >= 0.8 x the lower of the
archiver and the parse-only rate.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from daemon.logs import configure_logging
from tests.bench.archiver import Archiver, file_writer, s3_writer
from tests.bench.bench_capture import capture, capture_fetch_settings, machine_busy
from tests.bench.bench_eventcodec import codec_path
from tests.bench.services import Services, services
from tests.bench.workload import event_pool, produce_n
from tests.component.fakes import FakeMessage

PARTITIONS = 3
THREADS = 4  # capture.upload_threads' default


def process_cpu() -> float:
    """CPU seconds of this process so far, every thread."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measured(run: Callable[[], float], n: int) -> dict[str, float]:
    """Run ``run`` (it returns the seconds from its first message to the end) and account for
    it: events/s, process and machine CPU seconds per 10,000 events."""
    cpu0, (busy0, _) = process_cpu(), machine_busy()
    seconds = run()
    cpu, busy = process_cpu() - cpu0, machine_busy()[0] - busy0
    return {"events_per_s": n / seconds, "cpu_s_per_10k": cpu / n * 1e4,
            "machine_cpu_s_per_10k": busy / n * 1e4}


def archive(svc: Services, topic: str, n: int, store: str) -> float:
    """The archiver over the whole topic; seconds from its first message to the end."""
    if store == "s3":
        write = s3_writer(svc.s3_endpoint, svc.bucket(), svc.s3_env, THREADS)
        root = None
    else:
        root = Path(tempfile.mkdtemp(prefix="bench-archive-", dir=svc.workdir))
        write = file_writer(root)
    try:
        a = Archiver(svc.bootstrap, topic, write, fetch=capture_fetch_settings(svc.bootstrap),
                     threads=THREADS)
        done = a.run(n)
        assert a.first_message_at is not None and a.objects >= PARTITIONS
        return done - a.first_message_at
    finally:
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


def parse_only(msgs: list[FakeMessage], fmt: str) -> float:
    """The native codec alone over the same events: events/s."""
    return len(msgs) / codec_path(msgs, fmt)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events-json", type=int, default=40_000)
    ap.add_argument("--events-avro", type=int, default=120_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--stores", default="file,s3")
    args = ap.parse_args(argv)
    configure_logging("warning", "console")  # figures on stdout, nothing else
    results: dict[str, Any] = {}
    with services() as svc:
        for fmt, n in (("json", args.events_json), ("avro", args.events_avro)):
            pool = event_pool(fmt)
            topic = svc.topic(partitions=PARTITIONS)
            produce_n(svc.bootstrap, topic, pool, n)
            msgs = [FakeMessage("t", 0, i, pool[i % len(pool)], f"doc-{i}".encode(), 1_000 + i)
                    for i in range(n)]
            parse = [parse_only(msgs, fmt) for _ in range(3)]
            for store in args.stores.split(","):
                runs: dict[str, list[dict[str, float]]] = {"archiver": [], "capture": []}
                jobs = {"archiver": lambda: archive(svc, topic, n, store),  # noqa: B023
                        "capture": lambda: capture(svc, topic, fmt, n, store)}  # noqa: B023
                for r in range(args.rounds):
                    order = ("archiver", "capture") if r % 2 == 0 else ("capture", "archiver")
                    for name in order:
                        runs[name].append(measured(jobs[name], n))
                    parse.append(parse_only(msgs, fmt))
                    print(f"{fmt}/{store} round {r}: " + ", ".join(
                        f"{k} {v[-1]['events_per_s']:,.0f}/s {v[-1]['cpu_s_per_10k']:.2f} "
                        f"cpu-s/10k" for k, v in runs.items())
                        + f", parse-only {parse[-1]:,.0f}/s", file=sys.stderr)
                results[f"{fmt}/{store}"] = summary(fmt, n, runs, statistics.median(parse))
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return results


def summary(fmt: str, n: int, runs: dict[str, list[dict[str, float]]],
            parse_rate: float) -> dict[str, Any]:
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for name, rs in runs.items()}
    arch, cap = med["archiver"]["events_per_s"], med["capture"]["events_per_s"]
    floor = min(arch, parse_rate) if fmt == "json" else arch
    out: dict[str, Any] = {"events": n, "rounds": len(runs["capture"])}
    for name, m in med.items():
        out[name] = {"events_per_s": round(m["events_per_s"]),
                     "cpu_s_per_10k": round(m["cpu_s_per_10k"], 3),
                     "machine_cpu_s_per_10k": round(m["machine_cpu_s_per_10k"], 3)}
    per_round = [c["events_per_s"] / a["events_per_s"]
                 for a, c in zip(runs["archiver"], runs["capture"], strict=True)]
    out |= {"parse_only_events_per_s": round(parse_rate),
            "ratio_to_archiver": round(cap / arch, 3),
            "ratio_to_archiver_per_round": [round(x, 3) for x in per_round],
            "median_round_ratio": round(statistics.median(per_round), 3),
            "goal_events_per_s": round(0.8 * floor),
            "goal_met": cap >= 0.8 * floor,
            "cpu_ratio_capture_to_archiver": round(
                med["capture"]["cpu_s_per_10k"] / med["archiver"]["cpu_s_per_10k"], 2)}
    return out


if __name__ == "__main__":
    main()
