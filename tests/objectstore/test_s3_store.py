"""The S3 store (S3Store): errors, endpoints, credentials, prefixes and listing, beyond the
contract."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from daemon.errors import (
    ObjectExists,
    ObjectNotFound,
    StoreError,
    StoreUnavailable,
)
from daemon.objectstore import open_store
from daemon.objectstore.s3 import S3Store
from tests.objectstore.awsenv import isolate_aws_env, keys_of, no_endpoint_env

# ------------------------------------------------------------------------------------------
# s3:// (S3Store)
# ------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens here any more: connections are refused


def test_s3_unreachable_endpoint_is_unavailable_quickly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = "Sup3rS3cretValue-do-not-print"
    isolate_aws_env(monkeypatch, tmp_path, "AKIAUNREACHABLE", secret)
    no_endpoint_env(monkeypatch)
    store = S3Store("bucket", "repo", endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    operations: list[Callable[[], object]] = [
        lambda: store.get("k"),
        lambda: store.put("k", b"v", create_only=True),
        lambda: list(store.list("")),
        lambda: store.head("k"),
        lambda: store.delete("k"),
    ]
    try:
        for operation in operations:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                operation()
            assert time.monotonic() - started < 10
            text = f"{info.value} {info.value.hint!r} {info.value!r}"
            assert secret not in text
            assert "reachable" in info.value.hint
    finally:
        store.close()


@pytest.mark.integration
def test_s3_wrong_credentials_is_a_store_error_with_a_hint(
    s3_service: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong_secret = "definitely-wrong-secret-0123456789"
    for access_key, secret in ((s3_service.access_key, wrong_secret), ("NOSUCHKEY", wrong_secret)):
        isolate_aws_env(monkeypatch, tmp_path, access_key, secret)
        store = open_store(f"s3://{s3_bucket}/repo", endpoint_url=s3_service.endpoint_url)
        try:
            for operation in ("get", "put"):
                with pytest.raises(StoreError) as info:
                    if operation == "get":
                        store.get("k")
                    else:
                        store.put("k", b"v")
                assert type(info.value) is StoreError
                assert "credentials" in info.value.hint
                assert secret not in f"{info.value} {info.value.hint}"
        finally:
            store.close()


@pytest.mark.integration
def test_s3_a_body_that_does_not_match_the_callers_sha256_is_refused(
    s3_service: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real S3 server checks the body against the digest sent with it (the check that
    replaces botocore's CRC32): a mismatch stores nothing."""
    isolate_aws_env(monkeypatch, tmp_path, s3_service.access_key, s3_service.secret_key)
    store = open_store(f"s3://{s3_bucket}/repo", endpoint_url=s3_service.endpoint_url)
    try:
        with pytest.raises(StoreError):
            store.put("segments/k.avro", b"what was framed", create_only=True,
                      sha256=hashlib.sha256(b"what the sidecar says").digest())
        with pytest.raises(ObjectNotFound):
            store.get("segments/k.avro")
    finally:
        store.close()


@pytest.mark.parametrize("where", ["moto", pytest.param("s3", marks=pytest.mark.integration)])
def test_s3_missing_bucket_is_a_store_error(
    where: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if where == "moto":
        request.getfixturevalue("moto_bucket")
        store = S3Store("no-such-bucket-vecwal", "repo")
    else:
        service = request.getfixturevalue("s3_service")
        isolate_aws_env(monkeypatch, tmp_path, service.access_key, service.secret_key)
        store = S3Store("no-such-bucket-vecwal", "repo", endpoint_url=service.endpoint_url)
    try:
        operations: list[Callable[[], object]] = [
            lambda: store.get("k"),
            lambda: store.put("k", b"v"),
            lambda: store.put("k", b"v", create_only=True),
            lambda: list(store.list("")),
            lambda: store.get_range("k", 0, 1),
        ]
        for operation in operations:
            with pytest.raises(StoreError) as info:
                operation()
            assert type(info.value) is StoreError
            assert "create bucket" in info.value.hint
    finally:
        store.close()


def test_s3_keys_live_under_the_prefix_and_nothing_else_is_listed(
    moto_bucket: tuple[Any, str],
) -> None:
    client, bucket = moto_bucket
    for outside in ("other/x", "repoX/sibling", "repo", "top"):
        client.put_object(Bucket=bucket, Key=outside, Body=b"not ours")
    store = S3Store(bucket, "repo")
    store.put("a/k", b"ours")
    raw = client.get_object(Bucket=bucket, Key="repo/a/k")["Body"].read()
    assert raw == b"ours"
    assert keys_of(store.list("")) == ["a/k"]
    assert keys_of(store.list("", start_after="0")) == ["a/k"]
    with pytest.raises(StoreError, match="invalid object key"):
        store.get("../other/x")  # no escaping the prefix
    root_store = S3Store(bucket, "")
    assert "repo/a/k" in keys_of(root_store.list(""))
    assert root_store.url == f"s3://{bucket}"
    assert S3Store(bucket, "/deep/prefix/").url == f"s3://{bucket}/deep/prefix"


@pytest.mark.parametrize(
    ("sse", "kms_key"), [("AES256", None), ("aws:kms", None), ("aws:kms", "alias/vecwal")]
)
def test_s3_server_side_encryption_is_requested_on_put(
    moto_bucket: tuple[Any, str], sse: str, kms_key: str | None
) -> None:
    client, bucket = moto_bucket
    store = S3Store(bucket, "repo", sse=sse, sse_kms_key_id=kms_key)
    store.put("enc", b"secret data")
    store.put("enc-new", b"secret data", create_only=True)
    for key in ("repo/enc", "repo/enc-new"):
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == sse
        if kms_key:
            assert head["SSEKMSKeyId"] == kms_key
    assert store.get("enc") == b"secret data"


STUBBED_ERRORS: list[tuple[str, int, type[StoreError], str]] = [
    ("AccessDenied", 403, StoreError, "credentials"),
    ("InvalidAccessKeyId", 403, StoreError, "credentials"),
    ("SignatureDoesNotMatch", 403, StoreError, "credentials"),
    ("ExpiredToken", 400, StoreError, "credentials"),
    ("NoSuchBucket", 404, StoreError, "create bucket"),
    ("SlowDown", 503, StoreUnavailable, "throttling"),
    ("TooManyRequests", 429, StoreUnavailable, "throttling"),
    ("InternalError", 500, StoreUnavailable, "transient"),
    ("BadGateway", 502, StoreUnavailable, "transient"),
    ("ServiceUnavailable", 503, StoreUnavailable, "transient"),
    ("XMinioServerNotInitialized", 503, StoreUnavailable, "transient"),
    ("RequestTimeout", 400, StoreUnavailable, "transient"),
    ("NotImplemented", 501, StoreError, "storage.sse"),
    ("PermanentRedirect", 301, StoreError, "region"),
    ("AuthorizationHeaderMalformed", 400, StoreError, "region"),
    ("RequestTimeTooSkewed", 403, StoreError, "clock"),
    ("ConditionalRequestConflict", 409, StoreUnavailable, "retry"),
    ("WeirdNewError", 400, StoreError, "unexpected"),
]


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(
    ("code", "status", "expected", "hint"), STUBBED_ERRORS, ids=[e[0] for e in STUBBED_ERRORS]
)
def test_s3_error_classification(code: str, status: int, expected: type[StoreError], hint: str) -> None:
    store = S3Store("bucket", "repo", max_attempts=1)
    stubber = Stubber(store._client)
    stubber.add_client_error("get_object", code, f"server says {code}", status)
    stubber.add_client_error("put_object", code, f"server says {code}", status)
    stubber.add_client_error("list_objects_v2", code, f"server says {code}", status)
    with stubber:
        for operation in (
            lambda: store.get("k"),
            lambda: store.put("k", b"v"),
            lambda: list(store.list("")),
        ):
            with pytest.raises(StoreError) as info:
                operation()
            assert type(info.value) is expected, (code, operation)
            assert hint in info.value.hint
            assert code in str(info.value)


@pytest.mark.usefixtures("aws_env")
def test_s3_precondition_failed_maps_to_object_exists_only_for_create_only() -> None:
    store = S3Store("bucket", "repo", max_attempts=1)
    stubber = Stubber(store._client)
    stubber.add_client_error("put_object", "PreconditionFailed", "exists", 412)
    stubber.add_client_error("head_object", "404", "Not Found", 404)
    stubber.add_client_error("get_object", "InvalidRange", "not satisfiable", 416)
    with stubber:
        with pytest.raises(ObjectExists):
            store.put("k", b"v", create_only=True)
        with pytest.raises(ObjectNotFound):
            store.head("k")
        assert store.get_range("k", 10, 5) == b""


def _page(keys: list[str], truncated: bool, token: str = "") -> dict[str, Any]:
    page: dict[str, Any] = {
        "Contents": [{"Key": k, "Size": 1} for k in keys],
        "IsTruncated": truncated,
    }
    if token:
        page["NextContinuationToken"] = token
    return page


@pytest.mark.usefixtures("aws_env")
def test_s3_list_resumes_after_the_last_key() -> None:
    """s3proxy 4.0 returns NextContinuationToken url-encoded ("repo/p%3D1/b") and does not
    decode it when sent back, so resuming with it repeats the page forever; the store
    resumes with StartAfter=<last key> instead, which means the same on every server."""
    store = S3Store("bucket", "repo", page_size=2, max_attempts=1)
    stubber = Stubber(store._client)
    base = {"Bucket": "bucket", "Prefix": "repo/", "MaxKeys": 2}
    stubber.add_response("list_objects_v2", _page(["repo/p=1/a", "repo/p=1/b"], True, "repo/p%3D1/b"), base)
    stubber.add_response(
        "list_objects_v2", _page(["repo/p=2/a"], False), {**base, "StartAfter": "repo/p=1/b"}
    )
    with stubber:
        assert keys_of(store.list("")) == ["p=1/a", "p=1/b", "p=2/a"]
    stubber.assert_no_pending_responses()


@pytest.mark.usefixtures("aws_env")
def test_s3_list_from_a_looping_server_fails_instead_of_hanging() -> None:
    store = S3Store("bucket", "repo", page_size=2, max_attempts=1)
    stubber = Stubber(store._client)
    for _ in range(2):  # the same page again, as if the resume point was ignored
        stubber.add_response("list_objects_v2", _page(["repo/a", "repo/b"], True, "t"))
    with stubber, pytest.raises(StoreError, match="out of order"):
        list(store.list(""))


@pytest.mark.usefixtures("aws_env")
def test_s3_no_credentials_is_a_store_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store("bucket", "repo", endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(StoreError) as info:
        store.get("k")
    assert type(info.value) is StoreError
    assert "AWS_ACCESS_KEY_ID" in info.value.hint
