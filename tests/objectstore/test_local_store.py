"""The ``file://`` store (LocalStore) and ``daemon.atomic``: what the contract does not say."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from daemon import atomic
from daemon.errors import (
    ObjectExists,
    StoreError,
    StoreUnavailable,
)
from daemon.objectstore.local import LocalStore
from tests.objectstore.awsenv import keys_of

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
