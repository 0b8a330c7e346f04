"""Several capture daemons in one consumer group: 1, 2 and 4 processes sharing a 12-partition
topic, each running ``CaptureLoop.run(until_caught_up=True)`` into one repository.

    python -m tests.bench.bench_group [--events N] [--format avro|json] [--daemons 1,2,4]
                                      [--rounds R] [--store file|s3]

Each run gets a fresh topic whose events are produced in one transaction held open. Each
daemon is its own process (``--worker``): it imports and builds its loop, says ready and
waits; then all are started at once and join the group, which settles (every partition
assigned) while capture sees nothing, since it reads committed data only. Then the
transaction is committed: the time measured runs from that commit until the group's committed
offsets reach every partition's end, which capture commits only once the events are durable
(polled by this process every 50 ms). Each daemon reports its own CPU seconds from the start
signal to its exit (``getrusage``, every thread): start-up (imports) is left out, joining the
group and its idle wait are in. Rounds rotate the order of the daemon counts; medians, printed
as JSON.

On a machine with fewer cores than daemons this shows the group's overhead, not a speed-up:
the figure that carries to a bigger machine is CPU seconds per 10,000 events.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.bench.bench_capture import machine_busy
from tests.bench.services import Services, services
from tests.bench.workload import event_pool

PARTITIONS = 12


def worker(spec: dict[str, Any]) -> None:
    """One daemon: build the loop, print ``ready``, wait for a line on stdin, capture until the
    group is caught up, print its figures as JSON."""
    import daemon.capture.loop as capture_loop
    from daemon.capture.loop import CaptureLoop
    from daemon.changelog.repository import Repository
    from daemon.config import config_from_mapping
    from daemon.logs import configure_logging
    from daemon.objectstore import open_store

    configure_logging("warning", "console")
    # The catch-up targets: the ends produced, held in an open transaction (capture, reading
    # committed data, would otherwise see the last stable offsets before the commit: 0).
    ends = {(spec["topic"], int(p)): (0, hi) for p, hi in spec["ends"].items()}

    def held_ends(consumer: Any, partitions: Any, timeout: float = 10.0) -> dict[Any, Any]:
        return ends

    capture_loop.high_watermarks = held_ends  # type: ignore[attr-defined]  # imported there
    cfg = config_from_mapping({
        "kafka": {"bootstrap_servers": spec["bootstrap"], "topics": [spec["topic"]],
                  "group_id": spec["group"], "format": spec["format"]},
        "storage": {"url": spec["url"], "endpoint_url": spec["endpoint"]},
        "metrics": {"listen": ""}}, environ={})
    loop = CaptureLoop(cfg, Repository(open_store(spec["url"],
                                                  endpoint_url=spec["endpoint"] or None)))
    print("ready", flush=True)
    sys.stdin.readline()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    assert loop.run(until_caught_up=True) == 0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    captured = loop.metrics.registry.get_sample_value("vecwal_events_captured_total",
                                                      {"topic": spec["topic"]})
    print(orjson.dumps({
        "cpu_s": ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime,
        "events": int(captured or 0)}).decode(), flush=True)


def committed_all(probe: Consumer, topic: str, ends: dict[int, int]) -> bool:
    got = probe.committed([TopicPartition(topic, p) for p in ends], timeout=10)
    return all(tp.offset >= ends[tp.partition] for tp in got)


def produce_held(bootstrap: str, topic: str, pool: list[bytes], n: int) -> Producer:
    """Produce ``n`` events in one transaction left open: a read_committed consumer (capture)
    sees none of them until it is committed (``commit_transaction``)."""
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"bench-{topic}",
                  "transaction.timeout.ms": 600_000, "linger.ms": 20, "batch.size": 1_000_000,
                  "compression.type": "none", "queue.buffering.max.kbytes": 262144,
                  "message.max.bytes": 10_000_000})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(n):
        while True:
            try:
                p.produce(topic, pool[i % len(pool)], f"doc-{i}".encode())
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    return p


def group_stable(admin: AdminClient, group: str, members: int) -> bool:
    """The group has ``members`` members, every partition assigned, and is stable."""
    desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    assigned = sum(len(m.assignment.topic_partitions) for m in desc.members)
    return (str(desc.state).endswith("STABLE") and len(desc.members) == members
            and assigned == PARTITIONS)


def group_run(svc: Services, fmt: str, n: int, daemons: int, store: str) -> dict[str, Any]:
    """``daemons`` processes capture a fresh topic of ``n`` events in one group; their figures.

    The events are produced in a transaction held open until the group is stable, so every
    daemon starts with its share of the partitions (capture reads committed data only): the
    time measured is the group's steady work, from the commit to the last offset committed."""
    topic = svc.topic(partitions=PARTITIONS)
    producer = produce_held(svc.bootstrap, topic, event_pool(fmt), n)
    group = f"group-{uuid.uuid4().hex[:6]}"
    if store == "s3":
        url, endpoint = f"s3://{svc.bucket()}/repo", svc.s3_endpoint
    else:
        url, endpoint = f"file://{tempfile.mkdtemp(prefix='bench-repo-', dir=svc.workdir)}", ""
    probe = Consumer({"bootstrap.servers": svc.bootstrap, "group.id": group,
                      "isolation.level": "read_uncommitted"})  # the ends, uncommitted
    ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(PARTITIONS)}
    assert sum(ends.values()) == n
    spec = {"bootstrap": svc.bootstrap, "topic": topic, "group": group, "format": fmt,
            "url": url, "endpoint": endpoint, "ends": {str(p): hi for p, hi in ends.items()}}
    env = {**os.environ, **svc.s3_env}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.bench.bench_group", "--worker",
                               orjson.dumps(spec).decode()], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True)
             for _ in range(daemons)]
    admin = AdminClient({"bootstrap.servers": svc.bootstrap})
    committed = False
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        while not group_stable(admin, group, daemons):
            assert time.monotonic() - go < 120, "the group did not settle"
            time.sleep(0.1)
        stable = time.monotonic()
        busy0 = machine_busy()[0]
        began = time.monotonic()
        producer.commit_transaction(30)
        committed = True
        while not committed_all(probe, topic, ends):
            time.sleep(0.05)
        done = time.monotonic()
        busy = machine_busy()[0] - busy0
        outs = []
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0, p.returncode
            outs.append(orjson.loads(out.strip().splitlines()[-1]))
    finally:
        if not committed:
            producer.abort_transaction(30)
        probe.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        admin.delete_topics([topic])
        if store == "file":
            shutil.rmtree(url.removeprefix("file://"), ignore_errors=True)
    assert sum(o["events"] for o in outs) == n, outs
    cpu = sum(o["cpu_s"] for o in outs)
    return {"seconds": done - began, "events_per_s": n / (done - began),
            "settle_s": stable - go,
            "cpu_s_per_10k": cpu / n * 1e4, "machine_cpu_s_per_10k": busy / n * 1e4,
            "events_per_daemon": sorted(o["events"] for o in outs)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--format", default="avro", choices=("avro", "json"))
    ap.add_argument("--daemons", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--store", default="file", choices=("file", "s3"))
    args = ap.parse_args(argv)
    if args.worker:
        worker(orjson.loads(args.worker))
        return {}
    counts = [int(x) for x in args.daemons.split(",")]
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in counts}
    with services() as svc:
        for r in range(args.rounds):
            for k in counts[r % len(counts):] + counts[:r % len(counts)]:
                runs[k].append(group_run(svc, args.format, args.events, k, args.store))
                last = runs[k][-1]
                print(f"round {r}, {k} daemon(s): {last['events_per_s']:,.0f}/s, "
                      f"{last['cpu_s_per_10k']:.3f} cpu-s/10k, events per daemon "
                      f"{last['events_per_daemon']}", file=sys.stderr)
    one = statistics.median(x["cpu_s_per_10k"] for x in runs[counts[0]])
    results: dict[str, Any] = {"events": args.events, "format": args.format,
                               "store": args.store, "partitions": PARTITIONS,
                               "rounds": args.rounds, "cores": os.cpu_count()}
    for k, rs in runs.items():
        med = {key: statistics.median(x[key] for x in rs)
               for key in ("seconds", "events_per_s", "settle_s", "cpu_s_per_10k",
                           "machine_cpu_s_per_10k")}
        results[f"daemons_{k}"] = {
            "events_per_s": round(med["events_per_s"]), "seconds": round(med["seconds"], 2),
            "settle_s": round(med["settle_s"], 2),
            "cpu_s_per_10k": round(med["cpu_s_per_10k"], 3),
            "cpu_ratio_to_first": round(med["cpu_s_per_10k"] / one, 2),
            "machine_cpu_s_per_10k": round(med["machine_cpu_s_per_10k"], 3),
            "events_per_daemon": [x["events_per_daemon"] for x in rs]}
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return results


if __name__ == "__main__":
    main()
