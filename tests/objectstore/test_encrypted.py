"""The encrypted store and its keyring beyond the contract (which test_contract.py runs on
``file+sealed``, ``moto+sealed`` and ``s3+sealed``): ranged reads across chunks fetch only
their chunks, tampering, moving and cutting fail, nothing readable reaches the store, the
keyring's KEK checks, identity checks, rotation."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.changelog.repository import Repository
from daemon.errors import ConfigError, EncryptionKeyError, IntegrityError
from daemon.keys import LocalKek, open_kek
from daemon.keys.keyring import REPOSITORY_KEYS, Keyring, rotate
from daemon.keys.opener import open_encrypted
from daemon.objectstore import ObjectInfo, ObjectStore, open_store
from daemon.objectstore.encrypted import HEADER_SIZE, EncryptedStore
from daemon.objectstore.local import LocalStore

SECRET_TEXT = b"the-distinctive-document-string-7f3a"


class CountingStore(LocalStore):
    """A LocalStore that counts the bytes its ranged reads return."""

    ranged_bytes = 0
    gets = 0

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = super().get_range(key, start, length)
        self.ranged_bytes += len(data)
        return data

    def get(self, key: str) -> bytes:
        self.gets += 1
        return super().get(key)


def _kek() -> LocalKek:
    return LocalKek(os.urandom(32), "keyfile")


def _sealed(root: Path, kek: LocalKek, chunk_log2: int = 16) -> EncryptedStore:
    inner = CountingStore(root)
    return EncryptedStore(inner, Keyring.open(inner, kek), chunk_log2)


# -- ranged reads ---------------------------------------------------------------------------
PLAIN = random.Random(5).randbytes(10 * 1024 + 333)  # ten 1 KiB chunks and a part


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> EncryptedStore:
    store = _sealed(tmp_path_factory.mktemp("chunked"), _kek(), chunk_log2=10)
    store.put("obj", PLAIN)
    store.put("exact", PLAIN[:4096])  # ends on a chunk boundary
    return store


@settings(max_examples=200, deadline=None)
@given(start=st.integers(0, len(PLAIN) + 2000), length=st.integers(0, len(PLAIN) + 2000),
       name=st.sampled_from(["obj", "exact"]))
def test_ranged_reads_match_the_plaintext(chunked: EncryptedStore, start: int, length: int,
                                          name: str) -> None:
    plain = PLAIN if name == "obj" else PLAIN[:4096]
    assert chunked.get_range(name, start, length) == plain[start:start + length]


def test_a_ranged_read_fetches_only_its_chunks(chunked: EncryptedStore) -> None:
    inner = chunked.inner
    assert isinstance(inner, CountingStore)
    chunked.get_range("obj", 0, 1)  # caches the header
    before, gets = inner.ranged_bytes, inner.gets
    assert chunked.get_range("obj", 5 * 1024 + 10, 100) == PLAIN[5 * 1024 + 10:5 * 1024 + 110]
    assert inner.ranged_bytes - before == 1024 + 16 + 1  # one chunk, its tag, one byte more
    assert inner.gets == gets  # never the whole object


def test_sizes_are_plaintext_sizes(chunked: EncryptedStore) -> None:
    assert chunked.head("obj") == ObjectInfo("obj", len(PLAIN))
    assert {i.key: i.size for i in chunked.list("")}["exact"] == 4096


def test_an_overwritten_object_read_in_ranges_is_the_new_one(tmp_path: Path) -> None:
    store = _sealed(tmp_path, _kek(), chunk_log2=10)
    store.put("state/w.json", b"a" * 5000)
    assert store.get_range("state/w.json", 3000, 10) == b"a" * 10  # header cached
    store.put("state/w.json", b"b" * 5000)
    assert store.get_range("state/w.json", 3000, 10) == b"b" * 10


# -- what reaches the store -----------------------------------------------------------------
def test_nothing_readable_reaches_the_store(tmp_path: Path) -> None:
    store = _sealed(tmp_path, _kek())
    store.put("log/t/p=00000/a.avro", SECRET_TEXT * 100)
    store.put("state/watermark/t/p=00000.json", b'{"secret": "' + SECRET_TEXT + b'"}')
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert SECRET_TEXT not in raw
    assert store.get("log/t/p=00000/a.avro") == SECRET_TEXT * 100
    sealed = (tmp_path / "log/t/p=00000/a.avro").read_bytes()
    assert sealed.startswith(b"VWS1") and len(sealed) == HEADER_SIZE + 3600 + 16
    ident = orjson.loads((tmp_path / "vecwal.json").read_bytes())  # plain: names the scheme
    assert ident["encryption"]["scheme"] == "VWS1"
    assert len(list((tmp_path / "keys/repository").iterdir())) == 1


@pytest.mark.parametrize("damage", ["flip", "cut", "move", "swap-header"])
def test_damaged_moved_or_cut_objects_fail(tmp_path: Path, damage: str) -> None:
    store = _sealed(tmp_path, _kek(), chunk_log2=10)
    store.put("a/x", PLAIN)
    store.put("a/y", PLAIN)
    path = tmp_path / "a/x"
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[HEADER_SIZE + 3000] ^= 1
        path.write_bytes(blob)
    elif damage == "cut":  # at a chunk boundary: the new last chunk was sealed as not last
        path.write_bytes(blob[:HEADER_SIZE + 4 * (1024 + 16)])
    elif damage == "move":
        shutil.copy(path, tmp_path / "a/z")
        path = tmp_path / "a/z"
    else:
        other = (tmp_path / "a/y").read_bytes()
        path.write_bytes(other[:HEADER_SIZE] + bytes(blob[HEADER_SIZE:]))
    key = path.relative_to(tmp_path).as_posix()
    with pytest.raises(IntegrityError):
        store.get(key)
    with pytest.raises(IntegrityError):
        store.get_range(key, 0, len(PLAIN))
    with pytest.raises(IntegrityError):  # opened as copied out: the cut fails on opening
        store.get_opened(key).read(0, len(PLAIN))


@settings(max_examples=100, deadline=None)
@given(start=st.integers(0, len(PLAIN)), length=st.integers(0, len(PLAIN)),
       name=st.sampled_from(["obj", "exact"]))
def test_an_object_opened_as_copied_out_gives_the_plaintext(chunked: EncryptedStore, start: int,
                                                            length: int, name: str) -> None:
    """``get_opened`` (a restore's runs of a base file): any range, straight into a buffer or
    through the kept chunk, equals the plaintext; past the end is refused."""
    plain = PLAIN if name == "obj" else PLAIN[:4096]
    opened = chunked.get_opened(name)
    assert len(opened) == len(plain)
    length = min(length, len(plain) - min(start, len(plain)))
    start = min(start, len(plain))
    out = bytearray(length)
    opened.copy_into(start, memoryview(out))
    assert bytes(out) == plain[start:start + length]
    assert opened.read(start, length) == plain[start:start + length]
    with pytest.raises(ValueError, match="outside"):
        opened.copy_into(len(plain) - length, memoryview(bytearray(length + 1)))


# -- keyring and KEKs -----------------------------------------------------------------------
def test_another_kek_cannot_open_the_repository(tmp_path: Path) -> None:
    _sealed(tmp_path, _kek()).put("k", b"v")
    with pytest.raises(EncryptionKeyError) as info:
        _sealed(tmp_path, _kek())
    assert "not by the configured key-encryption key" in info.value.message
    assert "kek" in info.value.hint


def test_a_key_object_copied_to_another_repository_does_not_unwrap(tmp_path: Path) -> None:
    kek = _kek()
    _sealed(tmp_path / "one", kek)
    _sealed(tmp_path / "two", kek)
    source = next((tmp_path / "one" / REPOSITORY_KEYS).iterdir())
    for stale in (tmp_path / "two" / REPOSITORY_KEYS).iterdir():
        stale.unlink()
    shutil.copy(source, tmp_path / "two" / REPOSITORY_KEYS / source.name)
    with pytest.raises(EncryptionKeyError):
        _sealed(tmp_path / "two", kek)  # the context names the other repository


def test_a_key_another_process_added_is_found(tmp_path: Path) -> None:
    kek = _kek()
    reader = _sealed(tmp_path, kek)
    writer = _sealed(tmp_path, kek)
    writer.keys.add_key(kek)  # type: ignore[attr-defined]
    writer.put("k", b"sealed under the new key")
    assert reader.get("k") == b"sealed under the new key"


def test_identity_refuses_mixing_encrypted_and_clear(tmp_path: Path) -> None:
    Repository(LocalStore(tmp_path / "clear")).ensure_initialized()
    with pytest.raises(ConfigError) as info:
        _sealed(tmp_path / "clear", _kek())
    assert "without encryption" in info.value.message
    _sealed(tmp_path / "sealed", _kek())
    with pytest.raises(ConfigError) as info:
        Repository(LocalStore(tmp_path / "sealed")).ensure_initialized()
    assert "encrypted repository" in info.value.message and "enabled" in info.value.hint


def test_key_files_open_to_others_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_bytes(os.urandom(32).hex().encode())
    path.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        open_kek(f"keyfile:{path}")
    assert "0644" in info.value.message and "chmod 600" in info.value.hint
    path.chmod(0o600)
    assert open_kek(f"keyfile:{path}").name.startswith("keyfile:")
    with pytest.raises(ConfigError):
        open_kek("env:VECWAL_TEST_NO_SUCH_VAR", environ={})
    key = os.urandom(32)
    assert open_kek("env:K", environ={"K": key.hex()}).name == LocalKek(key, "env").name
    with pytest.raises(ConfigError) as info:
        open_kek("env:K", environ={"K": "too short"})
    assert "32-byte" in info.value.message


def test_rotation_rewraps_keys_and_keeps_every_object(tmp_path: Path) -> None:
    old, new = _kek(), _kek()
    store = _sealed(tmp_path, old)
    store.put("before", b"written under the old kek")
    report = rotate(Keyring.open(LocalStore(tmp_path), old), new)
    assert report.old_kek == old.name and report.new_kek == new.name
    with pytest.raises(EncryptionKeyError):
        _sealed(tmp_path, old)  # the old KEK's wrappings are gone
    after = _sealed(tmp_path, new)
    assert after.get("before") == b"written under the old kek"
    after.put("after", b"x")
    assert after.keys.current()[0] == report.new_key  # type: ignore[attr-defined]
    key_objects = [orjson.loads(p.read_bytes()) for p in (tmp_path / REPOSITORY_KEYS).iterdir()]
    assert {w["kek"] for k in key_objects for w in k["wrappings"]} == {new.name}


def test_an_interrupted_rotation_opens_with_either_kek_and_finishes(tmp_path: Path) -> None:
    old, new = _kek(), _kek()
    _sealed(tmp_path, old).put("k", b"v")

    class Crash(Exception):
        pass

    ring = Keyring.open(LocalStore(tmp_path), old)
    real = ring.rewrap
    calls = []

    def crashing(record, wrappings):  # type: ignore[no-untyped-def]
        calls.append(record.id)
        if len(calls) == 2:  # after step 2 (both wrappings), before step 3 finished
            raise Crash
        return real(record, wrappings)

    ring.rewrap = crashing  # type: ignore[method-assign]
    with pytest.raises(Crash):
        rotate(ring, new)
    assert _sealed(tmp_path, old).get("k") == b"v"
    assert _sealed(tmp_path, new).get("k") == b"v"
    rotate(Keyring.open(LocalStore(tmp_path), old, also=(new,)), new)
    assert _sealed(tmp_path, new).get("k") == b"v"


def test_open_encrypted_is_what_the_cli_opens(tmp_path: Path) -> None:
    keyfile = tmp_path / "kek"
    keyfile.write_bytes(os.urandom(32))
    keyfile.chmod(0o600)
    url = (tmp_path / "repo").as_uri()
    store: ObjectStore = open_encrypted(lambda: open_store(url), f"keyfile:{keyfile}")
    store.put("log/x", SECRET_TEXT)
    assert open_encrypted(lambda: open_store(url), f"keyfile:{keyfile}").get("log/x") == SECRET_TEXT
    assert SECRET_TEXT not in (tmp_path / "repo/log/x").read_bytes()
