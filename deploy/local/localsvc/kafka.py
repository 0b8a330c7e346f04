"""Single-node KRaft Kafka (combined broker+controller) on 127.0.0.1, and a stdlib probe of the
Kafka wire protocol (ApiVersions, then Metadata) that tells when the broker answers.

``security="sasl_ssl"`` makes the client listener SASL_SSL: a throwaway CA and a certificate
for 127.0.0.1 made with openssl at the first start (``tls.py``), SCRAM-SHA-512 users created
when the storage is formatted (``StorageTool format --add-scram``) with random passwords kept
(0600) in the work directory, the broker's own inter-broker connections authenticated as
``admin``. The controller listener stays PLAINTEXT on 127.0.0.1, internal to the node."""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import struct
import subprocess
from pathlib import Path
from typing import Any

from .common import HOST, LaunchError
from .install import LOCAL_DIR, install_kafka, java_executable, kafka_version
from .process import check_port_free, free_ports, port_open
from .service import Service
from .tls import ServerPki, server_pki

SECURITY = ("plaintext", "sasl_ssl")
SASL_MECHANISM = "SCRAM-SHA-512"
SASL_USERS = ("admin", "vecwal")
"""``admin`` is the broker's own inter-broker identity (and the tests' topic admin);
``vecwal`` is the client vecwal runs as. No authorizer: any authenticated user may do all."""

KAFKA_LOG4J2 = LOCAL_DIR / "kafka" / "log4j2.properties"
KAFKA_JAVA_OPTS = [
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]


def _kafka_request(
    sock: socket.socket, api_key: int, version: int, corr: int, body: bytes
) -> bytes:
    client_id = b"vecwal-launch"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)

    def recv_exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by broker")
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", recv_exact(4))
    resp = recv_exact(size)
    (got_corr,) = struct.unpack(">i", resp[:4])
    if got_corr != corr:
        raise ConnectionError(f"correlation id {got_corr} != {corr}")
    return resp[4:]


def kafka_wire_probe(port: int, host: str = HOST, timeout: float = 2.0,
                     tls: ssl.SSLContext | None = None) -> int:
    """Number of brokers a Metadata request returns (raises OSError/ValueError when not ready).

    ApiVersions v0 first (always supported), then the lowest non-flexible Metadata version
    (4..8) the broker accepts. Kafka 4.x removed Metadata v0-v3. With ``tls`` (a SASL_SSL
    listener) the connection is TLS and only ApiVersions is asked: it is the one request a
    broker answers before SASL authentication; 1 when it does.
    """
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = raw if tls is None else tls.wrap_socket(raw, server_hostname=host)
        sock.settimeout(timeout)
        r = _kafka_request(sock, 18, 0, 1, b"")
        (err, n) = struct.unpack(">hi", r[:6])
        if err != 0:
            raise ValueError(f"ApiVersions error {err}")
        if tls is not None:
            return 1
        versions = {}
        for i in range(n):
            key, lo, hi = struct.unpack(">hhh", r[6 + 6 * i : 12 + 6 * i])
            versions[key] = (lo, hi)
        lo, hi = versions.get(3, (-1, -1))
        v = max(lo, 4)
        if lo < 0 or v > min(hi, 8):
            return 1  # no non-flexible Metadata version to try: ApiVersions answered, good enough
        # topics: empty array (no topic data wanted); v4+ has allow_auto_topic_creation
        body = struct.pack(">ib", 0, 0)
        r = _kafka_request(sock, 3, v, 2, body)
        (nbrokers,) = struct.unpack(">i", r[4:8])  # after throttle_time_ms (v3+)
        if nbrokers <= 0:
            raise ValueError("metadata lists no broker yet")
        return int(nbrokers)


def _admin_list_topics(bootstrap: str, timeout: float,
                       client: dict[str, str] | None = None) -> None:
    """confluent_kafka AdminClient.list_topics when the package is importable (else no-op)."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, **(client or {})})
    md = admin.list_topics(timeout=timeout)
    if not md.brokers:
        raise ValueError("AdminClient metadata lists no broker yet")


class KafkaBroker(Service):
    """Single-node KRaft Kafka (combined broker+controller) on 127.0.0.1."""

    kind = "kafka"
    log_name = "kafka.log"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        controller_port: int | None = None,
        tie_to_parent: bool = True,
        security: str = "plaintext",
    ) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        if security not in SECURITY:
            raise LaunchError(f"security {security!r} is not one of {', '.join(SECURITY)}")
        self.port = port
        self.controller_port = controller_port
        self.security = security
        self._pki: ServerPki | None = None
        self._users: dict[str, str] | None = None

    # -- SASL_SSL ---------------------------------------------------------------------------
    @property
    def secured(self) -> bool:
        return self.security == "sasl_ssl"

    @property
    def pki(self) -> ServerPki:
        """The throwaway CA and broker certificate (made on first use, kept in workdir/tls)."""
        if not self.secured:
            raise LaunchError("the broker was not started with security='sasl_ssl'")
        if self._pki is None:
            self._pki = server_pki(self.workdir / "tls")
        return self._pki

    @property
    def ca_file(self) -> Path:
        """The CA that signed the broker's certificate (PEM): librdkafka's ssl.ca.location."""
        return self.pki.ca_file

    @property
    def users(self) -> dict[str, str]:
        """SCRAM-SHA-512 user name -> password (random at the first start, then kept)."""
        if not self.secured:
            return {}
        if self._users is None:
            path = self.workdir / "sasl-users.json"
            if path.is_file():
                self._users = dict(json.loads(path.read_text()))
            else:
                self._users = {u: f"vecwal-sasl-{u}-{secrets.token_hex(12)}" for u in SASL_USERS}
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    json.dump(self._users, f)
        return self._users

    def client_settings(self, user: str = "vecwal", password: str | None = None) -> dict[str, str]:
        """librdkafka properties that reach the client listener as ``user`` (``{}`` on a
        plaintext broker): vecwal's ``[kafka.client]``."""
        if not self.secured:
            return {}
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SASL_MECHANISM,
            "sasl.username": user,
            "sasl.password": self.users[user] if password is None else password,
            "ssl.ca.location": str(self.ca_file),
        }

    def _security_props(self) -> dict[str, str]:
        assert self.port is not None and self.controller_port is not None
        pki, admin = self.pki, self.users["admin"]
        return {
            "listeners": f"SASL_SSL://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"SASL_SSL://{HOST}:{self.port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": SASL_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SASL_MECHANISM,
            f"listener.name.sasl_ssl.{SASL_MECHANISM.lower()}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="admin" password="{admin}";',
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(pki.keystore),
            "ssl.keystore.password": pki.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(pki.ca_file),
            "ssl.client.auth": "none",
        }

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise LaunchError("the broker has not been started yet (no port)")
        return f"{HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    def _java(self) -> list[str]:
        return [
            java_executable(),
            *KAFKA_JAVA_OPTS,
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J2}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{install_kafka()}/*",
        ]

    def _write_config(self) -> None:
        assert self.port is not None and self.controller_port is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # static quorum: storage is formatted WITHOUT --standalone
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # small machine, fast tests
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "num.partitions": "1",
            # topics are created explicitly (tests: kafka_topic fixture)
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            # after a crash (SIGKILL) the new registration waits for the old broker session
            # to expire: 9 s by default; 4 s here, with a heartbeat well inside it
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "4000",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # log.message.timestamp.type stays at its default (CreateTime): topics choose
        }
        if self.secured:
            props.update(self._security_props())
        text = "# written by deploy/local/launch.py\n" + "".join(
            f"{k}={v}\n" for k, v in props.items()
        )
        self.config_path.touch(mode=0o600)  # the SASL_SSL config holds passwords
        os.chmod(self.config_path, 0o600)
        self.config_path.write_text(text)

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        java = self._java()
        r = subprocess.run(
            [*java, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.workdir,
        )
        cluster_id = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        if r.returncode != 0 or not cluster_id:
            raise LaunchError(
                f"StorageTool random-uuid failed ({r.returncode}): {r.stderr[-2000:]}"
            )
        r = subprocess.run(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config_path),
                *self._scram_args(),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.workdir,
        )
        if r.returncode != 0:
            raise LaunchError(
                f"StorageTool format failed ({r.returncode}): {(r.stdout + r.stderr)[-3000:]}"
            )

    def _scram_args(self) -> list[str]:
        """``--add-scram`` per user. The passwords pass on the command line of the format
        tool (seen by local users for its second of life): acceptable for a throwaway broker."""
        out: list[str] = []
        for user, password in self.users.items():
            out += ["--add-scram", f"{SASL_MECHANISM}=[name={user},password={password}]"]
        return out

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not port_open(self.port):
            return False
        tls = self.pki.client_context() if self.secured else None
        kafka_wire_probe(self.port, timeout=min(2.0, remaining), tls=tls)
        _admin_list_topics(self.bootstrap, timeout=max(0.5, min(5.0, remaining)),
                           client=self.client_settings("admin"))
        return True

    def start(self, timeout: float = 90) -> KafkaBroker:
        """Start (formatting storage on first use) and wait until metadata requests succeed."""
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None or self.controller_port is None:
            picked = free_ports(2)
            self.port = self.port or picked[0]
            self.controller_port = self.controller_port or picked[1]
        check_port_free(self.port)
        check_port_free(self.controller_port)
        java = self._java()
        self._write_config()
        self._format_storage()
        self._launch([*java, "kafka.Kafka", str(self.config_path)])
        self._wait(timeout, self._ready)
        return self

    def restart(self, timeout: float = 90) -> KafkaBroker:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start(timeout)

    def describe(self) -> dict[str, Any]:
        return {
            "service": "kafka",
            "pid": self.pid,
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap": self.bootstrap,
            "workdir": str(self.workdir),
            "log": str(self.log_path),
            "kafka_version": kafka_version(),
            "security": self.security,
            **({"ca_file": str(self.ca_file), "sasl_mechanism": SASL_MECHANISM,
                "sasl_users": self.users} if self.secured else {}),
        }
