"""Peak RSS of the daemon working through a backlog of 1M 768-dim events, against a baseline
measured in the same run: a bare confluent-kafka consumer process reading the same backlog.

    python -m tests.bench.bench_rss [--events 1000000] [--max-buffer-mb 256] [--segment-max-mb 32]

Peak RSS is each child process's own high-water mark (VmHWM, polled; see ``run_child``). The daemon captures
into a file:// repository with `vecwal run --until-caught-up`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import orjson

from tests.bench.services import REPO, services
from tests.bench.workload import event_pool, produce_n

BASELINE = """
import sys, uuid
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": "raw-" + uuid.uuid4().hex,
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([sys.argv[2]])
n, want = 0, int(sys.argv[3])
while n < want:
    n += sum(1 for m in c.consume(num_messages=1000, timeout=1.0) if m.error() is None)
c.close()
"""


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """(seconds, exit code, peak RSS in MB) of one child process.

    Peak RSS is the child's own high-water mark (VmHWM of /proc/<pid>/status), read every
    50 ms until it exits; it only grows, so the last reading is the peak up to then. Not
    ``wait4``'s ru_maxrss: on Linux that starts from the RSS of the parent at fork."""
    began = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak_kb = 0
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak_kb = max(peak_kb, int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.05)
        proc.wait()
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(err.read().decode()[-3000:])
    return time.monotonic() - began, proc.returncode, peak_kb // 1024


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--max-buffer-mb", type=int, default=256)
    ap.add_argument("--segment-max-mb", type=int, default=32)
    ap.add_argument("--client", action="append", default=[], metavar="KEY=VALUE",
                    help="a librdkafka property for the daemon ([kafka.client])")
    args = ap.parse_args(argv)
    client = "".join(f'"{k}" = "{v}"\n' for k, v in (c.split("=", 1) for c in args.client))
    with services() as svc:
        topic = svc.topic(3)
        t = produce_n(svc.bootstrap, topic, event_pool("avro", dim=args.dim), args.events)
        print(f"produced {args.events:,} events in {t:.0f}s", file=sys.stderr)
        env = {**os.environ, **svc.s3_env}
        base_s, _, base_mb = run_child(
            [sys.executable, "-c", BASELINE, svc.bootstrap, topic, str(args.events)], env)
        cfg = svc.workdir / "rss.toml"
        cfg.write_text(f"""[kafka]
bootstrap_servers = "{svc.bootstrap}"
topics = ["{topic}"]
group_id = "rss"
format = "avro"
[storage]
url = "file://{svc.workdir / 'repo'}"
[capture]
max_buffer_bytes = {args.max_buffer_mb * 1024 * 1024}
segment_max_bytes = {args.segment_max_mb * 1024 * 1024}
[kafka.client]
{client}[metrics]
listen = ""
[log]
level = "warning"
""")
        cap_s, _, cap_mb = run_child(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(cfg),
             "--until-caught-up"], env)
        result = {
            "events": args.events, "dim": args.dim,
            "backlog_mb": round(args.events * (args.dim * 4 + 200) / 1e6),
            "max_buffer_mb": args.max_buffer_mb, "segment_max_mb": args.segment_max_mb,
            "baseline_consumer_peak_rss_mb": base_mb, "baseline_seconds": round(base_s, 1),
            "daemon_peak_rss_mb": cap_mb, "daemon_seconds": round(cap_s, 1),
            "daemon_events_per_s": round(args.events / cap_s),
            "rss_ratio_to_baseline": round(cap_mb / base_mb, 2), "client": args.client,
        }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return result


if __name__ == "__main__":
    main()
