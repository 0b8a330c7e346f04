"""End-to-end RPO of a Debezium CDC pipeline: from a SQL COMMIT in PostgreSQL (pgvector) to
the segment holding that row being durable, through Debezium (Kafka Connect) and Kafka, at a
steady row rate (issue 12).

    python -m tests.bench.bench_cdc_rpo [--rate 500] [--seconds 60] [--dim 768]
                                        [--rows-per-tx 1] [--age 5] [--store s3|file]
                                        [--schemas-enable]

Services: Kafka and the S3 server as every benchmark's (tests.bench.services), PostgreSQL with
pgvector and a Kafka Connect worker with Debezium's PostgresConnector from deploy/local (as
tests/services_cdc.py starts them). The table ``public.docs(id bigint PRIMARY KEY, tenant text,
embedding vector(768), doc text)``; its topic is created beforehand with LogAppendTime.

One client inserts rows at the target rate, ``--rows-per-tx`` rows per transaction (autocommit
when 1), and notes the wall time each COMMIT returned. vecwal runs as a real process
(``vecwal run``, ``[kafka] format = "debezium"``, default settings but the segment age) and,
as in bench_rpo, says in its JSON log when each segment became durable. Afterwards the topic is
read back: each message's LogAppendTime and row id. Per row:

- RPO = durable (the ``segment durable`` line of the segment holding its offset) - COMMIT;
- Debezium + Kafka = LogAppendTime - COMMIT;
- vecwal = durable - LogAppendTime.

Prints p50/p95/p99/max of each as JSON, and the worst Debezium + Kafka delay in each 10 s of
inserts (a backlog grows; a stall comes and goes).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time
import uuid
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.bench.bench_rpo import (
    _durable_through,
    _lines,
    _segments,
    _wait,
    daemon_settings,
    durable_at,
    start_daemon,
)
from tests.bench.services import services
from tests.services import load_launcher


def quantiles(values: list[float]) -> dict[str, float]:
    v = sorted(values)

    def at(q: float) -> float:
        return round(v[min(len(v) - 1, max(0, int(len(v) * q) - 1))], 3)

    return {"p50": round(statistics.median(v), 3), "p95": at(0.95), "p99": at(0.99),
            "max": round(v[-1], 3)}


def vector_texts(dim: int, size: int = 200, seed: int = 7) -> list[str]:
    """pgvector text of unit float32 vectors."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(size):
        v = rng.standard_normal(dim).astype(np.float32)
        v /= np.linalg.norm(v)
        out.append("[" + ",".join(str(x) for x in v) + "]")
    return out


def insert_steadily(dsn: str, rate: float, seconds: float, dim: int, per_tx: int
                    ) -> tuple[dict[int, float], float]:
    """Insert rate*seconds rows (ids 1..n) at a steady rate; id -> wall time (s) its COMMIT
    returned, and the seconds it all took."""
    import psycopg

    vectors = vector_texts(dim)
    n = int(rate * seconds)
    committed: dict[int, float] = {}
    sql = "INSERT INTO docs (id, tenant, embedding, doc) VALUES (%s, %s, %s::vector, %s)"
    with psycopg.connect(dsn, autocommit=per_tx == 1) as conn:
        began = time.monotonic()
        i = 0
        while i < n:
            ids = range(i + 1, min(n, i + per_tx) + 1)
            rows = [(r, ("acme", "globex")[r % 2], vectors[r % len(vectors)],
                     f"chunk {r} of the corpus") for r in ids]
            if per_tx == 1:
                conn.execute(sql, rows[0])
            else:
                with conn.cursor() as cur:
                    cur.executemany(sql, rows)
                conn.commit()
            now = time.time()
            for r in ids:
                committed[r] = now
            i += len(rows)
            ahead = i / rate - (time.monotonic() - began)
            if ahead > 0.001:
                time.sleep(ahead)
        return committed, time.monotonic() - began


def read_topic(bootstrap: str, topic: str, n: int, timeout: float = 300
               ) -> list[tuple[int, int, int, int]]:
    """(partition, offset, LogAppendTime ms, row id) of the first n change events."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=1.0):
                if m.error() is None and m.value() is not None:
                    row = orjson.loads(m.key() or b"{}")
                    rid = row["payload"]["id"] if "payload" in row else row["id"]
                    out.append((m.partition(), m.offset(), m.timestamp()[1], int(rid)))
    finally:
        c.close()
    if len(out) < n:
        raise TimeoutError(f"read {len(out)} of {n} change events from {topic}")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--rows-per-tx", type=int, default=1)
    ap.add_argument("--age", type=float, default=5.0, help="[capture] segment_max_age_s")
    ap.add_argument("--store", choices=("s3", "file"), default="s3")
    ap.add_argument("--schemas-enable", action="store_true",
                    help="JsonConverter schemas.enable=true (each message carries its schema)")
    args = ap.parse_args(argv)
    launch = load_launcher()
    with services() as svc:
        pg = launch.PostgresServer(svc.workdir / "postgres").start()
        connect = None
        try:
            db = "bench"
            pg.psql(f"CREATE DATABASE {db}")
            pg.psql("CREATE EXTENSION IF NOT EXISTS vector", db)
            pg.psql(f"CREATE TABLE docs (id bigint PRIMARY KEY, tenant text, "
                    f"embedding vector({args.dim}), doc text)", db)
            tag = uuid.uuid4().hex[:8]
            prefix, slot = f"cdc-{tag}", f"bench_{tag}"
            topic = f"{prefix}.public.docs"
            _create_topic(svc.bootstrap, topic)
            connect = launch.KafkaConnect(svc.workdir / "connect", svc.bootstrap).start()
            connect.add_connector(f"debezium-{tag}", launch.debezium_postgres_config(
                host=launch.HOST, port=pg.port, user=pg.user, password=pg.password,
                dbname=db, topic_prefix=prefix, table_include_list=r"public\.docs",
                slot_name=slot, schemas_enable=args.schemas_enable))
            result = _run(args, svc, pg.dsn(db), topic)
        finally:
            if connect is not None:
                connect.stop()
            pg.stop()
            pg.remove_data()
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return result


def _create_topic(bootstrap: str, topic: str) -> None:
    """Debezium's topic, made before Connect would make it: one partition (as
    ``topic.creation.default.partitions``), stamped with LogAppendTime."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={
        "message.timestamp.type": "LogAppendTime",
        "max.message.bytes": "10000000"})])[topic].result(30)


def _run(args: argparse.Namespace, svc: Any, dsn: str, topic: str) -> dict[str, Any]:
    if args.store == "s3":
        storage = f'url = "s3://{svc.bucket()}/repo"\nendpoint_url = "{svc.s3_endpoint}"'
    else:
        storage = f'url = "file://{svc.workdir / "repo"}"'
    cfg = svc.workdir / "cdc.toml"
    cfg.write_text(f"""[kafka]
bootstrap_servers = "{svc.bootstrap}"
topics = ["{topic}"]
group_id = "cdc-rpo"
format = "debezium"
[kafka.debezium."public.docs"]
tenant = "tenant"
document = "doc"
[storage]
{storage}
""" + daemon_settings(args.age))
    log_path = svc.workdir / "daemon.log"
    proc = start_daemon(cfg, log_path, svc.s3_env)
    try:
        _wait(lambda: '"partition assigned"' in log_path.read_text(), 60)
        committed, took = insert_steadily(dsn, args.rate, args.seconds, args.dim,
                                          args.rows_per_tx)
        events = read_topic(svc.bootstrap, topic, len(committed))
        end = max(o for _, o, _, _ in events) + 1
        _wait(lambda: _durable_through(log_path).get(0, 0) >= end, 120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    durable = [ev for ev in _lines(log_path) if ev.get("event") == "segment durable"]
    segments = _segments(log_path)
    rpo, kafka_share, vecwal_share = [], [], []
    for p, offset, append_ms, rid in events:
        durable_ms = durable_at(segments, p, offset)
        commit_ms = committed[rid] * 1000
        rpo.append((durable_ms - commit_ms) / 1000)
        kafka_share.append((append_ms - commit_ms) / 1000)
        vecwal_share.append((durable_ms - append_ms) / 1000)
    q = quantiles(rpo)
    first = min(committed.values())
    windows: dict[int, list[float]] = {}
    for (_, _, _, rid), share in zip(events, kafka_share, strict=True):
        windows.setdefault(int((committed[rid] - first) // 10), []).append(share)
    return {
        "rows": len(events), "rate_target": args.rate,
        "rate_achieved": round(len(committed) / took), "rows_per_tx": args.rows_per_tx,
        "dim": args.dim, "schemas_enable": args.schemas_enable,
        "segment_max_age_s": args.age, "store": args.store,
        "segments": len(durable), "records": sum(ev["records"] for ev in durable),
        "quarantined": sum(ev["quarantined"] for ev in durable),
        "segment_age_s_median": round(statistics.median(ev["age_s"] for ev in durable), 3),
        "upload_ms_median": round(statistics.median(ev["upload_ms"] for ev in durable), 1),
        "rpo_s": q, "p99_under_10s": q["p99"] < 10,
        "debezium_kafka_s": quantiles(kafka_share),
        "debezium_kafka_max_s_per_10s_of_inserts": [
            round(max(windows[w]), 2) for w in sorted(windows)],
        "vecwal_s": quantiles(vecwal_share),
        "debezium_kafka_share_of_mean_rpo": round(
            statistics.mean(kafka_share) / statistics.mean(rpo), 3),
    }


if __name__ == "__main__":
    main()
