"""A PUT that carries its body's SHA-256 is signed with that hash, not with the body hashed
again (``objectstore.s3signing``): on real S3 servers that check SigV4 (s3proxy, SeaweedFS),
a body with its digest is stored and read back, a body whose digest lies is refused, and the
body itself was never hashed by botocore."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from daemon.errors import ObjectNotFound, StoreError
from daemon.objectstore.s3 import S3Store
from daemon.objectstore.s3signing import CHECKSUM_HEADER, KnownPayloadSigV4


def signed(body: bytes, checksum: bytes | None, url: str = "http://127.0.0.1:9/b/k") -> str:
    request = AWSRequest(method="PUT", url=url, data=body)
    if checksum is not None:
        request.headers[CHECKSUM_HEADER] = base64.b64encode(checksum).decode()
    request.context["client_config"] = None
    KnownPayloadSigV4(Credentials("AKID", "secret"), "s3", "us-east-1").add_auth(request)
    return str(request.headers["X-Amz-Content-SHA256"])


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs of the PUTs whose body botocore's signer hashed (``SigV4Auth.payload``, the
    one place it reads a body to sign it)."""
    urls: list[str] = []
    real = botocore.auth.SigV4Auth.payload

    def spy(self: Any, request: Any) -> str:
        if request.method == "PUT":
            urls.append(request.url)
        return str(real(self, request))

    monkeypatch.setattr(botocore.auth.SigV4Auth, "payload", spy)
    return urls


def test_the_payload_hash_is_the_checksum_given(hashed: list[str]) -> None:
    body = os.urandom(100_000)
    digest = hashlib.sha256(body).digest()
    assert signed(body, digest) == digest.hex()
    assert hashed == []  # the body was not hashed again


def test_without_a_checksum_the_body_is_hashed_as_before(hashed: list[str]) -> None:
    body = os.urandom(100_000)
    assert signed(body, None) == hashlib.sha256(body).hexdigest()
    assert len(hashed) == 1


def test_a_checksum_that_is_not_a_sha256_is_not_trusted(hashed: list[str]) -> None:
    body = os.urandom(1000)
    assert signed(body, b"short") == hashlib.sha256(body).hexdigest()
    assert len(hashed) == 1


@pytest.fixture(params=["s3", "seaweedfs"])
def real_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> Iterator[S3Store]:
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    service = request.getfixturevalue(f"{request.param}_service")
    bucket = request.getfixturevalue(f"{request.param}_bucket")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", service.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", service.secret_key)
    store = S3Store(bucket, "signing", endpoint_url=service.endpoint_url)
    try:
        yield store
    finally:
        store.close()


@pytest.mark.integration
def test_a_body_with_its_digest_is_stored_signed_by_it(real_store: S3Store,
                                                       hashed: list[str]) -> None:
    body = os.urandom(3 << 20)
    real_store.put("segments/a.avro", body, create_only=True, sha256=hashlib.sha256(body).digest())
    assert real_store.get("segments/a.avro") == body
    real_store.put("state/w.json", b"{}")  # no digest given: signed as before
    assert real_store.get("state/w.json") == b"{}"
    puts = [u for u in hashed if "/signing/" in u]
    assert not any(u.endswith("segments/a.avro") for u in puts)  # signed by its digest
    assert any(u.endswith("state/w.json") for u in puts)  # the spy sees what is hashed


@pytest.mark.integration
def test_a_body_whose_digest_lies_is_refused(real_store: S3Store) -> None:
    with pytest.raises(StoreError):
        real_store.put("segments/b.avro", b"what was framed", create_only=True,
                       sha256=hashlib.sha256(b"what the sidecar says").digest())
    with pytest.raises(ObjectNotFound):
        real_store.get("segments/b.avro")
