"""Atomic, durable writes of small local files: the one place vecwal does them.

Every local file vecwal writes (objects of a ``file://`` repository, checkpoints, state
files) goes through this module, so a crash at any instant leaves either the old file or
the new one on disk, never a torn mix, and a write that returned survives a power cut.

Everything created here is private whatever the process umask: files :data:`PRIVATE_FILE_MODE`
(0600), directories :data:`PRIVATE_DIR_MODE` (0700), or the ``mode`` a caller passes
(``[storage] file_mode``, see :mod:`daemon.filemode`). A file is opened with its mode and then
``fchmod``-ed to it, a directory made and then ``chmod``-ed: the umask can only take bits away,
so there is no instant at which a new file is more open than asked.

The recipe is the classic one: write the bytes to a temporary file in the *same
directory* (a rename is only atomic within one filesystem), ``fsync`` it, rename it over
the target, then ``fsync`` the directory so the rename itself is durable. Temporary
files carry the recognizable prefix :data:`TEMP_PREFIX`; if the process dies between
creating one and renaming it, :func:`clean_stale_temp_files` removes the leftover later.

Errors are the plain :class:`OSError` subclasses the kernel reports (``FileExistsError``
is never raised: :func:`create_exclusive` turns it into ``False``); callers that own a
domain (the object store, the checkpoint) translate them into typed vecwal errors.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from daemon.spans import HeadLast, Piece, Span

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "STALE_TEMP_AGE_SECONDS",
    "TEMP_PREFIX",
    "atomic_write",
    "clean_stale_temp_files",
    "create_exclusive",
    "dir_mode",
    "fsync_directory",
    "is_temp_name",
    "make_dirs",
]

TEMP_PREFIX = ".vecwal-tmp-"
"""Names starting with this are in-flight (or crashed) writes, never real data."""

STALE_TEMP_AGE_SECONDS = 15 * 60.0
"""A temp file untouched for this long belongs to a writer that died: writes take
milliseconds to seconds, so a live writer is never this slow. The age guard lets one
process clean up while another (say the capture daemon) is writing to the same tree."""

# Keep temp names well under NAME_MAX (255 bytes) whatever the target's name is.
_TARGET_NAME_CHARS = 80

PRIVATE_FILE_MODE = 0o600
"""Files vecwal creates: read and write for its own user only."""

PRIVATE_DIR_MODE = 0o700
"""Directories vecwal creates: its own user only."""


def dir_mode(file_mode: int) -> int:
    """The directory mode matching a file mode: each class that may read the files may also
    enter their directories (0600 -> 0700, 0640 -> 0750, 0660 -> 0770)."""
    return file_mode | (file_mode & 0o444) >> 2


def is_temp_name(name: str) -> bool:
    """True when a file name (one path component) is one of our temporary files."""
    return name.startswith(TEMP_PREFIX)


def atomic_write(path: Path,
                 data: bytes | bytearray | memoryview | Iterable[Piece] | HeadLast, *,
                 durable: bool = True, mode: int = PRIVATE_FILE_MODE) -> bool:
    """Replace ``path`` with ``data`` (bytes, or pieces written in order) atomically and
    durably. Pieces that are not a sequence (an iterator of a ranged read's parts) are
    written as they come, so the file need never be in memory whole; a piece may be a
    :class:`~daemon.spans.Span`, copied out as it is written. A
    :class:`~daemon.spans.HeadLast` has its body written first and its head last, into the
    bytes left for it; when its head is None, nothing is written (False is returned).

    Readers see the old content or the new content, never a partial file; once this
    returns, the new content survives a crash. The parent directory must exist (see
    :func:`make_dirs`). Raises ``IsADirectoryError`` when ``path`` is a directory and the
    usual ``OSError`` family otherwise; the temporary file is removed on every failure.

    ``durable=False`` is for a batch of files made durable together afterwards with
    :func:`sync_tree` (a restore's output): the file is written and renamed at once, its
    write-back to disk started but not waited for, so it overlaps the work that follows.
    Until ``sync_tree`` returns, a crash may lose it.

    The new file has permissions ``mode`` exactly, whatever the umask.
    """
    # 1. Write the bytes to a fresh temporary file next to the target and fsync them
    #    (or, not durable, only start their write-back).
    tmp = _write_temp(path, data, durable, mode)
    if tmp is None:
        return False
    try:
        # 2. Rename it over the target: atomic on POSIX, readers never see a torn file.
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    # 3. fsync the directory so the rename (the new directory entry) is itself durable.
    if durable:
        fsync_directory(path.parent)
    return True


def sync_tree(root: Path) -> None:
    """Make every file and directory under ``root`` (and ``root`` in its parent) durable:
    the second half of a batch of ``atomic_write(..., durable=False)``."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(Path(dirpath))
    fsync_directory(root.parent)


def create_exclusive(path: Path, data: bytes | bytearray | memoryview | Sequence[Piece], *,
                     mode: int = PRIVATE_FILE_MODE) -> bool:
    """Create ``path`` holding ``data`` (bytes, or pieces written in order) unless something
    already exists there.

    Returns ``True`` when this call created the file, ``False`` when ``path`` already
    existed (file, directory or anything else) and was left untouched. Atomic against
    concurrent creators, including other processes: exactly one of them gets ``True``.
    Readers never see a partial file, because the file only appears under its name once
    complete. Needs a filesystem with hard links (any local POSIX filesystem; not FAT or
    some network/FUSE mounts, where ``os.link`` raises ``OSError``). The new file has
    permissions ``mode`` exactly, whatever the umask.
    """
    # 1. Write the complete content to a temporary file and fsync it.
    tmp = _write_temp(path, data, True, mode)
    assert tmp is not None  # bytes and pieces always make a file
    try:
        # 2. Hard-link it under the target name: link(2) fails with EEXIST, atomically,
        #    when the name is taken, so no existing file can ever be overwritten.
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        # 3. Drop the temporary name; on success the data lives on under `path`.
        _unlink_quietly(tmp)
    # 4. fsync the directory so the new entry (and the temp name's removal) is durable.
    fsync_directory(path.parent)
    return True


def make_dirs(path: Path, *, mode: int = PRIVATE_DIR_MODE) -> None:
    """Create directory ``path`` and any missing parents, durably.

    Like ``Path.mkdir(parents=True, exist_ok=True)``, but after creating each directory
    the directory holding it is fsynced, so a file later written inside does not vanish
    with its parent on a crash. Each directory created gets permissions ``mode`` exactly,
    whatever the umask (a set-group-ID bit inherited from its parent is kept); existing
    ones are left as they are. Safe against concurrent creators. Raises
    ``FileExistsError`` or ``NotADirectoryError`` when a component is a regular file.
    """
    missing: list[Path] = []
    current = path
    # Walk up to the first ancestor that exists; everything below it must be created.
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            # Someone else created it meanwhile: fine if it is a directory.
            if not directory.is_dir():
                raise
            continue
        # The umask may have taken bits of `mode` away (never added any): put them back.
        _chmod_directory(directory, mode)
        # The new directory's entry lives in its parent: make that durable.
        fsync_directory(directory.parent)


def _chmod_directory(directory: Path, mode: int) -> None:
    """``chmod`` a directory just made to ``mode``, keeping a set-group-ID bit Linux gives
    it from a setgid parent (how a group shares a repository: new entries get its group)."""
    current = os.stat(directory).st_mode
    wanted = mode | (current & stat.S_ISGID)
    if stat.S_IMODE(current) != wanted:
        os.chmod(directory, wanted)


def fsync_directory(directory: Path) -> None:
    """fsync a directory, making renames, links and unlinks inside it durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_stale_temp_files(root: Path, *, min_age_seconds: float = STALE_TEMP_AGE_SECONDS) -> int:
    """Delete temporary files left under ``root`` by writers that crashed.

    Walks the whole tree below ``root`` and removes every regular file whose name starts
    with :data:`TEMP_PREFIX` and that was last modified at least ``min_age_seconds`` ago
    (younger ones may belong to a live writer in another process). Returns how many files
    were removed. A missing ``root`` has nothing to clean (returns 0); files that vanish
    or cannot be removed meanwhile are skipped, so this never fails half way because of
    a concurrent writer.
    """
    cutoff = time.time() - min_age_seconds
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if not is_temp_name(name):
                continue
            candidate = Path(dirpath, name)
            try:
                if candidate.lstat().st_mtime > cutoff:
                    continue
                candidate.unlink()
            except OSError:
                continue
            removed += 1
    return removed


def _write_temp(path: Path,
                data: bytes | bytearray | memoryview | Iterable[Piece] | HeadLast,
                durable: bool, mode: int) -> Path | None:
    """Write ``data`` to a new temp file beside ``path`` with permissions ``mode``, fsync it
    (or, not ``durable``, start its write-back), return its path."""
    tmp = path.with_name(
        f"{TEMP_PREFIX}{path.name[:_TARGET_NAME_CHARS]}.{os.getpid()}.{secrets.token_hex(6)}"
    )
    # O_EXCL: never reuse (or follow a symlink planted at) an existing name. Created with
    # `mode` less the umask's bits, then set to `mode` exactly: never more open than asked.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, mode)
    try:
        os.fchmod(fd, mode)
        if isinstance(data, HeadLast):
            if not _write_head_last(fd, data):
                os.close(fd)
                _unlink_quietly(tmp)
                return None
        else:
            _write_body(fd, [data] if isinstance(data, (bytes, bytearray, memoryview)) else data)
        # The data must be on disk before the name points at it, or a crash could leave
        # the new name holding an empty or partial file.
        if durable:
            os.fsync(fd)
        elif hasattr(os, "posix_fadvise"):
            # On Linux this starts write-back of the dirty pages without waiting for it.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


_IOV_MAX = 1024


_SCRATCH = 1 << 20
"""Bytes of spans copied out before they are written: small enough to stay in the CPU's
cache between being produced (decrypted) and written (``daemon.spans``)."""


def _write_all(fd: int, data: Sequence[Piece]) -> None:
    """Every piece, in order: many pieces to one ``writev`` call, partial writes resumed.
    Spans are copied out into a scratch buffer, which is written whenever it fills."""
    views: list[memoryview] = []
    scratch: memoryview | None = None
    used = 0
    for piece in data:
        if not isinstance(piece, Span):
            if len(piece):
                views.append(memoryview(piece).cast("B"))
                if len(views) >= _IOV_MAX:
                    _writev_all(fd, views)
                    views, used = [], 0
            continue
        start = 0
        while start < piece.length:
            if scratch is None:
                scratch = memoryview(bytearray(_SCRATCH))
            if used == _SCRATCH:
                _writev_all(fd, views)
                views, used = [], 0
            n = min(piece.length - start, _SCRATCH - used)
            part = scratch[used:used + n]
            piece.copy_into(start, part)
            views.append(part)
            used += n
            start += n
    _writev_all(fd, views)


def _write_body(fd: int, pieces: Iterable[Piece]) -> None:
    if isinstance(pieces, Sequence):
        _write_all(fd, pieces)
    else:  # an iterator: each piece written before the next is taken
        for piece in pieces:
            _write_all(fd, [piece])


def _write_head_last(fd: int, data: HeadLast) -> bool:
    """The body after ``head_size`` bytes left empty, then the head into them; False when
    there is no head (no file after all)."""
    os.lseek(fd, data.head_size, os.SEEK_SET)
    _write_body(fd, data.body)
    head = data.head()
    if head is None:
        return False
    if len(head) != data.head_size:
        raise ValueError(f"a head of {len(head)} bytes for a gap of {data.head_size}")
    view, at = memoryview(head), 0
    while at < len(view):
        at += os.pwrite(fd, view[at:], at)
    return True


def _writev_all(fd: int, views: list[memoryview]) -> None:
    i = 0
    while i < len(views):
        written = os.writev(fd, views[i:i + _IOV_MAX])
        while written:
            if written >= len(views[i]):
                written -= len(views[i])
                i += 1
            else:
                views[i] = views[i][written:]
                written = 0


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
