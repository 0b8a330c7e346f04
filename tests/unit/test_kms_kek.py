"""The ``aws-kms:`` key-encryption key (daemon.keys.kms) without a server: the requests it makes
(botocore's Stubber checks every parameter), each KMS error mapped to the typed error an
operator or the retry loop acts on, with a hint naming the fix and no secret in any message;
transport failures on real loopback sockets; and the object surviving a pickle round trip
(it travels to worker processes inside a functools.partial)."""

from __future__ import annotations

import functools
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError
from botocore.stub import Stubber

from daemon.errors import ConfigError, EncryptionKeyError, KeyServiceUnavailable
from daemon.keys import open_kek
from daemon.keys.kms import AwsKmsKek

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
CONTEXT = {"repository": "repo-7", "key": "k1"}
PLAINTEXT = bytes(range(100, 132))
WRAPPED = b"\x01\x02\x03kms-wrapped-blob-" + bytes(range(40))
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_KMS", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def kek() -> AwsKmsKek:
    """One for the module: making a boto3 client costs ~0.2 s (Stubber never lets a request
    reach the closed port, nor be signed)."""
    return AwsKmsKek(KEY_ID, endpoint_url=f"http://127.0.0.1:{closed_port()}", region="eu-west-1")


@pytest.fixture
def stub(kek: AwsKmsKek) -> Iterator[Stubber]:
    with Stubber(kek.client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def assert_clean(err: BaseException) -> None:
    """No key material, wrapped key or secret credential in what an operator sees."""
    text = f"{err} {getattr(err, 'hint', '')} {err!r}"
    for secret in (SECRET, PLAINTEXT.hex(), WRAPPED.hex(), repr(PLAINTEXT), repr(WRAPPED)):
        assert secret not in text
    assert err.__cause__ is None and err.__suppress_context__


# -- requests -------------------------------------------------------------------------------


def test_generate_sends_generate_data_key(kek: AwsKmsKek, stub: Stubber) -> None:
    stub.add_response(
        "generate_data_key",
        {"Plaintext": PLAINTEXT, "CiphertextBlob": WRAPPED, "KeyId": f"arn:aws:kms:x:1:key/{KEY_ID}"},
        {"KeyId": KEY_ID, "KeySpec": "AES_256", "EncryptionContext": CONTEXT},
    )
    assert kek.generate(CONTEXT) == (PLAINTEXT, WRAPPED)


def test_wrap_sends_encrypt(kek: AwsKmsKek, stub: Stubber) -> None:
    stub.add_response("encrypt", {"CiphertextBlob": WRAPPED, "KeyId": KEY_ID},
                      {"KeyId": KEY_ID, "Plaintext": PLAINTEXT, "EncryptionContext": CONTEXT})
    assert kek.wrap(PLAINTEXT, CONTEXT) == WRAPPED


def test_wrap_refuses_a_key_that_is_not_32_bytes(kek: AwsKmsKek) -> None:
    with pytest.raises(ValueError):
        kek.wrap(b"short", CONTEXT)


def test_unwrap_sends_decrypt_naming_the_key(kek: AwsKmsKek, stub: Stubber) -> None:
    stub.add_response("decrypt", {"Plaintext": PLAINTEXT, "KeyId": KEY_ID},
                      {"KeyId": KEY_ID, "CiphertextBlob": WRAPPED, "EncryptionContext": CONTEXT})
    assert kek.unwrap(WRAPPED, CONTEXT) == PLAINTEXT


def test_a_key_of_the_wrong_length_is_refused(kek: AwsKmsKek, stub: Stubber) -> None:
    stub.add_response("decrypt", {"Plaintext": b"16 bytes only...", "KeyId": KEY_ID})
    with pytest.raises(EncryptionKeyError, match="16-byte key"):
        kek.unwrap(WRAPPED, CONTEXT)


def test_name_region_and_open_kek() -> None:
    kek = open_kek("aws-kms:alias/vecwal", kms_endpoint_url="http://127.0.0.1:1", kms_region="ap-south-1")
    assert isinstance(kek, AwsKmsKek)
    assert kek.name == "aws-kms:alias/vecwal"
    assert kek.region == "ap-south-1"
    assert "alias/vecwal" in repr(kek)


def test_region_from_the_environment_else_us_east_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert AwsKmsKek(KEY_ID).region == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert AwsKmsKek(KEY_ID).region == "eu-central-1"
    monkeypatch.setenv("AWS_REGION", "eu-north-1")
    assert AwsKmsKek(KEY_ID).region == "eu-north-1"


def test_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:4599")
    assert AwsKmsKek(KEY_ID, region="us-east-1").client.meta.endpoint_url == "http://127.0.0.1:4599"


@pytest.mark.parametrize("key_id, endpoint", [("", ""), ("  ", ""), (KEY_ID, "localhost:4566"),
                                               (KEY_ID, "ftp://kms.example")])
def test_bad_configuration_is_a_config_error(key_id: str, endpoint: str) -> None:
    with pytest.raises(ConfigError):
        AwsKmsKek(key_id, endpoint_url=endpoint)


def test_no_client_until_first_use() -> None:
    kek = AwsKmsKek(KEY_ID, endpoint_url="http://127.0.0.1:1")
    assert kek._client is None


# -- KMS errors -----------------------------------------------------------------------------

ERRORS = [
    # (code, HTTP status, the error, a phrase of the hint)
    ("AccessDeniedException", 400, EncryptionKeyError, "kms:Decrypt"),
    ("UnrecognizedClientException", 400, EncryptionKeyError, "AWS_ACCESS_KEY_ID"),
    ("ExpiredTokenException", 400, EncryptionKeyError, "credentials"),
    ("NotFoundException", 400, EncryptionKeyError, "[encryption] kek"),
    ("DisabledException", 400, EncryptionKeyError, f"enable-key --key-id {KEY_ID}"),
    ("KMSInvalidStateException", 400, EncryptionKeyError, f"cancel-key-deletion --key-id {KEY_ID}"),
    ("InvalidCiphertextException", 400, EncryptionKeyError, "[encryption] kek"),
    ("IncorrectKeyException", 400, EncryptionKeyError, "vecwal keys list"),
    ("InvalidKeyUsageException", 400, EncryptionKeyError, "symmetric"),
    ("ValidationException", 400, EncryptionKeyError, "[encryption] kek"),
    ("ThrottlingException", 400, KeyServiceUnavailable, "retries"),
    ("KMSInternalException", 500, KeyServiceUnavailable, "retries"),
    ("DependencyTimeoutException", 503, KeyServiceUnavailable, "retries"),
    ("KeyUnavailableException", 500, KeyServiceUnavailable, "retries"),
    ("BadGateway", 502, KeyServiceUnavailable, "retries"),
    ("SomethingNew", 429, KeyServiceUnavailable, "retries"),
]


@pytest.mark.parametrize("code, status, error, hint", ERRORS, ids=[e[0] for e in ERRORS])
@pytest.mark.parametrize("operation", ["generate", "wrap", "unwrap"])
def test_kms_errors_map_to_typed_errors(kek: AwsKmsKek, stub: Stubber, operation: str, code: str,
                                        status: int, error: type[Exception], hint: str) -> None:
    method = {"generate": "generate_data_key", "wrap": "encrypt", "unwrap": "decrypt"}[operation]
    stub.add_client_error(method, code, f"{KEY_ID} says no", http_status_code=status)
    with pytest.raises(error) as info:
        if operation == "generate":
            kek.generate(CONTEXT)
        elif operation == "wrap":
            kek.wrap(PLAINTEXT, CONTEXT)
        else:
            kek.unwrap(WRAPPED, CONTEXT)
    err = info.value
    assert type(err) is error  # KeyServiceUnavailable is not an EncryptionKeyError, nor back
    assert hint in err.hint  # type: ignore[attr-defined]
    assert f"aws-kms:{KEY_ID}" in str(err) and code in str(err)
    assert_clean(err)


def test_a_secret_echoed_by_the_service_is_blanked(kek: AwsKmsKek, stub: Stubber) -> None:
    stub.add_client_error("decrypt", "AccessDeniedException", f"user with secret {SECRET} denied")
    with pytest.raises(EncryptionKeyError) as info:
        kek.unwrap(WRAPPED, CONTEXT)
    assert "***" in str(info.value)
    assert_clean(info.value)


# -- transport ------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [
    EndpointConnectionError(endpoint_url="http://kms.example"),
    ConnectTimeoutError(endpoint_url="http://kms.example"),
    ReadTimeoutError(endpoint_url="http://kms.example"),
], ids=lambda e: type(e).__name__)
def test_transport_failures_are_unavailable(exc: Exception) -> None:
    kek = AwsKmsKek(KEY_ID, endpoint_url="http://127.0.0.1:1", max_attempts=1)

    def fail(**_: Any) -> None:
        raise exc

    kek.client.meta.events.register("before-send.kms.Decrypt", fail)
    with pytest.raises(KeyServiceUnavailable) as info:
        kek.unwrap(WRAPPED, CONTEXT)
    assert "reachable" in info.value.hint
    assert_clean(info.value)


def test_nothing_listening_is_unavailable_fast() -> None:
    port = closed_port()
    kek = AwsKmsKek(KEY_ID, endpoint_url=f"http://127.0.0.1:{port}", max_attempts=2)
    t0 = time.monotonic()
    with pytest.raises(KeyServiceUnavailable) as info:
        kek.unwrap(WRAPPED, CONTEXT)
    assert time.monotonic() - t0 < 5
    assert f"127.0.0.1:{port}" in str(info.value)
    assert_clean(info.value)


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)  # accepts connections (the kernel does), never answers
        port = server.getsockname()[1]
        kek = AwsKmsKek(KEY_ID, endpoint_url=f"http://127.0.0.1:{port}", read_timeout=0.3,
                        max_attempts=1)
        t0 = time.monotonic()
        with pytest.raises(KeyServiceUnavailable, match=r"timeout|timed out"):
            kek.generate(CONTEXT)
        assert time.monotonic() - t0 < 5


def test_no_credentials_is_a_key_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    kek = AwsKmsKek(KEY_ID, endpoint_url=f"http://127.0.0.1:{closed_port()}", max_attempts=1)
    with pytest.raises(EncryptionKeyError) as info:
        kek.unwrap(WRAPPED, CONTEXT)
    assert "AWS_ACCESS_KEY_ID" in info.value.hint
    assert_clean(info.value)


def test_parameter_errors_do_not_quote_values(kek: AwsKmsKek) -> None:
    with pytest.raises(EncryptionKeyError, match="invalid request parameters") as info:
        kek.unwrap(WRAPPED, {"repository": 987987987})  # type: ignore[dict-item]
    assert "987987987" not in str(info.value)


# -- pickling -------------------------------------------------------------------------------


def test_pickle_round_trip_drops_the_client() -> None:
    kek = AwsKmsKek(KEY_ID, endpoint_url="http://127.0.0.1:1", region="eu-west-1")
    _ = kek.client  # created: a boto3 client does not pickle
    copy = pickle.loads(pickle.dumps(functools.partial(print, kek))).args[0]
    assert isinstance(copy, AwsKmsKek)
    assert (copy.name, copy.region, copy.key_id) == (kek.name, kek.region, kek.key_id)
    assert copy._client is None
    with Stubber(copy.client) as stub:
        stub.add_response("decrypt", {"Plaintext": PLAINTEXT, "KeyId": KEY_ID},
                          {"KeyId": KEY_ID, "CiphertextBlob": WRAPPED, "EncryptionContext": CONTEXT})
        assert copy.unwrap(WRAPPED, CONTEXT) == PLAINTEXT
    assert copy.client.meta.endpoint_url == kek.client.meta.endpoint_url


def test_one_client_for_many_threads() -> None:
    kek = AwsKmsKek(KEY_ID, endpoint_url="http://127.0.0.1:1")
    clients: list[Any] = []
    threads = [threading.Thread(target=lambda: clients.append(kek.client)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in clients}) == 1
