"""S3 Object Lock against a real SeaweedFS (deploy/local, tests/services.py): what vecwal locks,
that the *server* refuses to delete a locked version, and how deletes, retention and purges
behave on a versioned, lock-enabled bucket."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from daemon.changelog.repository import Repository
from daemon.cli import _open_repository
from daemon.config import config_from_mapping
from daemon.errors import ConfigError, IntegrityError, ObjectLocked, ObjectNotFound
from daemon.objectstore.s3 import S3Store

pytestmark = pytest.mark.integration

PREFIX = "repo"
SEGMENT = "segments/p=00000/00000000000000000000.avro"
WATERMARK = "state/watermark/t/p=00000.json"


@pytest.fixture(autouse=True)
def _credentials(seaweedfs_service: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The SeaweedFS identity from the environment only: no profile, no file, no IMDS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs_service.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs_service.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", seaweedfs_service.region)
    for variable in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL",
                     "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def open_lock_store(seaweedfs_service: Any, seaweedfs_lock_bucket: str
                    ) -> Iterator[Callable[..., S3Store]]:
    """Factory: open_lock_store(mode="governance", lock_s=60) on a lock-enabled bucket."""
    stores: list[S3Store] = []

    def open_(mode: str | None = "governance", lock_s: float = 60.0, **options: Any) -> S3Store:
        store = S3Store(seaweedfs_lock_bucket, PREFIX, endpoint_url=seaweedfs_service.endpoint_url,
                        object_lock=mode, lock_s=lock_s if mode else 0.0, **options)
        stores.append(store)
        return store

    yield open_
    for store in stores:
        store.close()


def versions_of(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """Every version and delete marker of exactly ``key`` (under the repository prefix)."""
    page = client.list_object_versions(Bucket=bucket, Prefix=f"{PREFIX}/{key}")
    entries = page.get("Versions", []) + page.get("DeleteMarkers", [])
    return [v for v in entries if v["Key"] == f"{PREFIX}/{key}"]


def now_ms() -> int:
    return int(time.time() * 1000)


def test_create_only_put_is_locked_for_lock_s(open_lock_store: Callable[..., S3Store],
                                              seaweedfs_client: Any, seaweedfs_lock_bucket: str) -> None:
    store = open_lock_store("governance", 3600)
    store.check_object_lock()
    before = now_ms()
    store.put(SEGMENT, b"segment bytes", create_only=True)
    after = now_ms()
    until = store.retain_until(SEGMENT)
    assert until is not None
    assert before + 3_600_000 - 2000 <= until <= after + 3_600_000 + 2000
    head = seaweedfs_client.head_object(Bucket=seaweedfs_lock_bucket, Key=f"{PREFIX}/{SEGMENT}")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    store.put("manifests/plain-overwrite.json", b"{}")  # not create-only: no lock
    assert store.retain_until("manifests/plain-overwrite.json") is None
    with pytest.raises(ObjectNotFound):
        store.retain_until("segments/missing")


def test_a_locked_put_carries_the_callers_sha256_too(open_lock_store: Callable[..., S3Store]
                                                     ) -> None:
    """Capture's segment PUT: the lock's Content-MD5 and the sidecar's SHA-256 together."""
    store = open_lock_store("governance", 3600)
    data = b"segment bytes" * 1000
    store.put(SEGMENT, data, create_only=True, sha256=hashlib.sha256(data).digest())
    assert store.get(SEGMENT) == data
    assert store.retain_until(SEGMENT) is not None


def test_a_create_only_put_in_parts_is_locked_too(open_lock_store: Callable[..., S3Store],
                                                  seaweedfs_client: Any, seaweedfs_lock_bucket: str) -> None:
    """A bucket file over the multipart threshold (s3multipart) is locked like a one-PUT
    object: the lock goes on CreateMultipartUpload, each part carries its Content-MD5."""
    store = open_lock_store("governance", 3600, multipart_threshold=5 << 20, part_size=5 << 20)
    data = bytes(range(256)) * (11 << 12)  # 11 MiB: three parts
    store.put(SEGMENT, data, create_only=True)
    assert store.get(SEGMENT) == data
    until = store.retain_until(SEGMENT)
    assert until is not None and until > now_ms() + 3_500_000
    with pytest.raises(ObjectLocked):
        store.delete(SEGMENT)
    assert store.get(SEGMENT) == data


@pytest.mark.parametrize("mode", ["governance", "compliance"])
def test_locked_key_cannot_be_deleted(open_lock_store: Callable[..., S3Store], mode: str,
                                      seaweedfs_client: Any, seaweedfs_lock_bucket: str) -> None:
    store = open_lock_store(mode, 120)
    store.put(SEGMENT, b"locked", create_only=True)
    store.put("segments/p=00000/unlocked", b"free")  # same directory, no lock
    until = store.retain_until(SEGMENT)
    failed = store.delete_many([SEGMENT, "segments/p=00000/unlocked", "segments/missing"])
    assert list(failed) == [SEGMENT]
    error = failed[SEGMENT]
    assert isinstance(error, ObjectLocked)
    assert error.retain_until_ms == until
    assert mode.upper() in error.message and SEGMENT in error.message
    assert store.get(SEGMENT) == b"locked"  # still readable: nothing was hidden either
    assert versions_of(seaweedfs_client, seaweedfs_lock_bucket, "segments/p=00000/unlocked") == []
    with pytest.raises(ObjectLocked) as info:
        store.delete(SEGMENT)
    assert info.value.retain_until_ms == until
    # the server enforces it, not vecwal: a version delete straight through boto3 is refused
    version = versions_of(seaweedfs_client, seaweedfs_lock_bucket, SEGMENT)[0]["VersionId"]
    with pytest.raises(ClientError) as refused:
        seaweedfs_client.delete_object(Bucket=seaweedfs_lock_bucket, Key=f"{PREFIX}/{SEGMENT}",
                                       VersionId=version)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert store.get(SEGMENT) == b"locked"


@pytest.mark.parametrize("mode", ["governance", "compliance"])
def test_only_governance_yields_to_bypass(open_lock_store: Callable[..., S3Store], mode: str,
                                         seaweedfs_client: Any, seaweedfs_lock_bucket: str) -> None:
    store = open_lock_store(mode, 120)
    store.put(SEGMENT, b"locked", create_only=True)
    version = versions_of(seaweedfs_client, seaweedfs_lock_bucket, SEGMENT)[0]["VersionId"]

    def bypass() -> None:
        seaweedfs_client.delete_object(Bucket=seaweedfs_lock_bucket, Key=f"{PREFIX}/{SEGMENT}",
                                       VersionId=version, BypassGovernanceRetention=True)

    if mode == "governance":
        bypass()
        with pytest.raises(ObjectNotFound):
            store.get(SEGMENT)
    else:
        with pytest.raises(ClientError) as refused:
            bypass()
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert store.get(SEGMENT) == b"locked"


def test_mutable_keys_are_never_locked(open_lock_store: Callable[..., S3Store],
                                       seaweedfs_client: Any, seaweedfs_lock_bucket: str) -> None:
    store = open_lock_store("compliance", 3600)
    store.put(WATERMARK, b"1")
    store.put(WATERMARK, b"2")  # overwritten in place, as capture does every few seconds
    store.put("locks/compaction.json", b"lease", create_only=True)  # create-only, but mutable
    store.put("pins/p1.json", b"pin", create_only=True)
    for key in (WATERMARK, "locks/compaction.json", "pins/p1.json"):
        assert store.retain_until(key) is None
    assert store.get(WATERMARK) == b"2"
    assert store.delete_many([WATERMARK, "pins/p1.json"]) == {}
    store.delete("locks/compaction.json")
    for key in (WATERMARK, "locks/compaction.json", "pins/p1.json"):
        assert versions_of(seaweedfs_client, seaweedfs_lock_bucket, key) == []  # bytes freed
    assert list(store.list("")) == []


def test_after_retention_delete_many_frees_every_version(
        open_lock_store: Callable[..., S3Store], seaweedfs_client: Any,
        seaweedfs_lock_bucket: str) -> None:
    store = open_lock_store("compliance", 2.0)
    keys = [SEGMENT, "segments/p=00000/00000000000000000100.avro", "manifests/m1.json"]
    for key in keys:
        store.put(key, b"short lock", create_only=True)
    assert store.delete_many(keys)  # still locked
    until = max(store.retain_until(k) or 0 for k in keys)
    time.sleep(max(0.0, (until - now_ms()) / 1000) + 1.0)
    assert store.delete_many(keys) == {}
    for key in keys:
        assert versions_of(seaweedfs_client, seaweedfs_lock_bucket, key) == []
    assert list(store.list("")) == []


def test_delete_many_in_batches_removes_every_version(
        open_lock_store: Callable[..., S3Store], seaweedfs_client: Any,
        seaweedfs_lock_bucket: str) -> None:
    """Over 1,000 keys (two DeleteObjects batches of versions; a directory whose versions
    take two listing pages) in two directories, some with several versions and a delete
    marker left by a plain client."""
    store = open_lock_store("governance", 60)
    keys = [f"d0/k{i:04d}" for i in range(1010)] + [f"d1/k{i:04d}" for i in range(70)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: store.put(k, b"v1"), keys))
    store.put(keys[0], b"v2")
    seaweedfs_client.delete_object(Bucket=seaweedfs_lock_bucket, Key=f"{PREFIX}/{keys[1]}")
    assert len(versions_of(seaweedfs_client, seaweedfs_lock_bucket, keys[0])) == 2
    assert store.delete_many([*keys, "d0/missing"]) == {}
    page = seaweedfs_client.list_object_versions(Bucket=seaweedfs_lock_bucket, Prefix=f"{PREFIX}/")
    assert page.get("Versions", []) == [] and page.get("DeleteMarkers", []) == []


def test_legal_hold_is_reported_without_a_date(open_lock_store: Callable[..., S3Store],
                                               seaweedfs_client: Any, seaweedfs_lock_bucket: str) -> None:
    store = open_lock_store("governance", 60)
    store.put("segments/held", b"evidence")  # no retention, only the hold
    seaweedfs_client.put_object_legal_hold(Bucket=seaweedfs_lock_bucket, Key=f"{PREFIX}/segments/held",
                                           LegalHold={"Status": "ON"})
    error = store.delete_many(["segments/held"])["segments/held"]
    assert isinstance(error, ObjectLocked) and error.retain_until_ms is None
    assert "legal hold" in error.message
    seaweedfs_client.put_object_legal_hold(Bucket=seaweedfs_lock_bucket, Key=f"{PREFIX}/segments/held",
                                           LegalHold={"Status": "OFF"})
    assert store.delete_many(["segments/held"]) == {}


def test_extend_retention_never_shortens(open_lock_store: Callable[..., S3Store]) -> None:
    store = open_lock_store("governance", 60)
    store.put(SEGMENT, b"x", create_only=True)
    first = store.retain_until(SEGMENT)
    assert first is not None
    store.extend_retention(SEGMENT, first + 3_600_000)
    longer = store.retain_until(SEGMENT)
    assert longer is not None and abs(longer - (first + 3_600_000)) < 1000
    store.extend_retention(SEGMENT, first)  # shorter: left alone
    assert store.retain_until(SEGMENT) == longer
    with pytest.raises(ObjectNotFound):
        store.extend_retention("segments/missing", first)


def test_purge_noncurrent_removes_old_versions_of_mutable_keys(
        open_lock_store: Callable[..., S3Store], seaweedfs_client: Any,
        seaweedfs_lock_bucket: str) -> None:
    store = open_lock_store("governance", 60)
    for i in range(4):
        store.put(WATERMARK, f"watermark {i}".encode())
    store.put("state/gone.json", b"old")
    store.delete("state/gone.json")  # every version: nothing to purge
    seaweedfs_client.put_object(Bucket=seaweedfs_lock_bucket, Key=f"{PREFIX}/state/hidden.json",
                                Body=b"12345")
    seaweedfs_client.delete_object(Bucket=seaweedfs_lock_bucket, Key=f"{PREFIX}/state/hidden.json")
    store.put(SEGMENT, b"immutable", create_only=True)
    assert store.purge_noncurrent(["state/"], now_ms() - 3_600_000) == (0, 0)  # none that old
    time.sleep(1.1)  # LastModified has whole seconds on some servers
    removed, freed = store.purge_noncurrent(["state/"], now_ms())
    # 3 old watermarks, and the hidden object with its delete marker
    assert (removed, freed) == (5, 3 * len(b"watermark 0") + 5)
    assert [v["IsLatest"] for v in versions_of(seaweedfs_client, seaweedfs_lock_bucket, WATERMARK)] == [True]
    assert versions_of(seaweedfs_client, seaweedfs_lock_bucket, "state/hidden.json") == []
    assert store.get(WATERMARK) == b"watermark 3"
    assert store.get(SEGMENT) == b"immutable"
    with pytest.raises(ValueError, match="mutable"):
        store.purge_noncurrent(["segments/"], now_ms())


def test_identical_create_only_reput_still_works(open_lock_store: Callable[..., S3Store]) -> None:
    """Capture retries a segment upload after a lost response: ObjectExists, same bytes, fine."""
    repo = Repository(open_lock_store("governance", 60))
    repo.put_immutable(SEGMENT, b"the segment")
    repo.put_immutable(SEGMENT, b"the segment")
    with pytest.raises(IntegrityError):
        repo.put_immutable(SEGMENT, b"another segment")
    assert repo.store.get(SEGMENT) == b"the segment"


def _config(bucket: str, endpoint: str, **storage: Any) -> Any:
    return config_from_mapping({
        "kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"]},
        "storage": {"url": f"s3://{bucket}/{PREFIX}", "endpoint_url": endpoint, **storage},
    }, environ={})


def test_a_bucket_without_object_lock_is_refused_at_start(
        seaweedfs_service: Any, seaweedfs_bucket: str, seaweedfs_lock_bucket: str) -> None:
    endpoint = seaweedfs_service.endpoint_url
    plain = _config(seaweedfs_bucket, endpoint, object_lock="governance", lock_days=1)
    with pytest.raises(ConfigError) as info:
        _open_repository(plain)
    assert seaweedfs_bucket in info.value.message
    assert "--object-lock-enabled-for-bucket" in info.value.hint
    assert f"--bucket {seaweedfs_bucket}" in info.value.hint
    _open_repository(_config(seaweedfs_bucket, endpoint)).store.close()  # no lock: no check
    repo = _open_repository(_config(seaweedfs_lock_bucket, endpoint, object_lock="governance",
                                    lock_days=2))
    assert isinstance(repo.store, S3Store) and repo.store.object_lock == "GOVERNANCE"
    repo.store.put(SEGMENT, b"x", create_only=True)
    until = repo.store.retain_until(SEGMENT)
    assert until is not None and abs(until - now_ms() - 2 * 86_400_000) < 60_000
    repo.store.close()
    with pytest.raises(ConfigError, match="lock_days"):
        _open_repository(_config(seaweedfs_lock_bucket, endpoint, object_lock="governance"))
