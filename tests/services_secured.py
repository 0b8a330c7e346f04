"""Secured services for the transport tests (pytest fixtures, registered by tests/services.py):
a Kafka broker whose client listener is SASL_SSL (SCRAM-SHA-512, a throwaway CA) and an
s3proxy serving HTTPS only, both from deploy/local/launch.py, started once per session and
only when a test asks for them.

Every secret is random per session and distinctive (``vecwal-sasl-...``, ``vecwal-s3-...``), so
a test can look for it in logs, messages, metrics and objects: ``SecuredKafka.secrets`` and
``TlsS3Service.secrets`` list them.

Fixtures:
    secured_kafka       (session)  SecuredKafka: .bootstrap, .ca_file, .users {name: password},
                                   .user/.password (vecwal's), .client(user, password) ->
                                   [kafka.client] properties, .admin(), .secrets
    secured_kafka_topic (function) factory: secured_kafka_topic(partitions=3) -> a new topic
                                   (LogAppendTime), deleted afterwards
    tls_s3_service      (session)  TlsS3Service: an S3Service whose endpoint_url is https and
                                   .ca_file the CA that signed it (storage.ca_bundle)
    tls_s3_bucket       (function) a fresh bucket on it
"""

from __future__ import annotations

import secrets
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.services import (
    DEFAULT_REGION,
    STARTUP,
    S3Service,
    _empty_and_delete_bucket,
    _start_or_error,
    _stem,
    load_launcher,
    topic_factory,
)


@dataclass
class SecuredKafka:
    """A local broker with a SASL_SSL client listener (its controller listener stays
    internal). ``users``: SCRAM-SHA-512 user -> password; ``vecwal`` is the client vecwal
    runs as, ``admin`` the broker's own identity (and the tests' topic admin)."""

    bootstrap: str
    ca_file: Path
    users: dict[str, str]
    mechanism: str = "SCRAM-SHA-512"
    user: str = "vecwal"
    broker: Any = field(default=None, repr=False)

    @property
    def password(self) -> str:
        return self.users[self.user]

    @property
    def secrets(self) -> list[str]:
        """Every password a leak test must never find."""
        return sorted(self.users.values())

    def client(self, user: str | None = None, password: str | None = None) -> dict[str, str]:
        """librdkafka properties (vecwal's [kafka.client]) that log in as ``user``."""
        user = user or self.user
        return {"security.protocol": "SASL_SSL", "sasl.mechanism": self.mechanism,
                "sasl.username": user,
                "sasl.password": self.users[user] if password is None else password,
                "ssl.ca.location": str(self.ca_file)}

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, **self.client("admin")})

    def toml(self, *, password: bool = True, **override: str) -> str:
        """``[kafka.client]`` as an operator writes it (unquoted dotted keys), the password
        left out with ``password=False`` (then it comes from the environment)."""
        props = {**self.client(), **override}
        if not password:
            props.pop("sasl.password")
        return "[kafka.client]\n" + "".join(f'{k} = "{v}"\n' for k, v in props.items())


@dataclass
class TlsS3Service(S3Service):
    """An S3Service whose endpoint is https, its certificate signed by ``ca_file``."""

    ca_file: str = ""

    @property
    def secrets(self) -> list[str]:
        return [self.secret_key]

    def client(self, **config: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region, verify=self.ca_file,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", **config))


@pytest.fixture(scope="session")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    launch = load_launcher()
    broker = launch.KafkaBroker(tmp_path_factory.mktemp("kafka-sasl-ssl"), security="sasl_ssl")
    t0 = time.monotonic()
    error = _start_or_error(broker)
    if error:
        pytest.fail(f"local SASL_SSL Kafka broker (deploy/local/launch.py) did not start: "
                    f"{error}", pytrace=False)
    STARTUP["kafka-sasl-ssl"] = ("deploy/local", time.monotonic() - t0)
    try:
        yield SecuredKafka(bootstrap=broker.bootstrap, ca_file=broker.ca_file,
                           users=dict(broker.users), broker=broker)
    finally:
        broker.stop()


@pytest.fixture
def secured_kafka_topic(request: pytest.FixtureRequest,
                        secured_kafka: SecuredKafka) -> Iterator[Callable[..., str]]:
    """Factory: secured_kafka_topic(partitions=3, config=None) -> a new, empty topic."""
    yield from topic_factory(secured_kafka.admin(), f"vecwal-secured-{_stem(request, 50)}")


@pytest.fixture(scope="session")
def tls_s3_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsS3Service]:
    launch = load_launcher()
    server = launch.S3Proxy(tmp_path_factory.mktemp("s3-tls"), access_key="vecwal-tls",
                            secret_key=f"vecwal-s3-secret-{secrets.token_hex(12)}", tls=True)
    t0 = time.monotonic()
    error = _start_or_error(server)
    if error:
        pytest.fail(f"local HTTPS s3proxy (deploy/local/launch.py) did not start: {error}",
                    pytrace=False)
    STARTUP["s3-https"] = ("deploy/local", time.monotonic() - t0)
    try:
        yield TlsS3Service(endpoint_url=server.endpoint_url, access_key=server.access_key,
                           secret_key=server.secret_key, region=DEFAULT_REGION, source="local",
                           server=server, ca_file=str(server.ca_file))
    finally:
        server.stop()


@pytest.fixture
def tls_s3_bucket(tls_s3_service: TlsS3Service) -> Iterator[str]:
    client = tls_s3_service.client()
    name = f"vecwal-test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    yield name
    try:
        _empty_and_delete_bucket(client, name)
    except Exception as e:
        print(f"[tests.services] could not delete bucket {name}: {e}", file=sys.stderr)
