"""S3Store's Object Lock code at unit level: against moto (which enforces retention), the
pure pieces (what a purge removes, how keys group), and how the CLI derives lock_s. The same
behaviour against a real server: tests/integration/test_object_lock.py (SeaweedFS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from daemon.cli import store_opener
from daemon.config import config_from_mapping
from daemon.errors import ConfigError, ObjectLocked
from daemon.objectstore import open_store
from daemon.objectstore.s3 import S3Store
from daemon.objectstore.s3lock import _by_directory, _purgeable, _Version, lock_mode


@pytest.fixture
def moto_lock_bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_CONFIG_FILE": str(tmp_path / "none"),
                 "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(k, raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="lock-bucket", ObjectLockEnabledForBucket=True)
        client.create_bucket(Bucket="plain-bucket")
        yield client


def test_delete_many_lists_versions_once_per_directory(moto_lock_bucket: Any) -> None:
    store = S3Store("lock-bucket", "repo", object_lock="governance", lock_s=60)
    store.check_object_lock()
    keys = []
    for d in range(3):
        for i in range(4):
            store.put(f"seg/p={d}/{i}", b"locked", create_only=True)
            store.put(f"seg/p={d}/m{i}", b"mutable")  # overwritable: no lock
            keys += [f"seg/p={d}/{i}", f"seg/p={d}/m{i}"]
    store.put("seg/p=0/sub/x", b"deeper")  # not listed when deleting seg/p=0/*
    listings: list[dict[str, Any]] = []
    store._client.meta.events.register(
        "provide-client-params.s3.ListObjectVersions", lambda params, **_: listings.append(params))
    failed = store.delete_many(keys)
    assert len(listings) == 3  # one per directory, not one per key
    assert sorted(failed) == sorted(k for k in keys if "/m" not in k)
    assert all(isinstance(e, ObjectLocked) and e.retain_until_ms for e in failed.values())
    assert sorted(o.key for o in store.list("")) == sorted([*failed, "seg/p=0/sub/x"])


def test_check_object_lock(moto_lock_bucket: Any) -> None:
    with pytest.raises(ConfigError) as info:
        S3Store("plain-bucket", object_lock="compliance", lock_s=5).check_object_lock()
    assert "plain-bucket" in info.value.message
    assert "--object-lock-enabled-for-bucket" in info.value.hint
    S3Store("plain-bucket").check_object_lock()  # no lock configured: nothing to check
    S3Store("lock-bucket", object_lock="compliance", lock_s=5).check_object_lock()


def test_lock_options_are_validated(tmp_path: Path) -> None:
    assert lock_mode(None, 0) is None
    assert lock_mode("Governance", 1) == "GOVERNANCE"
    with pytest.raises(ConfigError):
        lock_mode("legal", 60)
    with pytest.raises(ConfigError):
        lock_mode("compliance", 0)
    with pytest.raises(ConfigError, match="s3://"):
        open_store(tmp_path.as_uri(), object_lock="governance", lock_s=60)


def v(key: str, latest: bool, ms: int, marker: bool = False) -> _Version:
    return _Version(key, f"{key}-{ms}", latest, ms, 0 if marker else 10, marker)


def test_purge_keeps_what_would_resurrect_a_deleted_key() -> None:
    # an overwritten watermark: old noncurrent versions go, the current one stays
    assert _purgeable([v("w", True, 300), v("w", False, 200), v("w", False, 100)], 250) == [
        v("w", False, 200), v("w", False, 100)]
    # a deleted key whose versions are all old: everything goes, the marker too
    gone = [v("g", True, 300, marker=True), v("g", False, 100)]
    assert _purgeable(gone, 400) == [v("g", False, 100), v("g", True, 300, marker=True)]
    # ... but while a newer noncurrent version stays, the marker stays (else it would return)
    assert _purgeable([v("g", True, 300, marker=True), v("g", False, 280), v("g", False, 100)],
                      250) == [v("g", False, 100)]


def test_keys_group_by_directory() -> None:
    keys = sorted(["a/1", "a/2", "a/b/3", "c", "d", "a/b/4"])
    assert list(_by_directory(keys)) == [["a/1", "a/2"], ["a/b/3", "a/b/4"], ["c", "d"]]


def _lock_s(**raw: Any) -> float:
    config = config_from_mapping({
        "kafka": {"bootstrap_servers": "127.0.0.1:9", "topics": ["t"]},
        "storage": {"url": "s3://bucket/repo", **raw.pop("storage", {})}, **raw}, environ={})
    opener: Any = store_opener(config)
    return float(opener.keywords["lock_s"])


def test_lock_period_from_the_config() -> None:
    assert _lock_s(storage={"object_lock": "governance", "lock_days": 30}) == 30 * 86_400
    # 0: the retention window plus grace, rounded up to whole days
    assert _lock_s(storage={"object_lock": "compliance"},
                   retention={"window": "7d", "grace": "6h"}) == 8 * 86_400
    assert _lock_s(storage={}, retention={"window": "7d"}) == 0
    with pytest.raises(ConfigError, match="lock_days"):
        _lock_s(storage={"object_lock": "governance"})
