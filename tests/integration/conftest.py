"""Targets for capture tests: the real S3 server and the file:// store, both real."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Target


@pytest.fixture
def s3_target(kafka_bootstrap: str, kafka_topic: Any, s3_service: Any, s3_bucket: str) -> Target:
    return Target(
        bootstrap=kafka_bootstrap, topic=kafka_topic(partitions=3),
        storage_url=f"s3://{s3_bucket}/repo", endpoint_url=s3_service.endpoint_url,
        env={"AWS_ACCESS_KEY_ID": s3_service.access_key,
             "AWS_SECRET_ACCESS_KEY": s3_service.secret_key,
             "AWS_REGION": s3_service.region})


@pytest.fixture
def file_target(kafka_bootstrap: str, kafka_topic: Any, tmp_path: Path) -> Target:
    return Target(bootstrap=kafka_bootstrap, topic=kafka_topic(partitions=3),
                  storage_url=f"file://{tmp_path / 'repo'}")


@pytest.fixture(params=["s3", "file"])
def target(request: pytest.FixtureRequest) -> Target:
    return request.getfixturevalue(f"{request.param}_target")  # type: ignore[no-any-return]


@pytest.fixture
def group_id() -> str:
    return f"vecwal-{uuid.uuid4().hex[:8]}"
