"""``file://`` repositories: objects are plain files under a local directory.

The embedded default for a single machine (or a shared NFS mount): no server to run,
and the repository is browsable with ``ls``. Key ``segments/p=00001/x.avro`` is the
file ``<root>/segments/p=00001/x.avro``; directories are created on demand and empty
ones are pruned when their last object is deleted.

Guarantees match S3's (see :class:`~daemon.objectstore.ObjectStore`): puts go through
:mod:`daemon.atomic` (temp file + fsync + rename + directory fsync), so readers never
see a partial object and a returned put survives a power cut; create-only puts use an
exclusive hard link, atomic even between processes. Temporary files of in-flight
writes start with ``.vecwal-tmp-``: they are never listed, and ones left behind by a
crashed writer are removed when the store is opened.

Limits a filesystem imposes: a key cannot be both an object and a "directory" of other
keys (``a/b`` and ``a/b/c``), which raises :class:`StoreError`; each key segment must
fit the filesystem's name limit (usually 255 bytes). A ``lost+found`` directory at the
repository root (the root of a mounted filesystem) is not listed.

The repository is private (:mod:`daemon.filemode`): files are created 0600 and directories
0700 whatever the umask (``file_mode`` opens them to a group), and opening refuses a root, or
a directory directly in it, that other users can write to.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from daemon.atomic import (
    PRIVATE_FILE_MODE,
    STALE_TEMP_AGE_SECONDS,
    atomic_write,
    clean_stale_temp_files,
    create_exclusive,
    dir_mode,
    fsync_directory,
    is_temp_name,
    make_dirs,
)
from daemon.errors import ObjectExists, ObjectNotFound, StoreError, StoreUnavailable
from daemon.filemode import Exposure, check_repository_root, scan_exposure
from daemon.objectstore import ObjectInfo, check_key, check_prefix
from daemon.spans import Gathered, Payload

__all__ = ["LocalStore"]

# A concurrent delete may prune a parent directory between our mkdir and our write;
# the put then simply creates it again. More misses than this means something is wrong.
_PUT_ATTEMPTS = 5

# Conditions an operator can clear while vecwal retries (free space, a flaky mount).
_TRANSIENT_ERRNOS = frozenset(
    code
    for code in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),
        errno.EIO,
        getattr(errno, "ESTALE", None),
        errno.ETIMEDOUT,
        errno.EAGAIN,
        errno.EINTR,
        errno.EBUSY,
        errno.EMFILE,
        errno.ENFILE,
        errno.ENOMEM,
    )
    if code is not None
)


class LocalStore:
    """An :class:`~daemon.objectstore.ObjectStore` over the directory ``root``.

    ``root`` must be absolute; it is created (durably, with missing parents) if needed.
    Files are created with permissions ``file_mode`` and directories with the matching
    directory mode (0600 and 0700 by default), whatever the umask. Opening removes temp
    files older than ``stale_temp_age_seconds`` (younger ones may belong to a live writer
    in another process); :attr:`stale_temp_files_removed` says how many. Raises
    :class:`StoreError` when ``root`` cannot be created or is not a directory, and
    :class:`~daemon.errors.ConfigError` when other users can write to it
    (:func:`~daemon.filemode.check_repository_root`). Safe to share between threads and
    between processes.
    """

    def __init__(self, root: Path, *, stale_temp_age_seconds: float = STALE_TEMP_AGE_SECONDS,
                 file_mode: int = PRIVATE_FILE_MODE) -> None:
        if not root.is_absolute():
            raise StoreError(
                f"local repository path {str(root)!r} is not absolute",
                "use file:///absolute/path",
            )
        self._root = root
        self._closed = False
        self._file_mode = file_mode
        self._dir_mode = dir_mode(file_mode)
        try:
            make_dirs(root, mode=self._dir_mode)
        except (FileExistsError, NotADirectoryError):
            raise StoreError(
                f"local repository {self.url} is not a directory",
                "point storage.url at a directory (it is created if missing)",
            ) from None
        except OSError as exc:
            raise self._os_error(exc, "creating repository directory", "") from None
        # Before anything is read or removed: a tree others can write is not trusted.
        check_repository_root(root, file_mode)
        self._stale_removed = clean_stale_temp_files(root, min_age_seconds=stale_temp_age_seconds)

    @property
    def url(self) -> str:
        return self._root.as_uri()

    @property
    def root(self) -> Path:
        """The repository directory."""
        return self._root

    @property
    def stale_temp_files_removed(self) -> int:
        """How many leftover temp files of crashed writers opening the store removed."""
        return self._stale_removed

    @property
    def file_mode(self) -> int:
        """The permissions of the files this store creates (directories: the matching mode)."""
        return self._file_mode

    def permission_report(self) -> Exposure:
        """What under the repository other users can read or write (``vecwal verify``)."""
        return scan_exposure(self._root, self._file_mode)

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    def put(self, key: str, data: Payload, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        path = self._path(key)  # nothing in transit to check: sha256 unused
        body = data.pieces if isinstance(data, Gathered) else data  # pieces: one writev
        for attempt in range(1, _PUT_ATTEMPTS + 1):
            try:
                make_dirs(path.parent, mode=self._dir_mode)
                if not create_only:
                    atomic_write(path, body, mode=self._file_mode)
                    return
                if create_exclusive(path, body, mode=self._file_mode):
                    return
                if not path.is_dir():
                    raise ObjectExists(
                        f"object {key!r} already exists in {self.url}",
                        "create-only puts never overwrite; the existing object was kept",
                    )
                self._remove_empty_directory_or_fail(path, key)
            except (FileExistsError, NotADirectoryError):
                # A parent component of the key is a regular file (an existing object).
                raise self._collision(key) from None
            except IsADirectoryError:
                # The key itself is a directory: fine only if it is an empty leftover.
                self._remove_empty_directory_or_fail(path, key)
            except FileNotFoundError as exc:
                # A concurrent delete pruned the (empty) parent directory between
                # make_dirs and the write: create it again.
                if attempt == _PUT_ATTEMPTS:
                    raise self._os_error(exc, "writing", key) from None
            except OSError as exc:
                raise self._os_error(exc, "writing", key) from None
        raise StoreError(
            f"could not write {key!r} in {self.url}: its directory kept disappearing",
            "another process is deleting this part of the repository; stop it and retry",
        )

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            raise self._os_error(exc, "reading", key) from None

    def get_view(self, key: str) -> memoryview:
        """The object's bytes mapped into memory, not read: a restore writes slices of a
        bucket file straight into its output, so the file is never copied whole first.
        Objects are immutable (create-only), so the mapping cannot change under a reader;
        an unlink leaves it valid."""
        path = self._path(key)
        try:
            with path.open("rb") as f:
                if os.fstat(f.fileno()).st_size == 0:
                    return memoryview(b"")
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            raise self._os_error(exc, "reading", key) from None
        mapped.madvise(mmap.MADV_SEQUENTIAL)
        return memoryview(mapped)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"get_range needs start >= 0 and length >= 0, got {start}, {length}")
        path = self._path(key)
        try:
            with path.open("rb") as f:
                if length == 0:
                    return b""
                f.seek(start)
                return f.read(length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            raise self._os_error(exc, "reading", key) from None

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key) from None
        except OSError as exc:
            raise self._os_error(exc, "inspecting", key) from None
        if not stat.S_ISREG(st.st_mode):
            raise self._not_found(key)
        return ObjectInfo(key=key, size=st.st_size)

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        self._check_open()
        # Only the directory holding the prefix's last '/' can contain matches.
        directory, _, _ = prefix.rpartition("/")
        if directory:
            return self._walk(
                self._root.joinpath(*directory.split("/")), directory + "/", prefix, start_after
            )
        return self._walk(self._root, "", prefix, start_after)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except PermissionError as exc:
            if path.is_dir():  # macOS reports unlink(directory) as EPERM
                return
            raise self._os_error(exc, "deleting", key) from None
        except OSError as exc:
            raise self._os_error(exc, "deleting", key) from None
        try:
            fsync_directory(path.parent)
        except OSError as exc:
            raise self._os_error(exc, "deleting", key) from None
        self._prune_empty_parents(path.parent)

    def delete_many(self, keys: Sequence[str]) -> dict[str, StoreError]:
        failed: dict[str, StoreError] = {}
        parents: set[Path] = set()
        for key in keys:
            path = self._path(key)
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except PermissionError as exc:
                if not path.is_dir():
                    failed[key] = self._os_error(exc, "deleting", key)
                continue
            except OSError as exc:
                failed[key] = self._os_error(exc, "deleting", key)
                continue
            parents.add(path.parent)
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            try:
                fsync_directory(parent)
            except FileNotFoundError:
                continue  # an emptied deeper directory was removed with its parent's
            except OSError as exc:
                raise self._os_error(exc, "deleting under", str(parent)) from None
            self._prune_empty_parents(parent)
        return failed

    def close(self) -> None:
        self._closed = True

    # -- internals -----------------------------------------------------------------

    def _path(self, key: str) -> Path:
        check_key(key)
        self._check_open()
        return self._root.joinpath(*key.split("/"))

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.url} was used after close()", "this is a bug, please report it")

    def _walk(self, directory: Path, key_base: str, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        """Yield the matching objects below ``directory`` (whose keys start with
        ``key_base``) in exact key order.

        Directory order and ``os.walk`` order are not key order: ``a/b/c`` must come
        after ``a/b.c`` because '/' sorts after '.'. So each directory's entries are
        sorted by the key they stand for, a subdirectory ``b`` standing for ``b/``:
        every key inside it starts with ``b/``, and no sibling name lies between ``b/``
        and those keys, which makes this lazy depth-first walk exactly sorted.
        """
        try:
            with os.scandir(directory) as scan:
                entries = [*scan]
        except (FileNotFoundError, NotADirectoryError):
            return  # a missing "directory" lists empty
        except OSError as exc:
            raise self._os_error(exc, "listing", key_base or "/") from None
        candidates: dict[str, tuple[os.DirEntry[str], bool]] = {}
        for entry in entries:
            name = entry.name
            if is_temp_name(name) or not _is_utf8(name):
                continue
            if not key_base and name == "lost+found":
                continue
            try:
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue  # vanished meanwhile
            key = key_base + name
            if is_dir:
                subtree = key + "/"  # every key below starts with this
                if not (subtree.startswith(prefix) or prefix.startswith(subtree)):
                    continue
                if subtree < start_after and not start_after.startswith(subtree):
                    continue  # the whole subtree sorts before start_after
                candidates[subtree] = (entry, True)
            elif is_file and key.startswith(prefix) and key > start_after:
                candidates[key] = (entry, False)
        for sort_key in sorted(candidates):
            entry, is_dir = candidates[sort_key]
            if is_dir:
                yield from self._walk(Path(entry.path), sort_key, prefix, start_after)
                continue
            try:
                size = entry.stat().st_size
            except FileNotFoundError:
                continue  # deleted while we were listing
            except OSError as exc:
                raise self._os_error(exc, "listing", sort_key) from None
            yield ObjectInfo(key=sort_key, size=size)

    def _prune_empty_parents(self, directory: Path) -> None:
        """Remove now-empty directories from ``directory`` up to (not including) root.

        Best effort: stops at the first directory that is not empty or cannot go. A put
        racing with this recreates its directory (see ``put``).
        """
        while directory != self._root and self._root in directory.parents:
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = directory.parent

    def _remove_empty_directory_or_fail(self, path: Path, key: str) -> None:
        """``path`` (the file for ``key``) is a directory: remove it if it is an empty
        leftover, so the put can be retried; otherwise the key layout is invalid."""
        try:
            os.rmdir(path)
        except OSError:
            raise self._collision(key) from None

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(
            f"object {key!r} not found in {self.url}",
            "check the key, and that storage.url points at the right repository",
        )

    def _collision(self, key: str) -> StoreError:
        return StoreError(
            f"cannot store {key!r} in {self.url}: the key is also a directory of other "
            "keys, or one of its parents is an object",
            "a key cannot be both an object and a prefix of others ('a/b' and 'a/b/c'); "
            "this is a bug in the key layout, please report it",
        )

    def _os_error(self, exc: OSError, action: str, key: str) -> StoreError:
        reason = exc.strerror or str(exc)
        where = f"{key!r} in {self.url}" if key else self.url
        message = f"{action} {where} failed: {reason}"
        code = exc.errno
        if code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)):
            hint = f"free space on the filesystem holding {self._root}; vecwal retries meanwhile"
        elif code in (errno.EACCES, errno.EPERM):
            hint = f"let the user running vecwal read and write {self._root}"
        elif code == errno.EROFS:
            hint = f"{self._root} is on a read-only filesystem; remount it or change storage.url"
        elif code == errno.ENAMETOOLONG:
            hint = "a key segment exceeds the filesystem's file name limit (usually 255 bytes)"
        elif code in (errno.EMFILE, errno.ENFILE):
            hint = "too many open files: raise the file descriptor limit (ulimit -n)"
        elif code in (errno.EIO, getattr(errno, "ESTALE", None)):
            hint = f"check the disk or network mount holding {self._root} (see dmesg)"
        else:
            hint = f"check the filesystem holding {self._root}"
        if code in _TRANSIENT_ERRNOS:
            return StoreUnavailable(message, hint)
        return StoreError(message, hint)


def _is_utf8(name: str) -> bool:
    """False for file names that are not valid UTF-8 (decoded with surrogate escapes):
    no key maps to them, so they are foreign files, not objects."""
    with contextlib.suppress(UnicodeEncodeError):
        name.encode("utf-8")
        return True
    return False
