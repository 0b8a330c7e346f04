"""Services for benchmarks: the environment's (KAFKA_BOOTSTRAP_SERVERS, AWS_ENDPOINT_URL_S3)
or the project's own launchers, started for the duration of the benchmark."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from tests.services import load_launcher

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Services:
    bootstrap: str
    s3_endpoint: str
    s3_env: dict[str, str]
    workdir: Path

    def topic(self, partitions: int = 3) -> str:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        fut = admin.create_topics([NewTopic(name, partitions, 1, config={
            "message.timestamp.type": "LogAppendTime", "max.message.bytes": "10000000"})])
        fut[name].result(30)
        return name

    def bucket(self) -> str:
        import boto3

        name = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=self.s3_endpoint, region_name="us-east-1",
                     aws_access_key_id=self.s3_env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=self.s3_env["AWS_SECRET_ACCESS_KEY"]).create_bucket(
                         Bucket=name)
        return name


@contextlib.contextmanager
def services(kafka: bool = True) -> Iterator[Services]:
    """Kafka (unless ``kafka`` is false: ``bootstrap`` is then empty) and the S3 server."""
    work = Path(tempfile.mkdtemp(prefix="vecwal-bench-"))
    stack = contextlib.ExitStack()
    with stack:
        stack.callback(shutil.rmtree, work, True)  # GBs of topics and repositories
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") if kafka else ""
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3")
        env = {k: os.environ[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
               if k in os.environ}
        launch = None
        if (kafka and not bootstrap) or not endpoint:
            launch = load_launcher()
            launch.install()
        if kafka and not bootstrap:
            assert launch is not None
            broker = launch.KafkaBroker(work / "kafka").start()
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
        if not endpoint:
            assert launch is not None
            s3 = launch.S3Proxy(work / "s3").start()
            stack.callback(s3.stop)
            endpoint = s3.endpoint_url
            env = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
        env["AWS_REGION"] = "us-east-1"
        yield Services(bootstrap or "", endpoint, env, work)
