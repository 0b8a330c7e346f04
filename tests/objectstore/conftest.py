"""Fixtures the object-store tests share: fake AWS credentials, and a moto bucket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.objectstore.awsenv import REGION, isolate_aws_env, no_endpoint_env


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake, isolated AWS credentials for tests that only build clients."""
    isolate_aws_env(monkeypatch, tmp_path, "AKIAFAKEFAKEFAKE", "fake-secret-not-used")
    no_endpoint_env(monkeypatch)


@pytest.fixture
def moto_bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """(raw boto3 client, bucket) inside moto's mock_aws."""
    from moto import mock_aws

    isolate_aws_env(monkeypatch, tmp_path, "testing", "testing-secret")
    no_endpoint_env(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="vecwal-moto")
        yield client, "vecwal-moto"
