"""S3Store reads again when a body fails its checksum (a torn read), and says so when it
keeps failing: against moto, with the body's read made to fail."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import FlexibleChecksumError

from daemon.errors import StoreUnavailable
from daemon.objectstore.s3 import CHECKSUM_ATTEMPTS, S3Store


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s = S3Store("vecwal-moto")
        s._client.create_bucket(Bucket="vecwal-moto")
        yield s


def torn_reads(store: S3Store, monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    real = store._client.get_object
    calls: list[int] = []

    def get_object(**request: Any) -> Any:
        response = real(**request)
        calls.append(1)
        if len(calls) <= failures:
            def bad_read(*_: Any) -> bytes:
                raise FlexibleChecksumError(error_msg="Expected checksum A did not match B")
            response["Body"].read = bad_read
        return response

    monkeypatch.setattr(store._client, "get_object", get_object)
    return calls


def test_a_torn_read_is_read_again(store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("k", b"hello world")
    calls = torn_reads(store, monkeypatch, CHECKSUM_ATTEMPTS - 1)
    assert store.get("k") == b"hello world"
    assert len(calls) == CHECKSUM_ATTEMPTS
    calls.clear()
    assert store.get_range("k", 6, 5) == b"world"


def test_reads_that_keep_failing_are_a_transient_error(store: S3Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store.put("k", b"hello")
    torn_reads(store, monkeypatch, CHECKSUM_ATTEMPTS)
    with pytest.raises(StoreUnavailable, match="checksum"):
        store.get("k")


def test_a_callers_sha256_replaces_botocores_crc32(store: S3Store) -> None:
    """Given the data's SHA-256, the PUT carries it for the server to check and botocore
    computes no CRC32 of its own; without it, botocore's CRC32 goes as before."""
    sent: list[dict[str, str]] = []
    store._client.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: sent.append({k.lower(): v if isinstance(v, str) else v.decode()
                                          for k, v in request.headers.items()}))
    data = b"segment bytes" * 100
    store.put("a", data, create_only=True, sha256=hashlib.sha256(data).digest())
    store.put("b", data, create_only=True)
    with_digest, without = sent
    assert with_digest["x-amz-checksum-sha256"] == base64.b64encode(
        hashlib.sha256(data).digest()).decode()
    assert not [h for h in with_digest.items() if "crc32" in " ".join(h)]
    # botocore's own: a header, or (https, as here) a trailer after a chunked body
    assert "crc32" in without.get("x-amz-checksum-crc32", without.get("x-amz-trailer", ""))
    assert "x-amz-checksum-sha256" not in without
    assert store.get("a") == store.get("b") == data
