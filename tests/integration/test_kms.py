"""The ``aws-kms:`` key-encryption key against a real KMS-compatible server (tests/services.py:
``AWS_ENDPOINT_URL_KMS``, else local-kms from deploy/local): data keys generated and unwrapped
under an encryption context, which KMS binds to the ciphertext; another context, another key
or a key scheduled for deletion refused with EncryptionKeyError (the last is how a test proves
a KMS-held tenant key is gone); a stopped server is KeyServiceUnavailable within seconds."""

from __future__ import annotations

import pickle
import socket
import time

import pytest

from daemon.errors import EncryptionKeyError, KeyServiceUnavailable
from daemon.keys import open_kek
from daemon.keys.kms import AwsKmsKek
from tests.services_kms import KmsService

pytestmark = pytest.mark.integration

CONTEXT = {"repository": "0b6f3c1e-repo", "key": "k-0001"}


def kek_for(kms: KmsService, key_id: str) -> AwsKmsKek:
    kek = open_kek(f"aws-kms:{key_id}", kms_endpoint_url=kms.endpoint_url, kms_region=kms.region)
    assert isinstance(kek, AwsKmsKek)
    return kek


@pytest.fixture
def kek(kms_service: KmsService) -> AwsKmsKek:
    return kek_for(kms_service, kms_service.create_key())


def test_generate_then_unwrap_under_the_same_context(kek: AwsKmsKek) -> None:
    key, wrapped = kek.generate(CONTEXT)
    assert len(key) == 32 and key not in wrapped
    assert kek.unwrap(wrapped, CONTEXT) == key
    assert kek.unwrap(wrapped, dict(reversed(CONTEXT.items()))) == key  # order is not content
    other_key, _ = kek.generate(CONTEXT)
    assert other_key != key


@pytest.mark.parametrize("context", [
    {"repository": "another-repo", "key": "k-0001"},
    {"repository": "0b6f3c1e-repo", "key": "k-0002"},
    {"repository": "0b6f3c1e-repo"},
    {},
], ids=["other-repository", "other-key-id", "missing-name", "none"])
def test_another_context_is_refused(kek: AwsKmsKek, context: dict[str, str]) -> None:
    key, wrapped = kek.generate(CONTEXT)
    with pytest.raises(EncryptionKeyError) as info:
        kek.unwrap(wrapped, context)
    assert "InvalidCiphertextException" in str(info.value) or "IncorrectKey" in str(info.value)
    assert "[encryption] kek" in info.value.hint
    assert key.hex() not in str(info.value) and wrapped.hex() not in str(info.value)


def test_wrap_an_existing_key_then_unwrap_it(kek: AwsKmsKek) -> None:
    key = bytes(range(32))
    wrapped = kek.wrap(key, CONTEXT)
    assert key not in wrapped
    assert kek.unwrap(wrapped, CONTEXT) == key
    assert kek.wrap(key, CONTEXT) != wrapped  # KMS ciphertexts are randomised


def test_another_kms_key_refuses_the_blob(kms_service: KmsService, kek: AwsKmsKek) -> None:
    _, wrapped = kek.generate(CONTEXT)
    other = kek_for(kms_service, kms_service.create_key())
    with pytest.raises(EncryptionKeyError) as info:
        other.unwrap(wrapped, CONTEXT)
    assert other.name in str(info.value)


def test_a_key_by_its_arn(kms_service: KmsService) -> None:
    key_id = kms_service.create_key()
    by_id, by_arn = kek_for(kms_service, key_id), kek_for(kms_service, kms_service.key_arn(key_id))
    assert by_arn.name.startswith("aws-kms:arn:")
    key, wrapped = by_id.generate(CONTEXT)
    assert by_arn.unwrap(wrapped, CONTEXT) == key


def test_an_unknown_key_is_refused_with_a_hint(kms_service: KmsService) -> None:
    missing = kek_for(kms_service, "00000000-0000-4000-8000-000000000000")
    with pytest.raises(EncryptionKeyError) as info:
        missing.generate(CONTEXT)
    assert "NotFoundException" in str(info.value)
    assert "[encryption] kek" in info.value.hint


def test_a_key_scheduled_for_deletion_is_refused(kms_service: KmsService) -> None:
    key_id = kms_service.create_key()
    kek = kek_for(kms_service, key_id)
    key, wrapped = kek.generate(CONTEXT)
    assert kek.unwrap(wrapped, CONTEXT) == key
    kms_service.schedule_deletion(key_id, days=7)  # KMS's minimum window
    assert kms_service.key_state(key_id) == "PendingDeletion"
    for attempt in (lambda: kek.unwrap(wrapped, CONTEXT), lambda: kek.generate(CONTEXT),
                    lambda: kek.wrap(key, CONTEXT)):
        with pytest.raises(EncryptionKeyError) as info:
            attempt()
        assert "KMSInvalidStateException" in str(info.value)
        assert f"aws kms cancel-key-deletion --key-id {key_id}" in info.value.hint
    # a fresh object (as a worker process would get it) is refused the same way
    with pytest.raises(EncryptionKeyError):
        pickle.loads(pickle.dumps(kek)).unwrap(wrapped, CONTEXT)


def test_a_disabled_key_is_refused(kms_service: KmsService, kek: AwsKmsKek) -> None:
    key, wrapped = kek.generate(CONTEXT)
    client = kms_service.client()
    client.disable_key(KeyId=kek.key_id)
    try:
        with pytest.raises(EncryptionKeyError) as info:
            kek.unwrap(wrapped, CONTEXT)
        assert "enable-key" in info.value.hint
    finally:
        client.enable_key(KeyId=kek.key_id)
    assert kek.unwrap(wrapped, CONTEXT) == key


def test_a_pickled_kek_works_in_its_new_home(kek: AwsKmsKek) -> None:
    key, wrapped = kek.generate(CONTEXT)
    assert pickle.loads(pickle.dumps(kek)).unwrap(wrapped, CONTEXT) == key


def test_local_kms_listens_on_loopback_only(kms_service: KmsService) -> None:
    """local-kms itself listens on every interface; the launcher's build binds 127.0.0.1."""
    import psutil

    if not kms_service.controllable:
        return  # a server from AWS_ENDPOINT_URL_KMS: where it listens is not ours to check
    listening = {(c.laddr.ip, c.laddr.port)
                 for c in psutil.Process(kms_service.server.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", kms_service.server.port)}


def test_a_stopped_server_is_unavailable_quickly(kms_service: KmsService) -> None:
    kek = kek_for(kms_service, kms_service.create_key())
    key, wrapped = kek.generate(CONTEXT)
    if kms_service.controllable:
        kms_service.stop()
        down, endpoint = kek, kms_service.endpoint_url
    else:  # a server from the environment is not ours to stop: a port nothing listens on
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
        down = AwsKmsKek(kek.key_id, endpoint_url=endpoint, region=kms_service.region)
    try:
        t0 = time.monotonic()
        with pytest.raises(KeyServiceUnavailable) as info:
            down.unwrap(wrapped, CONTEXT)
        elapsed = time.monotonic() - t0
        assert elapsed < 10, f"{elapsed:.1f} s to report an unreachable KMS"
        assert endpoint in str(info.value)
        assert "reachable" in info.value.hint
    finally:
        kms_service.ensure_running()
    assert kek.unwrap(wrapped, CONTEXT) == key  # same port, keys kept on disk
