"""Kafka Connect (standalone worker) with the Debezium PostgreSQL connector on 127.0.0.1: the
CDC source of vecwal's tests (PostgreSQL + pgvector -> Debezium -> the local Kafka broker).

One worker process (``org.apache.kafka.connect.cli.ConnectStandalone``), its REST API on a
127.0.0.1 port, its source offsets in workdir/offsets.dat. Connectors are given at start
(written as .properties files next to the worker's) or added later through the REST API
(``add_connector``); either way the service waits until the connector and every task report
RUNNING, and fails with the task's stack trace when one reports FAILED.

Converters: JsonConverter for keys and values; ``schemas.enable`` is the worker's default
(``schemas_enable``) and a connector may override it (``value.converter.schemas.enable``).
Topics are created by Connect (``topic.creation.default.*``: 1 partition, replication 1): the
local broker does not auto-create topics.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from .common import HOST, LaunchError
from .install import LOCAL_DIR, debezium_version, install_connect, java_executable, kafka_version
from .process import check_port_free, free_ports, port_open
from .service import Service

CONNECT_LOG4J2 = LOCAL_DIR / "connect" / "log4j2.properties"
CONNECT_JAVA_OPTS = [
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:TieredStopAtLevel=1",  # faster start; the worker does little CPU work in tests
    "-Djava.awt.headless=true",
]
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"


def _properties(props: dict[str, str]) -> str:
    """Java .properties text (values escaped: a regex's backslash survives)."""

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n")

    return "# written by deploy/local/launch.py\n" + "".join(
        f"{k}={esc(v)}\n" for k, v in props.items()
    )


def debezium_postgres_config(
    *,
    host: str,
    port: int,
    user: str,
    password: str,
    dbname: str,
    topic_prefix: str,
    table_include_list: str,
    slot_name: str,
    schemas_enable: bool | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Config of an ``io.debezium.connector.postgresql.PostgresConnector``: pgoutput, an
    initial snapshot, a publication of the included tables made by the connector, the slot
    dropped when the connector stops (slot names are per database cluster: make them unique).
    Topics: ``<topic_prefix>.<schema>.<table>``. ``extra`` is merged last."""
    cfg = {
        "connector.class": POSTGRES_CONNECTOR,
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": host,
        "database.port": str(port),
        "database.user": user,
        "database.password": password,
        "database.dbname": dbname,
        "topic.prefix": topic_prefix,
        "table.include.list": table_include_list,
        "slot.name": slot_name,
        "slot.drop.on.stop": "true",
        "publication.name": f"{slot_name}_pub",
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": "initial",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": "1",
    }
    if schemas_enable is not None:
        flag = "true" if schemas_enable else "false"
        cfg.update({
            "key.converter": JSON_CONVERTER,
            "key.converter.schemas.enable": flag,
            "value.converter": JSON_CONVERTER,
            "value.converter.schemas.enable": flag,
        })
    cfg.update(extra or {})
    return cfg


class KafkaConnect(Service):
    """A standalone Kafka Connect worker with Debezium's PostgreSQL connector on its class path."""

    kind = "connect"
    log_name = "connect.log"

    def __init__(
        self,
        workdir: Path,
        bootstrap: str,
        port: int | None = None,
        *,
        connectors: dict[str, dict[str, str]] | None = None,
        schemas_enable: bool = True,
        tie_to_parent: bool = True,
    ) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        self.bootstrap = bootstrap
        self.port = port
        self.connectors = dict(connectors or {})
        self.schemas_enable = schemas_enable

    @property
    def rest_url(self) -> str:
        if self.port is None:
            raise LaunchError("connect has not been started yet (no port)")
        return f"http://{HOST}:{self.port}"

    @property
    def worker_config_path(self) -> Path:
        return self.workdir / "worker.properties"

    def _write_config(self) -> list[Path]:
        assert self.port is not None
        flag = "true" if self.schemas_enable else "false"
        worker = {
            "bootstrap.servers": self.bootstrap,
            "key.converter": JSON_CONVERTER,
            "value.converter": JSON_CONVERTER,
            "key.converter.schemas.enable": flag,
            "value.converter.schemas.enable": flag,
            "offset.storage.file.filename": str(self.workdir / "offsets.dat"),
            "offset.flush.interval.ms": "1000",
            "listeners": f"http://{HOST}:{self.port}",
            "rest.advertised.host.name": HOST,
            "rest.advertised.port": str(self.port),
            # the connector is on the class path and declares itself in META-INF/services:
            # no reflective scan of every jar (slow) is needed
            "plugin.discovery": "service_load",
            "topic.creation.enable": "true",
            "task.shutdown.graceful.timeout.ms": "5000",
        }
        self.worker_config_path.write_text(_properties(worker))
        files = []
        for name, cfg in self.connectors.items():
            p = self.workdir / f"connector-{name}.properties"
            p.write_text(_properties({"name": name, **cfg}))
            files.append(p)
        return files

    # ---- REST ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None,
                 timeout: float = 10) -> tuple[int, Any]:
        assert self.port is not None
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.strip() else None
        finally:
            conn.close()

    def connector_status(self, name: str) -> dict[str, Any] | None:
        """GET /connectors/NAME/status (None while the worker does not know the connector)."""
        code, body = self._request("GET", f"/connectors/{name}/status")
        if code == 404:
            return None
        if code != 200:
            raise LaunchError(f"GET /connectors/{name}/status: HTTP {code}: {body}")
        return dict(body)

    def _connector_running(self, name: str) -> bool:
        """True when the connector and all its tasks are RUNNING; raises when one FAILED."""
        status = self.connector_status(name)
        if status is None:
            return False
        parts = [("connector", status.get("connector") or {})] + [
            (f"task {t.get('id')}", t) for t in status.get("tasks") or []
        ]
        for what, part in parts:
            if part.get("state") == "FAILED":
                raise LaunchError(f"connector {name}: {what} FAILED:\n{part.get('trace', '')}")
        tasks = status.get("tasks") or []
        return (status.get("connector") or {}).get("state") == "RUNNING" and bool(tasks) and all(
            t.get("state") == "RUNNING" for t in tasks
        )

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not port_open(self.port):
            return False
        code, _ = self._request("GET", "/connectors", timeout=min(2.0, remaining))
        if code != 200:
            return False
        return all(self._connector_running(name) for name in self.connectors)

    def add_connector(self, name: str, config: dict[str, str], timeout: float = 60) -> float:
        """Create (or reconfigure) a connector through REST and wait until it and its tasks run;
        returns the seconds that took."""
        if not self.running():
            raise LaunchError("connect is not running: start() it first")
        t0 = time.monotonic()
        code, body = self._request("PUT", f"/connectors/{name}/config", config, timeout=30)
        if code not in (200, 201):
            raise LaunchError(f"PUT /connectors/{name}/config: HTTP {code}: {body}")
        self.connectors[name] = dict(config)
        deadline = t0 + timeout
        while not self._connector_running(name):
            if self.proc is None or self.proc.poll() is not None:
                raise self._fail("the worker exited while starting a connector")
            if time.monotonic() > deadline:
                raise LaunchError(f"connector {name} not RUNNING after {timeout:.0f} s: "
                                  f"{self.connector_status(name)}")
            time.sleep(0.1)
        return time.monotonic() - t0

    def delete_connector(self, name: str, timeout: float = 30) -> None:
        """DELETE the connector (its task stops; Debezium then drops its slot) and wait."""
        code, body = self._request("DELETE", f"/connectors/{name}", timeout=timeout)
        if code not in (200, 204, 404):
            raise LaunchError(f"DELETE /connectors/{name}: HTTP {code}: {body}")
        self.connectors.pop(name, None)
        deadline = time.monotonic() + timeout
        while self.connector_status(name) is not None:
            if time.monotonic() > deadline:
                raise LaunchError(f"connector {name} still listed {timeout:.0f} s after DELETE")
            time.sleep(0.1)

    # ---- life cycle ----------------------------------------------------------------------

    def start(self, timeout: float = 120) -> KafkaConnect:
        """Start the worker (and the connectors given) and wait until the REST API answers and
        every connector and task is RUNNING."""
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_ports(1)[0]
        check_port_free(self.port)
        libs = install_connect()
        connector_files = self._write_config()
        cmd = [
            java_executable(),
            *CONNECT_JAVA_OPTS,
            f"-Dlog4j2.configurationFile={CONNECT_LOG4J2}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{libs}/*",
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(self.worker_config_path),
            *map(str, connector_files),
        ]
        self._launch(cmd)
        self._wait(timeout, self._ready)
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "service": "connect",
            "pid": self.pid,
            "port": self.port,
            "rest_url": self.rest_url,
            "bootstrap": self.bootstrap,
            "connectors": sorted(self.connectors),
            "schemas_enable": self.schemas_enable,
            "workdir": str(self.workdir),
            "log": str(self.log_path),
            "kafka_version": kafka_version(),
            "debezium_version": debezium_version(),
        }
