"""The AWS environment the object-store tests run in: isolated credentials (no profile, no
config file, no instance metadata), no endpoint from the environment; and ``keys_of``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.objectstore import ObjectInfo

REGION = "us-east-1"


def isolate_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str, secret: str) -> None:
    """Credentials from the environment only: no profile, no config file, no IMDS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    for variable in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def no_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)


def keys_of(infos: Iterator[ObjectInfo]) -> list[str]:
    return [info.key for info in infos]
