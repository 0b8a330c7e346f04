"""Large puts go to S3 in parts (daemon.objectstore.s3multipart): against moto and the real
S3 servers deploy/local starts (s3proxy, SeaweedFS), with the threshold lowered to S3's
minimum part size so a 12 MiB object takes three parts; and once with the defaults, an
object s3proxy refuses in one PUT."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import ObjectExists, StoreError
from daemon.objectstore import ObjectInfo
from daemon.objectstore.s3 import S3Store
from daemon.objectstore.s3multipart import MAX_PARTS, MIB, MIN_PART_SIZE, part_ranges

PREFIX = "repo"


def test_part_ranges_cover_the_object_in_order() -> None:
    assert part_ranges(12 * MIB + 3, 5 * MIB) == [(0, 5 * MIB), (5 * MIB, 10 * MIB), (10 * MIB, 12 * MIB + 3)]
    assert part_ranges(10 * MIB, 5 * MIB) == [(0, 5 * MIB), (5 * MIB, 10 * MIB)]
    assert part_ranges(0, 5 * MIB) == [(0, 0)]


def test_part_ranges_grow_parts_to_stay_within_s3s_limit() -> None:
    size = MAX_PARTS * 5 * MIB + 1
    ranges = part_ranges(size, 5 * MIB)
    assert len(ranges) <= MAX_PARTS
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_parts_below_s3s_minimum_are_refused() -> None:
    with pytest.raises(ValueError, match="part_size"):
        part_ranges(10 * MIB, MIN_PART_SIZE - 1)
    with pytest.raises(ValueError, match="part_size"):
        S3Store("b", part_size=MIN_PART_SIZE - 1)
    with pytest.raises(ValueError, match="multipart_threshold"):
        S3Store("b", part_size=8 * MIB, multipart_threshold=6 * MIB)


@pytest.fixture(params=["moto", "s3", "seaweedfs"])
def open_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
               tmp_path: Path) -> Iterator[tuple[Callable[..., S3Store], Any]]:
    """open_store(**options) -> S3Store on a fresh bucket, and a raw boto3 client on it."""
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    stores: list[S3Store] = []
    if request.param == "moto":
        from moto import mock_aws

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        with mock_aws():
            import boto3

            client = boto3.client("s3", region_name="us-east-1")
            client.create_bucket(Bucket="vecwal-mpu")

            def open_moto(**options: Any) -> S3Store:
                stores.append(S3Store("vecwal-mpu", PREFIX, **options))
                return stores[-1]

            yield open_moto, (client, "vecwal-mpu")
    else:
        service = request.getfixturevalue(f"{request.param}_service")
        bucket = request.getfixturevalue(f"{request.param}_bucket")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", service.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", service.secret_key)

        def open_s3(**options: Any) -> S3Store:
            stores.append(S3Store(bucket, PREFIX, endpoint_url=service.endpoint_url, **options))
            return stores[-1]

        yield open_s3, (service.client(), bucket)
    for store in stores:
        store.close()


SMALL = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB}


def count_parts(store: S3Store, monkeypatch: pytest.MonkeyPatch, fail_part: int = 0) -> list[int]:
    real = store._client.upload_part
    numbers: list[int] = []

    def upload_part(**request: Any) -> Any:
        numbers.append(request["PartNumber"])
        if request["PartNumber"] == fail_part:
            raise ConnectionResetError("connection reset by peer (injected)")
        return real(**request)

    monkeypatch.setattr(store._client, "upload_part", upload_part)
    return numbers


def uploads_left(raw: tuple[Any, str]) -> list[Any]:
    client, bucket = raw
    return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_a_large_put_goes_in_parts_and_reads_back_whole(
        open_store: tuple[Callable[..., S3Store], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    opener, raw = open_store
    store = opener(**SMALL)
    data = random.Random(1).randbytes(12 * MIB + 3)
    numbers = count_parts(store, monkeypatch)
    store.put("data/c/b0.avro", bytearray(data), create_only=True)
    assert sorted(numbers) == [1, 2, 3]
    assert store.get("data/c/b0.avro") == data
    assert store.head("data/c/b0.avro") == ObjectInfo("data/c/b0.avro", len(data))
    assert store.get_range("data/c/b0.avro", 5 * MIB - 2, 4) == data[5 * MIB - 2:5 * MIB + 2]
    numbers.clear()
    store.put("small", b"x" * 1000)  # below the threshold: one PUT
    assert numbers == [] and store.get("small") == b"x" * 1000
    assert uploads_left(raw) == []


def test_a_create_only_put_in_parts_keeps_the_existing_object(
        open_store: tuple[Callable[..., S3Store], Any]) -> None:
    opener, raw = open_store
    store = opener(**SMALL)
    first = random.Random(2).randbytes(11 * MIB)
    store.put("k", first, create_only=True)
    with pytest.raises(ObjectExists) as info:
        store.put("k", random.Random(3).randbytes(11 * MIB), create_only=True)
    assert "already exists" in info.value.message and info.value.hint
    assert store.get("k") == first
    assert uploads_left(raw) == []
    second = random.Random(4).randbytes(6 * MIB)
    store.put("k", second)  # a plain put in parts overwrites
    assert store.get("k") == second


def test_a_failed_part_aborts_the_upload_and_writes_nothing(
        open_store: tuple[Callable[..., S3Store], Any], monkeypatch: pytest.MonkeyPatch) -> None:
    opener, raw = open_store
    store = opener(**SMALL)
    count_parts(store, monkeypatch, fail_part=2)
    with pytest.raises(StoreError) as info:
        store.put("k", random.Random(5).randbytes(12 * MIB))
    assert "k" in info.value.message and info.value.hint
    assert list(store.list("")) == []
    assert uploads_left(raw) == []


def test_the_default_threshold_takes_what_s3proxy_refuses_in_one_put(
        s3_service: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_service.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_service.secret_key)
    data = bytearray(random.Random(6).randbytes(MIB)) * 130  # 130 MiB
    with pytest.raises(ClientError, match=r"MaxMessageLengthExceeded|too big"):
        s3_service.client().put_object(Bucket=s3_bucket, Key="one-put", Body=bytes(data))
    store = S3Store(s3_bucket, PREFIX, endpoint_url=s3_service.endpoint_url, region=s3_service.region)
    try:
        store.put("data/c/b1.avro", data, create_only=True)
        assert store.head("data/c/b1.avro").size == len(data)
        assert store.get_range("data/c/b1.avro", 129 * MIB, 16) == bytes(data[129 * MIB:129 * MIB + 16])
    finally:
        store.close()
