#!/usr/bin/env python3
"""The main job, end to end on one machine (``make demo``):

1. start a real Kafka broker and a real S3 server (deploy/local/launch.py; cached downloads);
2. produce a realistic stream into a 3-partition topic (LogAppendTime): two collections, three
   tenants, upserts, re-upserts, deletes, tenant settings, aliases, a few bad events;
3. capture it with ``vecwal run --until-caught-up`` into s3://demo/vecwal, then compact it
   (``vecwal compact``) onto a base snapshot;
4. keep changing: a schema change (new embedding model version), more writes and deletes, a
   tenant dropped; note the time T in the middle of that; more changes after T; capture again;
5. ``vecwal list`` and ``vecwal verify --deep`` (every object re-read and checked), then
   ``vecwal restore --to T`` into a directory, with its validation
   report, and a check of the restored state against a plain replay of what was produced.

Services are stopped at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # launch.py sits beside this file

VECWAL = [sys.executable, "-m", "daemon.cli"]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(args: list[str], env: dict[str, str]) -> None:
    rc = subprocess.call([*VECWAL, *args], env=env, cwd=REPO)
    if rc != 0:
        raise SystemExit(f"vecwal {args[0]} failed with exit code {rc}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="change events to produce")
    ap.add_argument("--dim", type=int, default=384, help="vector dimension of 'docs'")
    ap.add_argument("--keep", action="store_true", help="leave the services running")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    import boto3
    import launch
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
    config = write_config(work, broker.bootstrap, topic, s3.endpoint_url, args.dim)

    dims = {"docs": args.dim, "images": 128}
    w = Workload(seed=42, collections=dims, bad_rate=0.002, id_space=4000)
    n = args.events
    step(f"producing {n // 2:,} change events (collections {dims}, tenants {w.tenants})")
    produced = produce(broker.bootstrap, topic, [*w.preamble(), *w.events(n // 2)])
    bad = sum(1 for p in produced if p.event.bad)
    print(f"    {len(produced):,} events, {bad} of them bad on purpose (quarantined, not lost)")

    step("vecwal run --until-caught-up, then vecwal compact")
    t0 = time.monotonic()
    run(["run", "--config", str(config), "--until-caught-up"], env)
    print(f"    captured in {time.monotonic() - t0:.1f}s (including start-up and group join)")
    run(["compact", "--config", str(config)], env)

    step("keep changing: a new embedding model for docs, writes, deletes, tenant 'initech' "
         "of images dropped")
    time.sleep(1.1)
    drop = w._encode(b"images", {"op": "tenant.drop", "collection": "images",
                                 "tenant": "initech"})
    before = produce(broker.bootstrap, topic, [w.schema_change("docs"), *w.events(n // 4), drop])
    target_ms = max(p.timestamp for p in before)
    time.sleep(1.1)
    after = produce(broker.bootstrap, topic, list(w.events(n // 4)))
    print(f"    {len(before):,} events up to T = {iso(target_ms)}, then {len(after):,} more")
    run(["run", "--config", str(config), "--until-caught-up"], env)

    step("vecwal status")
    run(["status", "--config", str(config)], env)
    step("vecwal list")
    run(["list", "--config", str(config)], env)
    step("vecwal verify --deep")
    run(["verify", "--config", str(config), "--deep"], env)

    out = work / "restore"
    step(f"vecwal restore --to {iso(target_ms)} --into dir:{out}")
    run(["restore", "--config", str(config), "--to", iso(target_ms), "--into", f"dir:{out}"],
        env)

    step("checking the restored state against a plain replay of what was produced up to T")
    ok = check_against_replay(out, [*produced, *before, *after], target_ms)
    print("    restored state equals the replay" if ok else "    MISMATCH")

    if args.keep:
        print(f"\nservices left running; try:\n  vecwal list --config {config}\n"
              f"  (AWS_ACCESS_KEY_ID={s3.access_key} AWS_SECRET_ACCESS_KEY={s3.secret_key})")
    else:
        broker.stop()
        s3.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def write_config(work: Path, bootstrap: str, topic: str, endpoint: str, dim: int) -> Path:
    config = work / "vecwal.toml"
    config.write_text(f"""[kafka]
bootstrap_servers = "{bootstrap}"
topics = ["{topic}"]
group_id = "vecwal-demo"

[storage]
url = "s3://demo/vecwal"
endpoint_url = "{endpoint}"

[capture]
segment_max_age_s = 5.0
max_event_bytes = 200000

[capture.dimensions]
docs = {dim}
images = 128

[metrics]
listen = "127.0.0.1:0"

[log]
format = "console"
level = "error"
""")
    return config


def iso(ms: int) -> str:
    from daemon.status import iso_ms

    return str(iso_ms(ms))


def check_against_replay(out: Path, produced: list[Any], target_ms: int) -> bool:
    """Replay the produced events (Kafka's timestamps) with a dictionary, compare to dir:."""
    from daemon.events import EventParser
    from daemon.snapshot.datafile import decode_records

    parser = EventParser(200_000, {"docs": 0})
    parser.dimensions.clear()
    state: dict[tuple[str, str, str], tuple[tuple[int, int, int], Any]] = {}
    drops: dict[tuple[str, str], int] = {}
    for p in produced:
        if p.event.bad or p.timestamp > target_ms:
            continue
        ev = p.event.event
        key = (p.timestamp, p.partition, p.offset)
        if ev["op"] in ("upsert", "delete"):
            k = (ev["collection"], ev.get("tenant", ""), ev["id"])
            if k not in state or key > state[k][0]:
                state[k] = (key, ev if ev["op"] == "upsert" else None)
        elif ev["op"] == "tenant.drop":
            drops[(ev["collection"], ev["tenant"])] = p.timestamp
    want = {k: v for k, (ver, v) in state.items()
            if v is not None and ver[0] > drops.get((k[0], k[1]), -1)}
    got = {}
    for f in out.glob("*/part-*.avro"):
        for r in decode_records(f.read_bytes(), str(f)):
            got[(r["collection"], r["tenant"], r["id"])] = r
    same = set(got) == set(want) and all(
        got[k]["metadata"] is not None and got[k]["document"] == v.get("document")
        for k, v in want.items())
    print(f"    replay: {len(want):,} records; restored: {len(got):,} records")
    return same


if __name__ == "__main__":
    sys.exit(main())
