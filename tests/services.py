"""pytest plugin: a real Kafka broker and a real S3 server for vecwal's tests.

Loaded by tests/conftest.py (``pytest_plugins = ["tests.services"]``). Each service is found
or started once per pytest session, trying in order:

1. the environment: ``KAFKA_BOOTSTRAP_SERVERS``; ``AWS_ENDPOINT_URL_S3`` (or
   ``AWS_ENDPOINT_URL``) with ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
   (and ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, default us-east-1);
2. testcontainers, only when a Docker engine answers a ping (set ``VECWAL_TESTCONTAINERS=0``
   to skip this step);
3. the project's own launchers, deploy/local/launch.py (Kafka jars and s3proxy from Maven
   Central, cached in $VECWAL_CACHE), with work directories under pytest's tmp dir.

Nothing is ever skipped for a missing service: when the launcher cannot start one, every test
that needs it errors with the launcher's message (log tail included).

Fixtures:
    kafka_service  (session)  .bootstrap, .controllable, .source; .restart()/.stop()/.start()
                              when controllable (local launcher)
    kafka_bootstrap (session) "host:port"
    kafka_admin    (session)  confluent_kafka AdminClient
    kafka_topic    (function) factory: kafka_topic(partitions=3, config=None) -> topic name
    s3_service     (session)  .endpoint_url, .access_key, .secret_key, .region, .controllable,
                              .source; .stop()/.start() when controllable
    s3_client      (session)  boto3 S3 client (path-style addressing)
    s3_bucket      (function) name of a fresh, empty bucket
    seaweedfs_service (session) an S3Service for SeaweedFS (versioning, Object Lock), always
                              from the launcher (built from source once, cached): the env and
                              testcontainers S3 may lack Object Lock
    seaweedfs_client  (session) boto3 S3 client on it
    seaweedfs_bucket  (function) a fresh plain bucket on it
    seaweedfs_lock_bucket (function) a fresh bucket created with Object Lock (and so versioning)
    postgres_service, postgres_database, connect_service, debezium_connector: the Debezium
                              CDC source (PostgreSQL + pgvector -> Kafka Connect ->
                              kafka_service), in tests/services_cdc.py
    secured_kafka, secured_kafka_topic, tls_s3_service, tls_s3_bucket: a SASL_SSL broker
                              and an HTTPS s3proxy, in tests/services_secured.py
    registry_service (session) .url (Confluent Schema Registry REST API), .client(),
                              .source; .stop()/.start() when local: ``SCHEMA_REGISTRY_URL``,
                              else Apicurio Registry (in memory) from deploy/local
    kms_service    (session)  .endpoint_url, .region, .create_key(), .schedule_deletion(),
                              .client(), .env; .stop()/.start() when local:
                              ``AWS_ENDPOINT_URL_KMS``, else local-kms from deploy/local
    milvus_service (session)  .uri, .version, .client(db): ``VECWAL_MILVUS_URI``, else Milvus
                              2.3.5 standalone from deploy/local; milvus_database (function)
                              the URI of a fresh database on it, in tests/services_milvus.py
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.service_control import LocalControl

REPO = Path(__file__).resolve().parents[1]
LAUNCH_PY = REPO / "deploy" / "local" / "launch.py"
DEFAULT_REGION = "us-east-1"
DEFAULT_TOPIC_CONFIG = {"message.timestamp.type": "LogAppendTime"}
S3PROXY_IMAGE = "andrewgaul/s3proxy"

# service name -> (source, seconds to become ready); shown in the terminal summary
STARTUP: dict[str, tuple[str, float]] = {}


def load_launcher() -> ModuleType:
    """deploy/local/launch.py, imported by file path (deploy/ is not a package)."""
    name = "vecwal_local_launch"
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_file_location(name, LAUNCH_PY)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {LAUNCH_PY}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


@functools.cache
def docker_engine_available() -> bool:
    """True only when a Docker engine answers (the docker CLI alone proves nothing)."""
    if os.environ.get("VECWAL_TESTCONTAINERS", "1").lower() in ("0", "false", "no"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=2)
    print(f"[tests.services] {msg}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# service handles
# --------------------------------------------------------------------------------------------


@dataclass
class KafkaService:
    bootstrap: str
    source: str  # "env" | "testcontainers" | "local"
    broker: Any = field(default=None, repr=False)  # launch.KafkaBroker when local

    @property
    def controllable(self) -> bool:
        return self.broker is not None

    def _need_broker(self) -> Any:
        if self.broker is None:
            raise RuntimeError(f"Kafka from {self.source} cannot be stopped or restarted by tests")
        return self.broker

    def restart(self) -> None:
        """Stop and start the local broker: same port, same data."""
        self._need_broker().restart()

    def stop(self, kill: bool = False) -> None:
        """Stop the local broker (kill=True: SIGKILL, a crash without clean shutdown)."""
        self._need_broker().stop(kill=kill)

    def start(self) -> None:
        self._need_broker().start()

    def ensure_running(self) -> None:
        """Start the local broker again if a test left it stopped."""
        if self.broker is not None and not self.broker.running():
            self.broker.start()


@dataclass
class S3Service(LocalControl):
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = DEFAULT_REGION
    source: str = "local"  # "env" | "testcontainers" | "local"
    server: Any = field(default=None, repr=False)  # launch.S3Proxy when local

    what = "S3 server"

    def start(self) -> None:
        """Start the local S3 server again: same port, same data."""
        self._need_server().start()

    def running(self) -> bool:
        return self.server is None or bool(self.server.running())

    def client(self, **config: Any) -> Any:
        """A new boto3 S3 client for this server; config overrides botocore Config fields."""
        import boto3
        from botocore.config import Config

        cfg: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "signature_version": "s3v4",
            "retries": {"max_attempts": 3, "mode": "standard"},
            "connect_timeout": 5,
            "read_timeout": 30,
        }
        cfg.update(config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**cfg),
        )


# --------------------------------------------------------------------------------------------
# resolution: env, then testcontainers, then deploy/local/launch.py
# --------------------------------------------------------------------------------------------


def _check_kafka_answers(bootstrap: str, source: str, timeout: float = 15.0) -> None:
    from confluent_kafka.admin import AdminClient

    md, error = None, ""
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
    except Exception as e:
        error = str(e)
    if md is None:
        pytest.fail(f"Kafka from {source} ({bootstrap}) does not answer: {error}", pytrace=False)
    if not md.brokers:
        pytest.fail(f"Kafka from {source} ({bootstrap}) lists no broker", pytrace=False)


def _kafka_from_testcontainers() -> tuple[Any, str] | None:
    try:
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:
            from testcontainers.kafka import KafkaContainer
        container = KafkaContainer().with_kraft()
        container.start()
        return container, container.get_bootstrap_server()
    except Exception as e:
        _warn(f"testcontainers Kafka failed ({type(e).__name__}: {e}); using deploy/local")
        return None


def _wait_http(host: str, port: int, timeout: float = 60.0) -> None:
    """Poll host:port until it answers HTTP with any status (s3proxy: 403 without credentials)."""
    import http.client

    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return
        except (OSError, http.client.HTTPException) as e:  # refused, reset: not up yet
            if time.monotonic() > deadline:
                why = f"{host}:{port} does not answer HTTP after {timeout:.0f} s: {e}"
                raise TimeoutError(why) from e
        finally:
            conn.close()
        time.sleep(0.2)


def _s3_from_testcontainers() -> tuple[Any, S3Service] | None:
    """s3proxy (the S3 server the local launcher runs too) in a generic container."""
    container = None
    try:
        from testcontainers.core.container import DockerContainer

        access_key, secret_key = "vecwal", "vecwal-secret"
        container = (
            DockerContainer(S3PROXY_IMAGE)
            .with_env("S3PROXY_AUTHORIZATION", "aws-v2-or-v4")
            .with_env("S3PROXY_IDENTITY", access_key)
            .with_env("S3PROXY_CREDENTIAL", secret_key)
            .with_env("JCLOUDS_PROVIDER", "filesystem-nio2")
            .with_exposed_ports(80)
        )
        container.start()
        host, port = container.get_container_host_ip(), int(container.get_exposed_port(80))
        _wait_http(host, port)
        svc = S3Service(
            endpoint_url=f"http://{host}:{port}",
            access_key=access_key,
            secret_key=secret_key,
            source="testcontainers",
        )
        return container, svc
    except Exception as e:
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop()
        _warn(f"testcontainers S3 (s3proxy) failed ({type(e).__name__}: {e}); using deploy/local")
        return None


def _start_or_error(service: Any) -> str | None:
    """Start a launcher service; its error message (log tail included) when it cannot."""
    try:
        service.start()
    except Exception as e:  # LaunchError (a RuntimeError), or OSError from java/mvn
        service.stop()
        return str(e) or type(e).__name__
    return None


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if bootstrap:
        _check_kafka_answers(bootstrap, "KAFKA_BOOTSTRAP_SERVERS")
        yield KafkaService(bootstrap=bootstrap, source="env")
        return
    if docker_engine_available():
        t0 = time.monotonic()
        found = _kafka_from_testcontainers()
        if found is not None:
            container, bootstrap = found
            STARTUP["kafka"] = ("testcontainers", time.monotonic() - t0)
            try:
                yield KafkaService(bootstrap=bootstrap, source="testcontainers")
            finally:
                container.stop()
            return
    launch = load_launcher()
    broker = launch.KafkaBroker(tmp_path_factory.mktemp("kafka"))
    t0 = time.monotonic()
    error = _start_or_error(broker)
    if error:
        why = f"local Kafka broker (deploy/local/launch.py) did not start: {error}"
        pytest.fail(why, pytrace=False)
    STARTUP["kafka"] = ("deploy/local", time.monotonic() - t0)
    try:
        yield KafkaService(bootstrap=broker.bootstrap, source="local", broker=broker)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: KafkaService) -> str:
    return kafka_service.bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_service: KafkaService) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_service.bootstrap})


def _topic_ready(admin: Any, name: str, partitions: int) -> bool:
    md = admin.list_topics(topic=name, timeout=5)
    t = md.topics.get(name)
    if t is None or t.error is not None or len(t.partitions) != partitions:
        return False
    return all(p.error is None and p.leader >= 0 for p in t.partitions.values())


@pytest.fixture
def kafka_topic(
    request: pytest.FixtureRequest, kafka_service: KafkaService, kafka_admin: Any
) -> Iterator[Callable[..., str]]:
    """Factory: kafka_topic(partitions=3, config=None) -> name of a new, empty topic.

    config is merged over {"message.timestamp.type": "LogAppendTime"}; the topic is returned
    once its metadata shows every partition with a leader. Topics are deleted afterwards.
    """
    yield from topic_factory(kafka_admin, f"vecwal-test-{_stem(request, 60)}",
                             kafka_service.ensure_running)


def _stem(request: pytest.FixtureRequest, length: int) -> str:
    return re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:length].strip("-.") or "t"


def topic_factory(admin: Any, prefix: str, before: Callable[[], None] | None = None
                  ) -> Iterator[Callable[..., str]]:
    """Yields make(partitions=3, config=None, timeout=30) -> the name of a new, empty topic
    (``prefix``-<random>; config merged over DEFAULT_TOPIC_CONFIG), returned once every
    partition has a leader; deletes the topics it made afterwards (best effort)."""
    from confluent_kafka.admin import NewTopic

    created: list[str] = []

    def make(partitions: int = 3, config: dict[str, str] | None = None, timeout: float = 30) -> str:
        if before is not None:
            before()
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        cfg = {**DEFAULT_TOPIC_CONFIG, **(config or {})}
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=cfg)],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        futures[name].result(timeout=timeout)
        created.append(name)
        deadline = time.monotonic() + timeout
        while not _topic_ready(admin, name, partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name}: partitions without leader after {timeout} s")
            time.sleep(0.05)
        return name

    yield make

    if created:
        try:
            for f in admin.delete_topics(created, operation_timeout=10).values():
                f.result(timeout=15)
        except Exception as e:  # best effort: never hide the test's own outcome
            print(f"[tests.services] could not delete topics {created}: {e}", file=sys.stderr)


@pytest.fixture(scope="session")
def s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL_S3", "").strip()
        or os.environ.get("AWS_ENDPOINT_URL", "").strip()
    )
    if endpoint:
        ak = os.environ.get("AWS_ACCESS_KEY_ID")
        sk = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not ak or not sk:
            pytest.fail(
                f"AWS_ENDPOINT_URL_S3={endpoint} is set but AWS_ACCESS_KEY_ID / "
                "AWS_SECRET_ACCESS_KEY are not",
                pytrace=False,
            )
        region = (
            os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        )
        yield S3Service(endpoint, ak, sk, region=region, source="env")
        return
    if docker_engine_available():
        t0 = time.monotonic()
        found = _s3_from_testcontainers()
        if found is not None:
            container, svc = found
            STARTUP["s3"] = ("testcontainers", time.monotonic() - t0)
            try:
                yield svc
            finally:
                container.stop()
            return
    launch = load_launcher()
    yield from _local_s3(launch.S3Proxy(tmp_path_factory.mktemp("s3")), "s3", "S3 server")


def _local_s3(server: Any, name: str, what: str) -> Iterator[S3Service]:
    """Start a launcher's S3 server (failing the test loudly when it cannot), serve it, stop it."""
    t0 = time.monotonic()
    error = _start_or_error(server)  # installs (SeaweedFS: builds) first when the cache lacks it
    if error:
        pytest.fail(f"local {what} (deploy/local/launch.py) did not start: {error}", pytrace=False)
    STARTUP[name] = ("deploy/local", time.monotonic() - t0)
    try:
        yield S3Service(
            endpoint_url=server.endpoint_url,
            access_key=server.access_key,
            secret_key=server.secret_key,
            region=DEFAULT_REGION,
            source="local",
            server=server,
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_service: S3Service) -> Any:
    return s3_service.client()


def _empty_and_delete_bucket(client: Any, bucket: str) -> None:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for up in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
    client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_bucket(s3_service: S3Service, s3_client: Any) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket; emptied and deleted afterwards (best effort)."""
    s3_service.ensure_running()
    name = f"vecwal-test-{uuid.uuid4().hex[:20]}"
    kwargs: dict[str, Any] = {"Bucket": name}
    if s3_service.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": s3_service.region}
    s3_client.create_bucket(**kwargs)
    yield name
    try:
        s3_service.ensure_running()  # a test may have left the local server stopped
        _empty_and_delete_bucket(s3_client, name)
    except Exception as e:
        print(f"[tests.services] could not delete bucket {name}: {e}", file=sys.stderr)


@pytest.fixture(scope="session")
def seaweedfs_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    launch = load_launcher()
    yield from _local_s3(launch.SeaweedFS(tmp_path_factory.mktemp("seaweedfs")), "seaweedfs",
                         "SeaweedFS")


@pytest.fixture(scope="session")
def seaweedfs_client(seaweedfs_service: S3Service) -> Any:
    return seaweedfs_service.client()


def _empty_versioned_bucket(client: Any, bucket: str) -> None:
    """Every version and delete marker, bypassing GOVERNANCE locks (COMPLIANCE ones stay)."""
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        entries = page.get("Versions", []) + page.get("DeleteMarkers", [])
        objects = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in entries]
        if objects:
            client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True},
                                  BypassGovernanceRetention=True)


def _seaweedfs_bucket(service: S3Service, client: Any, lock: bool) -> Iterator[str]:
    service.ensure_running()
    name = f"vecwal-test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
    yield name
    try:
        service.ensure_running()
        _empty_versioned_bucket(client, name)
        client.delete_bucket(Bucket=name)
    except Exception as e:  # COMPLIANCE-locked objects outlive the test: the data dir goes
        print(f"[tests.services] could not delete bucket {name}: {e}", file=sys.stderr)


@pytest.fixture
def seaweedfs_bucket(seaweedfs_service: S3Service, seaweedfs_client: Any) -> Iterator[str]:
    """A fresh plain bucket on SeaweedFS (no versioning, no Object Lock)."""
    yield from _seaweedfs_bucket(seaweedfs_service, seaweedfs_client, lock=False)


@pytest.fixture
def seaweedfs_lock_bucket(seaweedfs_service: S3Service, seaweedfs_client: Any) -> Iterator[str]:
    """A fresh bucket on SeaweedFS created with Object Lock enabled (so versioned)."""
    yield from _seaweedfs_bucket(seaweedfs_service, seaweedfs_client, lock=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if STARTUP:
        parts = [f"{name} via {src} ready in {sec:.1f} s" for name, (src, sec) in STARTUP.items()]
        terminalreporter.write_line("services: " + "; ".join(parts))


# the Debezium CDC source (PostgreSQL + pgvector, Kafka Connect) lives in its own module
from tests.services_cdc import (  # noqa: E402, F401
    DebeziumConnector,
    PostgresService,
    connect_service,
    debezium_connector,
    postgres_database,
    postgres_service,
)

# the Chroma server (chroma_service), for the chroma: restore sink
from tests.services_chroma import ChromaService, chroma_service  # noqa: E402, F401

# the KMS (kms_service) lives in its own module, registered here as fixtures
from tests.services_kms import KmsService, kms_service  # noqa: E402, F401

# Milvus standalone (milvus_service, milvus_database), for the milvus:http:// restore sink
from tests.services_milvus import MilvusService, milvus_database, milvus_service  # noqa: E402, F401

# the schema registry (registry_service) lives in its own module, registered here as fixtures
from tests.services_registry import RegistryService, registry_service  # noqa: E402, F401

# SASL_SSL Kafka and HTTPS S3 (secured_kafka, tls_s3_service, ...): their own module too
from tests.services_secured import (  # noqa: E402, F401
    SecuredKafka,
    TlsS3Service,
    secured_kafka,
    secured_kafka_topic,
    tls_s3_bucket,
    tls_s3_service,
)
