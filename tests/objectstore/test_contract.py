"""The ObjectStore contract, run against every backend. Backend-specific behaviour is in
test_local_store.py, test_s3_store.py and test_open_store.py.

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

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import (
    ObjectExists,
    ObjectNotFound,
    StoreError,
)
from daemon.objectstore import Gathered, ObjectInfo, ObjectStore, get_view, open_store
from daemon.objectstore.s3 import S3Store
from tests.objectstore.awsenv import isolate_aws_env, keys_of

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
        isolate_aws_env(monkeypatch, tmp_path, service.access_key, service.secret_key)
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
