"""End-to-end RPO: time from produce (the broker's LogAppendTime) to durable segment, at a
steady event rate, with the default 5 s segment age, into the real S3 server.

    python -m tests.bench.bench_rpo [--rate 2000] [--seconds 60] [--dim 768]

The daemon runs as a real process; its JSON log says when each segment became durable
("segment durable", after segment, sidecar and watermark were stored). Each event's RPO is that
moment minus the event's append time. Prints p50/p99/max as JSON, and the ratio of p99 to the
configured age (the floor any age-based segmenting has).
"""

from __future__ import annotations

import argparse
import bisect
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from tests.bench.services import REPO, services
from tests.bench.workload import event_pool, produce_n


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--age", type=float, default=5.0)
    args = ap.parse_args(argv)
    with services() as svc:
        topic, bucket = svc.topic(3), svc.bucket()
        cfg = svc.workdir / "rpo.toml"
        cfg.write_text(f"""[kafka]
bootstrap_servers = "{svc.bootstrap}"
topics = ["{topic}"]
group_id = "rpo"
[storage]
url = "s3://{bucket}/repo"
endpoint_url = "{svc.s3_endpoint}"
""" + daemon_settings(args.age))
        log_path = svc.workdir / "daemon.log"
        proc = start_daemon(cfg, log_path, svc.s3_env)
        try:
            _wait(lambda: log_path.read_text().count('"partition assigned"') >= 3, 60)
            appended: list[tuple[int, int, int]] = []

            def delivered(err: Any, msg: Any) -> None:
                if err is None:
                    appended.append((msg.partition(), msg.offset(), msg.timestamp()[1]))

            n = int(args.rate * args.seconds)
            took = produce_n(svc.bootstrap, topic, event_pool("json", dim=args.dim), n,
                             rate_per_s=args.rate, on_delivery=delivered)
            ends = {p: max(o for q, o, _ in appended if q == p) + 1 for p in range(3)}
            _wait(lambda: all(_durable_through(log_path).get(p, 0) >= e
                              for p, e in ends.items()), 120)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        segments = _segments(log_path)
        rpos = []
        for p, offset, ts in appended:
            rpos.append((durable_at(segments, p, offset) - ts) / 1000)
        rpos.sort()
        result = {
            "events": len(rpos), "rate_target": args.rate,
            "rate_achieved": round(n / took), "segment_max_age_s": args.age,
            "rpo_p50_s": round(statistics.median(rpos), 3),
            "rpo_p99_s": round(rpos[int(len(rpos) * 0.99) - 1], 3),
            "rpo_max_s": round(rpos[-1], 3),
            "p99_over_age": round(rpos[int(len(rpos) * 0.99) - 1] / args.age, 3),
            "segments": sum(len(s[1]) for s in segments.values()),
        }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return result


def daemon_settings(age_s: float) -> str:
    """The TOML every RPO bench's daemon shares: the segment age, no metrics port, JSON logs
    (the benches read its ``segment durable`` lines)."""
    return (f'[capture]\nsegment_max_age_s = {age_s}\n[metrics]\nlisten = ""\n'
            '[log]\nformat = "json"\n')


def start_daemon(cfg: Path, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`vecwal run --config cfg` as a process of its own, its log into ``log_path``."""
    with open(log_path, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--config",
                                 str(cfg)], cwd=REPO, env={**os.environ, **env}, stdout=out,
                                stderr=out)


def durable_at(segments: dict[int, tuple[list[int], list[tuple[int, int, int]]]],
               partition: int, offset: int) -> int:
    """When the segment holding ``offset`` was durable (ms), from ``_segments``."""
    starts, segs = segments[partition]
    start, end, durable_ms = segs[bisect.bisect_right(starts, offset) - 1]
    assert start <= offset < end
    return durable_ms


def _lines(log_path: Path) -> list[dict[str, Any]]:
    out = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            out.append(orjson.loads(line))
    return out


def _durable_through(log_path: Path) -> dict[int, int]:
    through: dict[int, int] = {}
    for ev in _lines(log_path):
        if ev.get("event") == "segment durable":
            through[ev["partition"]] = max(through.get(ev["partition"], 0), ev["to_offset"])
    return through


def _segments(log_path: Path) -> dict[int, tuple[list[int], list[tuple[int, int, int]]]]:
    by_p: dict[int, list[tuple[int, int, int]]] = {}
    for ev in _lines(log_path):
        if ev.get("event") == "segment durable":
            ms = int(datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp()
                     * 1000)
            by_p.setdefault(ev["partition"], []).append((ev["from_offset"], ev["to_offset"], ms))
    return {p: ([s[0] for s in sorted(v)], sorted(v)) for p, v in by_p.items()}


def _wait(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise TimeoutError("benchmark condition not reached")


if __name__ == "__main__":
    main()
