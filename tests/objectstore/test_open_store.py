"""``open_store``: URL parsing and options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.errors import (
    ConfigError,
)
from daemon.objectstore import open_store
from daemon.objectstore.local import LocalStore
from daemon.objectstore.s3 import S3Store

# ------------------------------------------------------------------------------------------
# open_store: URL parsing and options
# ------------------------------------------------------------------------------------------


def test_open_store_file_url(tmp_path: Path) -> None:
    root = tmp_path / "my repo"
    store = open_store(root.as_uri())  # percent-encoded space
    assert isinstance(store, LocalStore)
    assert store.root == root
    assert root.is_dir()
    assert store.url == root.as_uri()
    assert isinstance(open_store(f"file://localhost{tmp_path}/x"), LocalStore)


@pytest.mark.usefixtures("aws_env")
def test_open_store_s3_url() -> None:
    store = open_store("s3://my-bucket/backups/prod/")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.url) == (
        "my-bucket",
        "backups/prod",
        "s3://my-bucket/backups/prod",
    )
    bare = open_store("S3://my-bucket", endpoint_url="http://127.0.0.1:9000", region="eu-west-1")
    assert isinstance(bare, S3Store)
    assert (bare.prefix, bare.url) == ("", "s3://my-bucket")


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(
    ("url", "kwargs", "hint_part"),
    [
        ("file://relative/path", {}, "three slashes"),
        ("file:relative", {}, "file:///absolute/path"),
        ("file:///", {}, "dedicated directory"),
        ("file:///tmp/x?query=1", {}, "file:///absolute/path"),
        ("/var/lib/vecwal", {}, "file:///absolute/path or s3://bucket"),
        ("relative/dir", {}, "file:///absolute/path or s3://bucket"),
        ("ftp://host/x", {}, "file:///absolute/path or s3://bucket"),
        ("gs://bucket/x", {}, "file:///absolute/path or s3://bucket"),
        ("s3://", {}, "s3://bucket"),
        ("s3:///prefix-only", {}, "s3://bucket"),
        ("s3://minio:9000/bucket", {}, "endpoint_url"),
        ("s3://b/", {}, "bucket names"),
        ("s3://bucket/a//b", {}, "prefix"),
        ("s3://bucket/a/../b", {}, "prefix"),
        ("s3://bucket/x", {"sse": "rot13"}, "AES256"),
        ("s3://bucket/x", {"sse_kms_key_id": "alias/k"}, "aws:kms"),
        ("s3://bucket/x", {"endpoint_url": "localhost:9000"}, "http://"),
        ("file:///tmp/x", {"sse": "AES256"}, "s3://"),
        ("file:///tmp/x", {"endpoint_url": "http://127.0.0.1:9000"}, "s3://"),
    ],
)
def test_open_store_rejects_bad_urls(url: str, kwargs: dict[str, Any], hint_part: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url, **kwargs)
    assert hint_part in info.value.hint


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("s3://AKIAXXXX:topsecretvalue@bucket/prefix", {}),
        ("s3://bucket/prefix", {"endpoint_url": "http://AKIAXXXX:topsecretvalue@127.0.0.1:9000"}),
        ("https://AKIAXXXX:topsecretvalue@host/x", {}),
        ("file://AKIAXXXX:topsecretvalue@host/x", {}),
    ],
)
def test_open_store_refuses_credentials_in_urls(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url, **kwargs)
    assert "topsecretvalue" not in f"{info.value} {info.value.hint}"
    if url.startswith("s3://"):
        assert "AWS_ACCESS_KEY_ID" in info.value.hint


@pytest.mark.usefixtures("aws_env")
def test_open_store_unknown_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no-such-profile"):
        open_store("s3://bucket", profile="no-such-profile")


@pytest.mark.usefixtures("aws_env")
def test_s3_page_size_bounds() -> None:
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            S3Store("bucket", page_size=bad)


@pytest.mark.usefixtures("aws_env")
def test_s3_endpoint_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    assert "127.0.0.1:9000" in repr(S3Store("bucket"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "not a url")
    with pytest.raises(ConfigError):
        S3Store("bucket")
