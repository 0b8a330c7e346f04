"""The ObjectStore contract, run against every backend, plus backend-specific behaviour.

Backends (the ``backend`` fixture's parameters):

* ``file``  -- LocalStore under tmp_path;
* ``moto``  -- S3Store against moto's in-process mock_aws (fast, unit level);
* ``s3``    -- S3Store against the real S3 server of tests/services.py (integration);
* ``seaweedfs`` -- S3Store against a real SeaweedFS (plain bucket) from deploy/local
  (integration): the server vecwal's Object Lock tests use;
* ``file+sealed``, ``moto+sealed``, ``s3+sealed`` -- the EncryptedStore
  (daemon.objectstore.encrypted) over the file, moto and real S3 backends.

Every test in the "contract" section runs on all of them; a backend that fails one of them
does not implement :class:`daemon.objectstore.ObjectStore`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from daemon import atomic
from daemon.errors import (
    ConfigError,
    ObjectExists,
    ObjectNotFound,
    StoreError,
    StoreUnavailable,
)
from daemon.objectstore import Gathered, ObjectInfo, ObjectStore, get_view, open_store
from daemon.objectstore.local import LocalStore
from daemon.objectstore.s3 import S3Store

REGION = "us-east-1"
REPO_PREFIX = "repo"


# ------------------------------------------------------------------------------------------
# backends
# ------------------------------------------------------------------------------------------


@dataclass
class Backend:
    """One backend under test: ``open()`` gives a new store on the same repository."""

    name: str
    opener: Callable[[int | None], ObjectStore]
    raw: Any = None  # boto3 client on the bucket (moto, s3) or the root Path (file)
    bucket: str = ""
    stores: list[ObjectStore] = field(default_factory=list)

    def open(self, *, page_size: int | None = None) -> ObjectStore:
        store = self.opener(page_size)
        self.stores.append(store)
        return store

    @property
    def is_s3(self) -> bool:
        return self.name.partition("+")[0] in ("moto", "s3", "seaweedfs")


def _isolate_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str, secret: str) -> None:
    """Credentials from the environment only: no profile, no config file, no IMDS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    for variable in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _no_endpoint_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake, isolated AWS credentials for tests that only build clients."""
    _isolate_aws_env(monkeypatch, tmp_path, "AKIAFAKEFAKEFAKE", "fake-secret-not-used")
    _no_endpoint_env(monkeypatch)


@pytest.fixture
def moto_bucket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """(raw boto3 client, bucket) inside moto's mock_aws."""
    from moto import mock_aws

    _isolate_aws_env(monkeypatch, tmp_path, "testing", "testing-secret")
    _no_endpoint_env(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket="vecwal-moto")
        yield client, "vecwal-moto"


BACKENDS = [
    "file",
    "moto",
    pytest.param("s3", marks=pytest.mark.integration),
    pytest.param("seaweedfs", marks=pytest.mark.integration),
    "file+sealed",
    "moto+sealed",
    pytest.param("s3+sealed", marks=pytest.mark.integration),
]


class FixedKeys:
    """Repository keys held in memory (the keyring itself is tested in test_encrypted.py):
    the contract's listings must see only the objects the tests put."""

    def __init__(self) -> None:
        self.id, self.secret = os.urandom(8).hex(), os.urandom(32)

    def current(self) -> tuple[str, bytes]:
        return self.id, self.secret

    def key(self, key_id: str) -> bytes:
        assert key_id == self.id
        return self.secret


def _sealed(opener: Callable[[int | None], ObjectStore]) -> Callable[[int | None], ObjectStore]:
    from daemon.objectstore.encrypted import EncryptedStore

    keys = FixedKeys()
    return lambda page_size: EncryptedStore(opener(page_size), keys)


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    param: str = request.param
    name, _, sealed = param.partition("+")
    if name == "file":
        root = tmp_path / "repo"
        b = Backend(name, lambda _page_size: open_store(root.as_uri()), raw=root)
    elif name == "moto":
        client, bucket = request.getfixturevalue("moto_bucket")

        def open_moto(page_size: int | None) -> ObjectStore:
            if page_size is None:
                return open_store(f"s3://{bucket}/{REPO_PREFIX}")
            return S3Store(bucket, REPO_PREFIX, page_size=page_size)

        b = Backend(name, open_moto, raw=client, bucket=bucket)
    else:
        service = request.getfixturevalue(f"{name}_service")
        bucket = request.getfixturevalue(f"{name}_bucket")
        _isolate_aws_env(monkeypatch, tmp_path, service.access_key, service.secret_key)
        monkeypatch.setenv("AWS_DEFAULT_REGION", service.region)

        def open_s3(page_size: int | None) -> ObjectStore:
            if page_size is None:
                return open_store(
                    f"s3://{bucket}/{REPO_PREFIX}",
                    endpoint_url=service.endpoint_url,
                    region=service.region,
                )
            return S3Store(
                bucket,
                REPO_PREFIX,
                endpoint_url=service.endpoint_url,
                region=service.region,
                page_size=page_size,
            )

        b = Backend(name, open_s3, raw=service.client(), bucket=bucket)
    if sealed:
        b.name, b.opener = param, _sealed(b.opener)
    try:
        yield b
    finally:
        for store in b.stores:
            store.close()


@pytest.fixture
def store(backend: Backend) -> ObjectStore:
    return backend.open()


def keys_of(infos: Iterator[ObjectInfo]) -> list[str]:
    return [info.key for info in infos]


def byte_sorted(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-8"))


def put_many(store: ObjectStore, keys: list[str], data: bytes = b"x") -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: store.put(k, data), keys))


# ------------------------------------------------------------------------------------------
# contract: every backend
# ------------------------------------------------------------------------------------------


def test_is_an_object_store(store: ObjectStore) -> None:
    assert isinstance(store, ObjectStore)


@pytest.mark.parametrize("size", [0, 1, 1000, 5 * 1024 * 1024], ids=["empty", "1B", "1KB", "5MB"])
def test_put_get_roundtrip(store: ObjectStore, size: int) -> None:
    data = random.Random(size).randbytes(size)
    store.put("dir/obj.bin", data)
    assert store.get("dir/obj.bin") == data
    assert store.head("dir/obj.bin") == ObjectInfo("dir/obj.bin", size)
    assert list(store.list("dir/")) == [ObjectInfo("dir/obj.bin", size)]


def test_put_overwrites(store: ObjectStore) -> None:
    store.put("k", b"first version")
    store.put("k", b"second")
    assert store.get("k") == b"second"
    assert store.head("k").size == len(b"second")
    assert keys_of(store.list("")) == ["k"]


def test_create_only_on_new_key(store: ObjectStore) -> None:
    store.put("segments/p=00000/0001.avro", b"payload", create_only=True)
    assert store.get("segments/p=00000/0001.avro") == b"payload"


def test_create_only_on_existing_key_keeps_original(store: ObjectStore) -> None:
    store.put("k", b"original", create_only=True)
    with pytest.raises(ObjectExists) as info:
        store.put("k", b"intruder", create_only=True)
    assert info.value.hint
    assert store.get("k") == b"original"
    store.put("plain", b"original")  # a plain put's object is just as protected
    with pytest.raises(ObjectExists):
        store.put("plain", b"intruder", create_only=True)
    assert store.get("plain") == b"original"


def test_put_with_the_datas_sha256(store: ObjectStore) -> None:
    """A caller's digest of the data may go with it (capture gives each segment its
    sidecar's): the object stored is the data, create-only as ever."""
    data = os.urandom(5000)
    store.put("segments/k.avro", data, create_only=True, sha256=hashlib.sha256(data).digest())
    assert store.get("segments/k.avro") == data
    with pytest.raises(ObjectExists):
        store.put("segments/k.avro", data, create_only=True,
                  sha256=hashlib.sha256(data).digest())


def test_put_of_pieces_stores_their_concatenation(store: ObjectStore) -> None:
    """A Gathered payload (capture's segments: framing and records as pieces) is stored as
    its pieces joined, whatever their number and kinds (more pieces than one writev takes,
    empty ones, memoryviews), plainly or create-only, with or without the digest."""
    rng = random.Random(7)
    pieces: list[bytes | bytearray | memoryview] = [
        rng.randbytes(rng.choice([0, 1, 17, 3400])) for _ in range(2500)]
    pieces[10] = memoryview(bytearray(b"a view of a bytearray"))[2:9]
    pieces[11] = bytearray(b"a bytearray")
    data = b"".join(pieces)
    store.put("segments/g.avro", Gathered(list(pieces)), create_only=True,
              sha256=hashlib.sha256(data).digest())
    assert store.get("segments/g.avro") == data
    assert store.head("segments/g.avro").size == len(data)
    with pytest.raises(ObjectExists):
        store.put("segments/g.avro", Gathered([b"other"]), create_only=True)
    assert store.get("segments/g.avro") == data
    store.put("state/g.json", Gathered([b"{", b"", b'"a": 1', b"}"]))
    store.put("state/g.json", Gathered([b'{"a": 2}']))
    assert store.get("state/g.json") == b'{"a": 2}'
    store.put("empty", Gathered([]))
    assert store.get("empty") == b""


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_create_only_exactly_one_wins(backend: Backend, store: ObjectStore,
                                                 round_: int) -> None:
    if backend.name.startswith("moto"):
        pytest.skip("moto checks If-None-Match and stores the object in two steps without a "
                    "lock: under load two writers both win (seen on a loaded machine). The real "
                    "S3 servers (s3proxy, SeaweedFS) and file:// hold the contract here")
    key = f"race/{round_}"
    threads = 8
    barrier = threading.Barrier(threads)
    payloads = [f"writer {i} ".encode() * 5000 for i in range(threads)]

    def attempt(i: int) -> str:
        barrier.wait()
        try:
            store.put(key, payloads[i], create_only=True)
        except ObjectExists:
            return "exists"
        return "won"

    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = list(pool.map(attempt, range(threads)))
    assert sorted(outcomes) == ["exists"] * (threads - 1) + ["won"]
    assert store.get(key) == payloads[outcomes.index("won")]


def test_missing_key_raises_not_found(store: ObjectStore) -> None:
    store.put("present/x", b"x")
    for key in ("absent", "present/absent", "present", "deeper/still/absent"):
        with pytest.raises(ObjectNotFound):
            store.get(key)
        with pytest.raises(ObjectNotFound):
            store.head(key)
        with pytest.raises(ObjectNotFound):
            store.get_range(key, 0, 10)
        with pytest.raises(ObjectNotFound):
            store.get_range(key, 0, 0)


def test_get_range(store: ObjectStore) -> None:
    data = bytes(range(256)) * 4  # 1024 bytes
    store.put("r", data)
    assert store.get_range("r", 0, 10) == data[:10]
    assert store.get_range("r", 100, 200) == data[100:300]
    assert store.get_range("r", 1000, 24) == data[1000:]  # exactly to the end
    assert store.get_range("r", 1000, 100) == data[1000:]  # past the end: short read
    assert store.get_range("r", 0, 5000) == data  # longer than the object
    assert store.get_range("r", 1023, 1) == data[1023:]
    assert store.get_range("r", 1024, 10) == b""  # starts at the end
    assert store.get_range("r", 5000, 10) == b""  # starts past the end
    assert store.get_range("r", 10, 0) == b""
    store.put("empty", b"")
    assert store.get_range("empty", 0, 10) == b""
    with pytest.raises(ValueError):
        store.get_range("r", -1, 10)
    with pytest.raises(ValueError):
        store.get_range("r", 0, -1)


def test_ranged_reader_reads_objects_in_parts(store: ObjectStore) -> None:
    """``RangedReader`` (parallel ranged GETs, built on ``get_range``): the parts of each
    object, in order, are its bytes, whatever the part size against the object's (and, sealed,
    against its chunks); an empty object is one empty part; an object shorter than the size
    the caller knows fails, a missing one is ObjectNotFound."""
    from daemon.errors import IntegrityError
    from daemon.objectstore.ranged import RangedReader

    big = random.Random(7).randbytes(200_003)
    store.put("b/big", big)
    store.put("b/small", b"tiny")
    store.put("b/empty", b"")
    for part_bytes in (16_384, 70_001, 1 << 20):
        with RangedReader(store, part_bytes=part_bytes, depth=3) as reader:
            parts = list(reader.parts("b/big", len(big)))
            assert b"".join(parts) == big
            assert all(len(p) == part_bytes for p in parts[:-1])
            assert reader.whole("b/big", len(big)) == big
    with RangedReader(store, part_bytes=50_000, depth=2) as reader:
        objects = [("b/small", 4), ("b/empty", 0), ("b/big", len(big)), ("b/small", 4)]
        got = [b"".join(parts) for parts in reader.each(objects)]
        assert got == [b"tiny", b"", big, b"tiny"]
        assert list(reader.parts("b/big", 1000)) == [big[:1000]]  # bytes past size unread
        with pytest.raises(IntegrityError, match="b/small"):
            list(reader.parts("b/small", 5))
        with pytest.raises(ObjectNotFound):
            list(reader.parts("b/absent", 10))
        with pytest.raises(ObjectNotFound):
            list(reader.parts("b/absent", 0))


def test_ranged_reader_keeps_at_most_depth_gets_in_flight(store: ObjectStore) -> None:
    """The memory bound: never more than ``depth`` ranged GETs outstanding, and while the
    consumer holds a part no further GET is started beyond the ``depth`` ahead of it."""
    from daemon.objectstore.ranged import RangedReader

    data = random.Random(3).randbytes(64_000)
    store.put("d", data)
    lock, live, peak, started = threading.Lock(), [0], [0], [0]
    inner = store.get_range

    def counted(key: str, start: int, length: int) -> bytes:
        with lock:
            live[0] += 1
            started[0] += 1
            peak[0] = max(peak[0], live[0])
        try:
            time.sleep(0.002)
            return inner(key, start, length)
        finally:
            with lock:
                live[0] -= 1

    class Counting:
        url = store.url
        get_range = staticmethod(counted)

    with RangedReader(Counting(), part_bytes=1000, depth=3) as reader:  # type: ignore[arg-type]
        consumed = 0
        for part in reader.parts("d", len(data)):
            consumed += 1
            with lock:
                assert started[0] <= consumed + 3
            assert part == data[(consumed - 1) * 1000:consumed * 1000]
    assert consumed == 64
    assert 1 <= peak[0] <= 3


def test_get_view_gives_the_bytes_of_get(store: ObjectStore) -> None:
    """``get_view``: mapped on file://, read elsewhere; the same bytes either way."""
    data = bytes(range(256)) * 300
    store.put("v", data)
    view = get_view(store, "v")
    assert bytes(view) == data == store.get("v")
    assert bytes(memoryview(view)[1000:1010]) == data[1000:1010]
    store.put("empty", b"")
    assert bytes(get_view(store, "empty")) == b""
    with pytest.raises(ObjectNotFound):
        get_view(store, "missing")


# Keys whose byte order differs from a naive directory walk: '/' (0x2f) sorts after
# '-' (0x2d) and '.' (0x2e) but before '0' and letters, so "a/b.c" < "a/b/c" < "a/bc".
# ("a/b" and "a/b/c" cannot coexist: see the portability rule in daemon.objectstore.)
ORDER_KEYS = [
    "a/b/c",
    "a.b",
    "a-b",
    "a/b.c",
    "a/b-c",
    "a/bc",
    "a/b/c.d",
    "a/b/d",
    "a/b/c-",
    "a0",
    "ab",
    "a b",
    "A",
    "a/é",
    "a/z",
    "a/Z",
    "b",
    "z/y/x/w",
]


def test_list_is_in_byte_order(store: ObjectStore) -> None:
    shuffled = ORDER_KEYS[:]
    random.Random(7).shuffle(shuffled)
    for key in shuffled:
        store.put(key, key.encode())
    expected = byte_sorted(ORDER_KEYS)
    assert expected[:4] == ["A", "a b", "a-b", "a.b"]  # the test's own premise
    listed = list(store.list(""))
    assert [i.key for i in listed] == expected
    assert all(i.size == len(i.key.encode()) for i in listed)


def test_list_prefix_filtering(store: ObjectStore) -> None:
    put_many(store, ORDER_KEYS)

    def expect(prefix: str) -> list[str]:
        return byte_sorted([k for k in ORDER_KEYS if k.startswith(prefix)])

    for prefix in ("a/", "a/b", "a/b/", "a/b/c", "a.", "a", "z/y/", "A", "a/b/c.d", "b"):
        assert keys_of(store.list(prefix)) == expect(prefix), prefix
    for missing in ("zz", "missing/dir/", "a/b/c/d/", "a/q", "a/b/c.d/e"):
        assert keys_of(store.list(missing)) == [], missing


def test_list_start_after(store: ObjectStore) -> None:
    put_many(store, ORDER_KEYS)
    ordered = byte_sorted(ORDER_KEYS)
    for i, key in enumerate(ordered):
        assert keys_of(store.list("", start_after=key)) == ordered[i + 1 :], key
    # start_after need not exist; it may fall between keys or inside a "directory"
    for marker in ("", "0", "a/b", "a/b/", "a/b/c/zzz", "a/b0", "a/", "zzzz"):
        expected = [k for k in ordered if k.encode() > marker.encode()]
        assert keys_of(store.list("", start_after=marker)) == expected, marker
    # combined with a prefix, including markers before and after the prefix range
    in_a = [k for k in ordered if k.startswith("a/")]
    assert keys_of(store.list("a/", start_after="a/b/c")) == in_a[in_a.index("a/b/c") + 1 :]
    assert keys_of(store.list("a/", start_after="0")) == in_a
    assert keys_of(store.list("a/", start_after="b")) == []


def test_list_pagination(backend: Backend) -> None:
    store = backend.open(page_size=3)
    keys = [f"log/p={p:05d}/{o:020d}.avro" for p in range(3) for o in range(0, 70, 10)]
    keys += ["log/p=00001.json", "other/x"]
    put_many(store, keys)
    ordered = byte_sorted(keys)
    assert keys_of(store.list("")) == ordered
    assert keys_of(store.list("log/")) == [k for k in ordered if k.startswith("log/")]
    after = "log/p=00001/00000000000000000030.avro"
    assert keys_of(store.list("log/p=00001", start_after=after)) == [
        k for k in ordered if k.startswith("log/p=00001") and k > after
    ]


def test_list_more_than_one_default_page(store: ObjectStore) -> None:
    keys = [f"many/{i:05d}" for i in range(1105)]
    put_many(store, keys)
    assert keys_of(store.list("many/")) == keys
    assert keys_of(store.list("many/", start_after="many/00999")) == keys[1000:]


def test_list_sees_reopened_repository(backend: Backend) -> None:
    first = backend.open()
    first.put("shared/k", b"v")
    second = backend.open()
    assert second.get("shared/k") == b"v"
    assert keys_of(second.list("shared/")) == ["shared/k"]


def test_delete(store: ObjectStore) -> None:
    store.put("d/one", b"1")
    store.put("d/two", b"2")
    store.delete("d/one")
    with pytest.raises(ObjectNotFound):
        store.get("d/one")
    with pytest.raises(ObjectNotFound):
        store.head("d/one")
    assert keys_of(store.list("d/")) == ["d/two"]
    store.delete("d/one")  # already gone: fine
    store.delete("never/existed")
    store.delete("d")  # a "directory", not an object: nothing to delete
    assert store.get("d/two") == b"2"
    store.delete("d/two")
    assert keys_of(store.list("")) == []
    store.put("d/two", b"again")  # the key is usable again afterwards
    assert store.get("d/two") == b"again"


def test_delete_many(store: ObjectStore) -> None:
    for key in ("a/1", "a/2", "a/deep/3", "b/4", "keep/5", "top"):
        store.put(key, key.encode())
    failed = store.delete_many(["a/1", "a/deep/3", "b/4", "top", "never/there", "a/missing", "a"])
    assert failed == {}  # missing keys and "directories" are not errors
    assert keys_of(store.list("")) == ["a/2", "keep/5"]
    for key in ("a/1", "a/deep/3", "b/4", "top"):
        with pytest.raises(ObjectNotFound):
            store.get(key)
    assert store.delete_many([]) == {}
    assert store.delete_many(["a/1", "b/4"]) == {}  # already gone: fine
    store.put("a/1", b"again")  # the key is usable again afterwards
    assert store.get("a/1") == b"again"
    assert store.get("a/2") == b"a/2"


def test_delete_many_more_than_one_batch(store: ObjectStore) -> None:
    """Over 1,000 keys (S3's DeleteObjects limit) across directories, plus missing ones."""
    keys = [f"seg/p={p}/{i:05d}" for p in range(3) for i in range(350)] + [
        f"seg/p=0/sub/{i:03d}" for i in range(60)
    ]
    put_many(store, keys)
    kept = keys[::97]
    doomed = [k for k in keys if k not in kept]
    assert len(doomed) > 1000
    missing = [f"seg/p=9/{i:05d}" for i in range(20)]
    assert store.delete_many(doomed + missing) == {}
    assert keys_of(store.list("")) == byte_sorted(kept)
    assert keys_of(store.list("seg/p=1/")) == byte_sorted([k for k in kept if k.startswith("seg/p=1/")])


def test_delete_many_rejects_invalid_keys(store: ObjectStore) -> None:
    store.put("ok", b"1")
    with pytest.raises(StoreError, match="invalid object key"):
        store.delete_many(["ok", "../escape"])


UNUSUAL_KEYS = [
    "p=00001",
    "=",
    "with space",
    " leading and trailing ",
    "dir with space/file with space",
    "plus+sign",
    "percent%20literal",
    "tilde~",
    "colon:x",
    "comma,semi;",
    "amp&at@",
    "dollar$quote'",
    "paren(1)[2]{3}",
    "star*question?hash#",
    "unicode-ü-日本語",
    ".hidden",
    "...",
    "x" * 200,
]


def test_unusual_but_legal_keys(store: ObjectStore) -> None:
    for key in UNUSUAL_KEYS:
        store.put(key, key.encode())
    for key in UNUSUAL_KEYS:
        assert store.get(key) == key.encode(), key
        assert store.head(key) == ObjectInfo(key, len(key.encode())), key
        assert store.get_range(key, 0, 3) == key.encode()[:3], key
    assert keys_of(store.list("")) == byte_sorted(UNUSUAL_KEYS)
    assert keys_of(store.list("p=")) == ["p=00001"]
    assert keys_of(store.list("dir with space/")) == ["dir with space/file with space"]
    for key in UNUSUAL_KEYS:
        store.delete(key)
    assert keys_of(store.list("")) == []


INVALID_KEYS = [
    "",
    "/absolute",
    "trailing/",
    "a//b",
    "..",
    "../escape",
    "a/../b",
    "a/..",
    ".",
    "./a",
    "a/./b",
    "nul\x00byte",
    ".vecwal-tmp-reserved",
    "a/.vecwal-tmp-reserved",
    "k" * 1025,
    "bad-\udcff-surrogate",
]


@pytest.mark.parametrize("key", INVALID_KEYS, ids=range(len(INVALID_KEYS)))
def test_invalid_keys_are_rejected(store: ObjectStore, key: str) -> None:
    operations: list[Callable[[], object]] = [
        lambda: store.put(key, b"x"),
        lambda: store.put(key, b"x", create_only=True),
        lambda: store.get(key),
        lambda: store.get_range(key, 0, 1),
        lambda: store.head(key),
        lambda: store.delete(key),
    ]
    for operation in operations:
        with pytest.raises(StoreError) as info:
            operation()
        assert type(info.value) is StoreError  # not NotFound/Exists/Unavailable
        assert info.value.hint
    assert keys_of(store.list("")) == []


@pytest.mark.parametrize("prefix", ["/abs", "a//", "../", "a/../b", ".vecwal-tmp-x/"])
def test_invalid_prefixes_are_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(StoreError):
        store.list(prefix)


def test_readers_never_see_a_partial_overwrite(backend: Backend, store: ObjectStore) -> None:
    if backend.name.startswith("moto"):
        pytest.skip(
            "moto's in-memory S3 is not thread-safe here: an overwrite closes the old "
            "object's buffer under a concurrent reader (ValueError inside moto)"
        )
    versions = [bytes([65 + i]) * 300_000 for i in range(2)]
    store.put("hot", versions[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def writer() -> None:
        for i in range(20):
            store.put("hot", versions[i % 2])
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while not stop.is_set():
            seen.append(store.get("hot"))
    finally:
        thread.join()
    assert seen
    assert all(data in versions for data in seen)


def test_url_and_close(backend: Backend, store: ObjectStore) -> None:
    assert store.url.startswith("file:///" if backend.name.startswith("file") else "s3://")
    assert "@" not in store.url
    assert "secret" not in store.url.lower()
    store.put("k", b"v")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError):
        store.get("k")
    reopened = backend.open()
    assert reopened.get("k") == b"v"


# ------------------------------------------------------------------------------------------
# file:// (LocalStore and daemon.atomic)
# ------------------------------------------------------------------------------------------


def _make_temp(path: Path, age_seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half written")
    then = time.time() - age_seconds
    os.utime(path, (then, then))


def test_local_cleans_stale_temp_files_at_open_and_never_lists_them(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "segments").mkdir(parents=True)
    (root / "segments" / "real.avro").write_bytes(b"data")
    stale = [root / ".vecwal-tmp-old", root / "segments" / ".vecwal-tmp-real.avro.1.ab"]
    for path in stale:
        _make_temp(path, age_seconds=2 * atomic.STALE_TEMP_AGE_SECONDS)
    fresh = root / "segments" / ".vecwal-tmp-inflight.avro.2.cd"  # a live writer's
    _make_temp(fresh, age_seconds=1)

    store = LocalStore(root)
    assert store.stale_temp_files_removed == 2
    assert not any(path.exists() for path in stale)
    assert fresh.exists()  # another process may still be writing it
    assert keys_of(store.list("")) == ["segments/real.avro"]
    assert keys_of(store.list("segments/.vecwal")) == []
    with pytest.raises(StoreError):
        store.get("segments/.vecwal-tmp-inflight.avro.2.cd")


def test_local_puts_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    for i in range(20):
        store.put(f"a/{i % 3}", b"v" * i)
        store.put(f"b/{i}", b"v", create_only=True)
    with pytest.raises(ObjectExists):
        store.put("b/1", b"v", create_only=True)
    leftovers = [p for p in (tmp_path / "repo").rglob("*") if atomic.is_temp_name(p.name)]
    assert leftovers == []


def test_local_rejects_traversal_without_touching_the_filesystem(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = LocalStore(root)
    for key in ("../outside", "a/../../outside", "/etc/passwd", "a/../b"):
        with pytest.raises(StoreError, match="invalid object key") as info:
            store.put(key, b"x")
        assert "key" in info.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
    assert list(root.iterdir()) == []


def test_local_layout_is_plain_files(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = LocalStore(root)
    store.put("segments/p=00001/0001.avro", b"avro bytes")
    assert (root / "segments" / "p=00001" / "0001.avro").read_bytes() == b"avro bytes"
    assert store.url == root.as_uri()


def test_local_key_that_is_also_a_directory_is_a_store_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    store.put("a/b/c", b"1")
    for create_only in (False, True):
        with pytest.raises(StoreError) as info:
            store.put("a/b", b"2", create_only=create_only)
        assert type(info.value) is StoreError
        assert "prefix" in info.value.hint
    store.put("x/y", b"1")
    with pytest.raises(StoreError) as info:
        store.put("x/y/z", b"2")
    assert type(info.value) is StoreError
    assert store.get("a/b/c") == b"1"
    assert store.get("x/y") == b"1"


def test_local_delete_prunes_empty_directories(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = LocalStore(root)
    store.put("a/b/c/d", b"1")
    store.put("a/keep", b"2")
    store.delete("a/b/c/d")
    assert not (root / "a" / "b").exists()
    assert (root / "a" / "keep").exists()
    store.put("a/b", b"now an object")  # the pruned directory no longer collides
    assert store.get("a/b") == b"now an object"
    store.delete("a/b")
    store.delete("a/keep")
    assert list(root.iterdir()) == []


def test_local_empty_leftover_directory_does_not_block_a_put(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "k").mkdir(parents=True)
    store = LocalStore(root)
    store.put("k", b"v", create_only=True)
    assert store.get("k") == b"v"


def test_local_root_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreError, match="not a directory"):
        LocalStore(tmp_path / "file")


def test_local_read_only_repository_is_a_store_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    root = tmp_path / "repo"
    store = LocalStore(root)
    root.chmod(0o500)
    try:
        with pytest.raises(StoreError) as info:
            store.put("k", b"v")
        assert not isinstance(info.value, StoreUnavailable)
        assert "read and write" in info.value.hint
    finally:
        root.chmod(0o700)


@pytest.mark.parametrize(
    ("code", "expected", "hint"),
    [
        (errno.ENOSPC, StoreUnavailable, "free space"),
        (errno.EIO, StoreUnavailable, "dmesg"),
        (errno.EACCES, StoreError, "read and write"),
        (errno.EROFS, StoreError, "read-only"),
        (errno.ENAMETOOLONG, StoreError, "255 bytes"),
    ],
)
def test_local_os_errors_are_classified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, expected: type[StoreError], hint: str
) -> None:
    import daemon.objectstore.local as local_module

    def failing_write(path: Path, data: bytes, **_options: object) -> None:
        raise OSError(code, os.strerror(code), str(path))

    store = LocalStore(tmp_path / "repo")
    monkeypatch.setattr(local_module, "atomic_write", failing_write)
    with pytest.raises(StoreError) as info:
        store.put("k", b"v")
    assert type(info.value) is expected
    assert hint in info.value.hint


def test_atomic_write_and_create_exclusive(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic.atomic_write(target, b"one")
    atomic.atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert atomic.create_exclusive(tmp_path / "new", b"first") is True
    assert atomic.create_exclusive(tmp_path / "new", b"second") is False
    assert (tmp_path / "new").read_bytes() == b"first"
    (tmp_path / "adir").mkdir()
    assert atomic.create_exclusive(tmp_path / "adir", b"x") is False
    with pytest.raises(IsADirectoryError):
        atomic.atomic_write(tmp_path / "adir", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "new", "state.json"]
    with pytest.raises(FileNotFoundError):
        atomic.atomic_write(tmp_path / "missing-dir" / "f", b"x")


def test_clean_stale_temp_files(tmp_path: Path) -> None:
    _make_temp(tmp_path / "x" / f"{atomic.TEMP_PREFIX}a", age_seconds=10_000)
    _make_temp(tmp_path / f"{atomic.TEMP_PREFIX}b", age_seconds=0)
    (tmp_path / "regular").write_bytes(b"")
    assert atomic.clean_stale_temp_files(tmp_path) == 1
    assert atomic.clean_stale_temp_files(tmp_path, min_age_seconds=0) == 1
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["regular"]
    assert atomic.clean_stale_temp_files(tmp_path / "missing") == 0


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
    _isolate_aws_env(monkeypatch, tmp_path, "AKIAUNREACHABLE", secret)
    _no_endpoint_env(monkeypatch)
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
        _isolate_aws_env(monkeypatch, tmp_path, access_key, secret)
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
    _isolate_aws_env(monkeypatch, tmp_path, s3_service.access_key, s3_service.secret_key)
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
        _isolate_aws_env(monkeypatch, tmp_path, service.access_key, service.secret_key)
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
