"""The KMS fixture (the AWS KMS API) for vecwal's tests: part of the tests.services plugin, which
imports it. ``AWS_ENDPOINT_URL_KMS`` when set (checked to answer ListKeys with the credentials
of the environment), else local-kms from deploy/local/launch.py (built from the Go module
proxy into $VECWAL_CACHE on first use), on 127.0.0.1.

local-kms accepts any credentials but boto3 signs every request, so the session sets dummy
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` for its duration when the environment has
none (never overriding real ones): a :class:`~daemon.keys.kms.AwsKmsKek` made in the test
process finds them through the standard chain. ``KmsService.env`` gives a daemon process the
same (and the endpoint)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.service_control import LocalControl

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "vecwal-test", "AWS_SECRET_ACCESS_KEY": "vecwal-test-secret"}


@dataclass
class KmsService(LocalControl):
    """A KMS-compatible server; ``endpoint_url`` is what boto3 (and the ``aws-kms:`` KEK's
    ``endpoint_url``) takes, ``region`` the region its keys live in."""

    endpoint_url: str
    region: str
    source: str  # "env" | "local"
    server: Any = field(default=None, repr=False)  # launch.LocalKms when local

    what = "KMS"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a vecwal process using this KMS: the endpoint and credentials
        (the test's own when set, else the dummy ones)."""
        return {"AWS_ENDPOINT_URL_KMS": self.endpoint_url,
                **{k: os.environ.get(k) or v for k, v in DUMMY_CREDENTIALS.items()}}

    def client(self) -> Any:
        """A new boto3 KMS client on this server."""
        import boto3
        from botocore.config import Config

        return boto3.client("kms", endpoint_url=self.endpoint_url, region_name=self.region,
                            config=Config(connect_timeout=5, read_timeout=10,
                                          retries={"mode": "standard", "max_attempts": 3}))

    def create_key(self, description: str = "vecwal test key") -> str:
        """A new symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT); its key id."""
        meta = self.client().create_key(Description=description, KeySpec="SYMMETRIC_DEFAULT",
                                        KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
        return str(meta["KeyId"])

    def key_arn(self, key_id: str) -> str:
        return str(self.client().describe_key(KeyId=key_id)["KeyMetadata"]["Arn"])

    def schedule_deletion(self, key_id: str, days: int = 7) -> None:
        """ScheduleKeyDeletion (7 days is KMS's minimum): from now on the key is refused."""
        self.client().schedule_key_deletion(KeyId=key_id, PendingWindowInDays=days)

    def key_state(self, key_id: str) -> str:
        """Enabled, Disabled, PendingDeletion..."""
        return str(self.client().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])

    def start(self) -> None:
        """Start local-kms again on the same port, with the same keys."""
        self._need_server().start()


def _check_kms_answers(service: KmsService) -> None:
    try:
        service.client().list_keys(Limit=1)
    except Exception as e:
        pytest.fail(f"KMS from AWS_ENDPOINT_URL_KMS ({service.endpoint_url}) does not answer "
                    f"ListKeys: {type(e).__name__}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def kms_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsService]:
    """``AWS_ENDPOINT_URL_KMS``, else local-kms on 127.0.0.1 (keys in the session's tmp dir)."""
    from tests.services import STARTUP, _start_or_error, load_launcher  # it imports this module

    with pytest.MonkeyPatch.context() as mp:
        for name, value in DUMMY_CREDENTIALS.items():
            if not os.environ.get(name):
                mp.setenv(name, value)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        url = os.environ.get("AWS_ENDPOINT_URL_KMS", "").strip()
        if url:
            service = KmsService(endpoint_url=url, region=region, source="env")
            _check_kms_answers(service)
            yield service
            return
        launch = load_launcher()
        server = launch.LocalKms(tmp_path_factory.mktemp("kms"), region=region)
        t0 = time.monotonic()
        error = _start_or_error(server)  # builds local-kms first when the cache lacks it
        if error:
            pytest.fail(f"local-kms (deploy/local/launch.py) did not start: {error}", pytrace=False)
        STARTUP["kms"] = ("deploy/local", time.monotonic() - t0)
        try:
            yield KmsService(endpoint_url=server.endpoint_url, region=region, source="local",
                             server=server)
        finally:
            server.stop()
