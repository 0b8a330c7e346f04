#!/usr/bin/env python3
"""The main job, end to end on one machine (``make demo``):

1. start a real Kafka broker and a real S3 server (deploy/local/launch.py; cached downloads);
2. create an ingestion topic (3 partitions, LogAppendTime) and produce a realistic stream:
   two collections, three tenants, upserts, re-upserts, deletes, schema and alias changes,
   tenant settings, and a few bad events;
3. run ``vecwal run --until-caught-up`` into s3://demo/vecwal on the S3 server;
4. print ``vecwal status`` and what the repository now holds (segments, quarantine).

Services are stopped at the end unless --keep is given (then the config file is printed so you
can run ``vecwal status --config ...`` yourself).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # launch.py sits beside this file


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="change events to produce")
    ap.add_argument("--dim", type=int, default=384, help="vector dimension of 'docs'")
    ap.add_argument("--keep", action="store_true", help="leave the services running")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    import boto3
    import launch
    import orjson
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from daemon.workload import Workload, produce

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vecwal-demo-"))
    step(f"starting Kafka and the S3 server (work dir {work})")
    launch.install()
    broker = launch.KafkaBroker(work / "kafka", tie_to_parent=not args.keep).start()
    s3 = launch.S3Proxy(work / "s3", tie_to_parent=not args.keep).start()
    print(f"    kafka {broker.bootstrap}   s3 {s3.endpoint_url}")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3.access_key,
           "AWS_SECRET_ACCESS_KEY": s3.secret_key, "AWS_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                 aws_access_key_id=s3.access_key,
                 aws_secret_access_key=s3.secret_key).create_bucket(Bucket="demo")

    topic = "vectors.ingest"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 1, config={
        "message.timestamp.type": "LogAppendTime"})])[topic].result(30)
    del admin  # no client may outlive the broker (it would log reconnect attempts)

    dims = {"docs": args.dim, "images": 128}
    w = Workload(seed=42, collections=dims, bad_rate=0.002, id_space=4000)
    half = args.events // 2
    step(f"producing {args.events:,} change events to {topic} "
         f"(collections {dims}, tenants {w.tenants})")
    t0 = time.monotonic()
    events = [*w.preamble(), *w.events(half), w.schema_change("docs"), *w.events(half)]
    produced = produce(broker.bootstrap, topic, events)
    bad = sum(1 for p in produced if p.event.bad)
    print(f"    {len(produced):,} events in {time.monotonic() - t0:.1f}s, {bad} of them bad on "
          "purpose (they must be quarantined, not lost)")

    config = work / "vecwal.toml"
    config.write_text(f"""[kafka]
bootstrap_servers = "{broker.bootstrap}"
topics = ["{topic}"]
group_id = "vecwal-demo"

[storage]
url = "s3://demo/vecwal"
endpoint_url = "{s3.endpoint_url}"

[capture]
segment_max_age_s = 5.0
max_event_bytes = 200000

[capture.dimensions]
docs = {args.dim}
images = 128

[metrics]
listen = "127.0.0.1:0"

[log]
format = "console"
level = "error"
""")
    step("vecwal run --until-caught-up   (capture into s3://demo/vecwal)")
    t0 = time.monotonic()
    vecwal = [sys.executable, "-m", "daemon.cli"]
    rc = subprocess.call([*vecwal, "run", "--config", str(config), "--until-caught-up"],
                         env=env, cwd=REPO)
    took = time.monotonic() - t0
    if rc != 0:
        print(f"capture failed with exit code {rc}", file=sys.stderr)
        return rc
    print(f"    captured {len(produced):,} events in {took:.1f}s "
          f"({len(produced) / took:,.0f} events/s including start-up and group join)")

    step("vecwal status")
    subprocess.call([*vecwal, "status", "--config", str(config)], env=env, cwd=REPO)

    step("what the repository holds")
    s3c = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                       aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)
    counts: dict[str, list[int]] = {}
    for page in s3c.get_paginator("list_objects_v2").paginate(Bucket="demo", Prefix="vecwal/"):
        for obj in page.get("Contents", []):
            kind = obj["Key"].split("/")[1]
            if obj["Key"].endswith(".idx"):
                kind = "log (sidecars)"
            counts.setdefault(kind, [0, 0])
            counts[kind][0] += 1
            counts[kind][1] += obj["Size"]
    for kind, (n, size) in sorted(counts.items()):
        print(f"    {kind:16s} {n:6d} objects {size / 1e6:10.2f} MB")
    reasons: dict[str, int] = {}
    for page in s3c.get_paginator("list_objects_v2").paginate(Bucket="demo",
                                                              Prefix="vecwal/quarantine/"):
        for obj in page.get("Contents", []):
            entry = orjson.loads(s3c.get_object(Bucket="demo", Key=obj["Key"])["Body"].read())
            reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    print(f"    quarantined by reason: {dict(sorted(reasons.items()))} "
          f"(produced bad on purpose: {bad})")

    if args.keep:
        print(f"\nservices left running; try:\n  vecwal status --config {config}\n"
              f"  (AWS_ACCESS_KEY_ID={s3.access_key} AWS_SECRET_ACCESS_KEY={s3.secret_key})\n"
              f"stop them with: python deploy/local/launch.py stop kafka --dir {work / 'kafka'}")
    else:
        broker.stop()
        s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
