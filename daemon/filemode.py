"""Who may read and write vecwal's local files: ``[storage] file_mode`` and checks of a tree.

Everything vecwal creates on a local disk (a ``file://`` repository, a ``dir:`` export, the
temp files of its atomic writes) is private to the user running it: files 0600, directories
0700, whatever the umask (:mod:`daemon.atomic` sets them). ``[storage] file_mode`` opens them
to one group that must read them (``"0640"``: files 0640, directories 0750; ``"0660"`` lets
the group write too); it never opens them to every local user (:func:`parse_file_mode`).

Two checks of a repository that already exists, both relative to the configured mode (a bit
``file_mode`` grants the group is not "others"):

* :func:`check_repository_root`, when a ``file://`` store is opened: the root and its
  top-level directories must not be writable by other users, or owned by another user than
  vecwal's (or root). Another user who can write there can replace or delete backups, so
  vecwal refuses to start (:class:`~daemon.errors.ConfigError` naming the path, its mode and
  owner, and the ``chmod``). A tree that others can only *read* (one written by a vecwal
  before this check, under the usual umask: 0755 and 0644) opens: refusing it would stop
  backups over a confidentiality problem an operator fixes with one ``chmod``.
* :func:`scan_exposure`, for ``vecwal verify``: every file and directory under the root that
  other users can read or write, a sample of each and their counts, and the command that
  fixes them.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from daemon.atomic import PRIVATE_FILE_MODE, dir_mode
from daemon.errors import ConfigError

__all__ = [
    "DEFAULT_FILE_MODE",
    "EXPOSURE_SAMPLE",
    "Exposed",
    "Exposure",
    "check_repository_root",
    "format_mode",
    "parse_file_mode",
    "scan_exposure",
]

DEFAULT_FILE_MODE = "0600"
"""``[storage] file_mode``'s default: files 0600, directories 0700."""

EXPOSURE_SAMPLE = 20
"""Paths :func:`scan_exposure` names per kind of exposure; the rest are counted."""

_OCTAL = re.compile(r"(?:0o|0)?([0-7]{3})")
_GROUP_HINT = ("to share the files with a group, give it the repository (chgrp -R GROUP PATH; "
               "chmod g+s PATH) and set file_mode = \"0640\"")


def parse_file_mode(text: str, where: str = "[storage] file_mode") -> int:
    """``file_mode`` as a number: an octal string (``"0600"``, ``"640"``, ``"0o640"``) whose
    owner bits are read and write and whose group bits, if any, read or read and write.
    Raises :class:`ConfigError` naming ``where`` for anything else, in particular a mode that
    gives every local user access."""
    match = _OCTAL.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{where} is {text!r}, not an octal file mode",
                          f'use "{DEFAULT_FILE_MODE}" (the default: the owner only) or "0640" '
                          "(a group may read)")
    mode = int(match.group(1), 8)
    if mode & 0o002:
        raise ConfigError(f"{where} {text!r} lets every local user write the backups",
                          f'use "{DEFAULT_FILE_MODE}"; {_GROUP_HINT}')
    if mode & 0o007:
        raise ConfigError(f"{where} {text!r} lets every local user read the backups "
                          "(every tenant's vectors and documents)",
                          f'use "{DEFAULT_FILE_MODE}"; {_GROUP_HINT}')
    if mode & 0o111:
        raise ConfigError(f"{where} {text!r} has execute bits; backups are not programs",
                          "drop them: directories get the execute bits from the read bits "
                          "(0640 gives directories 0750)")
    if mode & 0o600 != 0o600:
        raise ConfigError(f"{where} {text!r} does not let vecwal's own user read and write "
                          "its files", f'use "{DEFAULT_FILE_MODE}" or "0640"')
    if mode & 0o060 == 0o020:
        raise ConfigError(f"{where} {text!r} lets the group write files it cannot read",
                          'use "0640" (the group reads) or "0660" (the group reads and writes)')
    return mode


def format_mode(mode: int) -> str:
    """Permission bits as ``ls -l`` would group them in octal: ``0644``."""
    return f"{stat.S_IMODE(mode):04o}"


@dataclass(frozen=True)
class Exposed:
    """One path other users can reach."""

    path: str
    """Relative to the root (``.`` for the root itself)."""
    mode: str
    owner: str


@dataclass
class Exposure:
    """Who besides vecwal's user (and the group ``file_mode`` names) can read or write a
    local tree: the first :data:`EXPOSURE_SAMPLE` paths of each kind, and how many there are.
    ``writable`` also counts paths owned by another user (not root): their owner can write
    them whatever their mode."""

    root: str
    file_mode: str
    readable: list[Exposed] = field(default_factory=list)
    readable_count: int = 0
    writable: list[Exposed] = field(default_factory=list)
    writable_count: int = 0
    fix_readable: str = ""
    fix_writable: str = ""

    @property
    def ok(self) -> bool:
        return not (self.readable_count or self.writable_count)


def scan_exposure(root: Path, file_mode: int = PRIVATE_FILE_MODE,
                  sample: int = EXPOSURE_SAMPLE) -> Exposure:
    """Walk ``root`` (not following symbolic links) and list what other users can read or
    write; paths that vanish meanwhile are skipped."""
    out = Exposure(str(root), format_mode(file_mode))
    owners: set[str] = set()

    def check(path: str) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            return
        if stat.S_ISLNK(st.st_mode):
            return
        readable, writable, foreign = _exposed(st, file_mode)
        if not (readable or writable or foreign):
            return
        entry = Exposed(os.path.relpath(path, root), format_mode(st.st_mode), _owner(st.st_uid))
        if readable:
            out.readable_count += 1
            if len(out.readable) < sample:
                out.readable.append(entry)
        if writable or foreign:
            out.writable_count += 1
            if len(out.writable) < sample:
                out.writable.append(entry)
            if foreign:
                owners.add(entry.owner)

    check(str(root))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            check(os.path.join(dirpath, name))
    fix = f"chmod -R {_excess_symbolic(file_mode)} {root}"
    if out.readable_count:
        out.fix_readable = fix
    if out.writable_count:
        me = _owner(os.geteuid())
        out.fix_writable = f"chown -R {me} {root}; {fix}" if owners else fix
    return out


def check_repository_root(root: Path, file_mode: int = PRIVATE_FILE_MODE) -> None:
    """Refuse a repository other users can write to: ``root`` or a directory directly in it
    writable by others (beyond the group ``file_mode`` lets write) or owned by another user
    than this process's (or root). Raises :class:`ConfigError` naming the path, its mode and
    owner, and the fix. Readable by others is not refused (see the module docstring)."""
    try:
        with os.scandir(root) as scan:
            top = [Path(e.path) for e in scan if e.is_dir(follow_symlinks=False)]
    except OSError:
        top = []  # unreadable: the store's own operations report it
    for path in [root, *sorted(top)]:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        _readable, writable, foreign = _exposed(st, file_mode)
        if not (writable or foreign):
            continue
        owner = _owner(st.st_uid)
        what = "the repository" if path == root else f"{path.name}/ in the repository"
        why = (f"is owned by {owner}, not by {_owner(os.geteuid())} who runs vecwal" if foreign
               else "is writable by other users")
        wanted = format_mode(dir_mode(file_mode))[1:]
        fix = f"chmod {wanted} {path}" if path == root else f"chmod -R {_excess_symbolic(file_mode)} {root}"
        if foreign:
            fix = f"chown -R {_owner(os.geteuid())} {root}; {fix}"
        raise ConfigError(
            f"local repository {path} ({what}) {why} (mode {format_mode(st.st_mode)}, owner "
            f"{owner}): they could replace or delete its backups; refusing to use it",
            f"{fix} (or point storage.url at a directory only vecwal's user can write)")


def _exposed(st: os.stat_result, file_mode: int) -> tuple[bool, bool, bool]:
    """(readable by others, writable by others, owned by another non-root user) for one path,
    the group bits ``file_mode`` grants (their directory form for a directory) not counted."""
    allowed = dir_mode(file_mode) if stat.S_ISDIR(st.st_mode) else file_mode
    extra = stat.S_IMODE(st.st_mode) & 0o077 & ~allowed
    foreign = st.st_uid not in (0, os.geteuid())
    return bool(extra & 0o044), bool(extra & 0o022), foreign


def _excess_symbolic(file_mode: int) -> str:
    """The ``chmod`` argument that takes away what ``file_mode`` does not grant: ``go-rwx``
    for 0600, ``g-w,o-rwx`` for 0640, ``o-rwx`` for 0660."""
    group = "".join(c for c, bit in (("r", 0o040), ("w", 0o020)) if not file_mode & bit)
    if group == "rw":
        return "go-rwx"
    if group == "w":
        return "g-w,o-rwx"
    return "o-rwx"


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
