"""Object storage for the change log: one narrow interface, two backends.

Everything vecwal keeps (segments, manifests, checkpoints) lives in a *repository*: a
flat namespace of immutable-by-convention objects addressed by keys. Two backends
implement :class:`ObjectStore`:

* ``file:///abs/path`` -- :class:`~daemon.objectstore.local.LocalStore`, objects are files
  under a local directory (the embedded default for one machine, or an NFS mount);
* ``s3://bucket[/prefix]`` -- :class:`~daemon.objectstore.s3.S3Store`, any S3-compatible
  service (AWS, MinIO, Ceph, s3proxy...).

:func:`open_store` picks one from a repository URL. The interface is kept deliberately
small (put, get, ranged get, head, list, delete) in the spirit of Litestream's
``ReplicaClient`` and WAL-G's ``storage.Folder``: anything cleverer is built on top, in
backend-independent code, and the contract suite in ``tests/objectstore`` holds every
backend to the same behaviour.

Keys
----
A key is a '/'-separated path relative to the repository root, e.g.
``segments/p=00003/00000000000000001000.avro``. It is validated identically by every
backend (:func:`check_key`); an invalid key raises :class:`StoreError` with a hint.
A valid key is non-empty, at most 1024 bytes of UTF-8, has no leading or trailing '/',
no empty, ``.`` or ``..`` segment, no NUL character, and no segment starting with
``.vecwal-tmp-`` (reserved for in-flight local writes).

Portability rule: a key must never also be a "directory" of another key -- ``a/b`` and
``a/b/c`` cannot both exist. AWS S3 would allow it, but a filesystem cannot represent
it (neither ``file://`` nor filesystem-backed S3 servers such as s3proxy's); ``file://``
rejects the second put with a :class:`StoreError`. vecwal's layout never needs it.

Errors
------
Methods raise only :mod:`daemon.errors` types (never a raw ``OSError`` or botocore
exception): :class:`ObjectNotFound`, :class:`ObjectExists`, :class:`StoreUnavailable`
(transient -- connection refused or reset, timeouts, HTTP 5xx, throttling, a full disk --
retry with backoff, nothing is lost) and :class:`StoreError` for the rest (access
denied, missing bucket, invalid key...: retrying will not help, an operator must act).
The only exception is ``ValueError`` for arguments that are a caller bug (negative
ranges). Messages and hints never contain credentials.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from daemon.atomic import TEMP_PREFIX
from daemon.errors import ConfigError, StoreError
from daemon.spans import Gathered, Payload, RangeSource

__all__ = [
    "MAX_KEY_BYTES",
    "Gathered",
    "ObjectInfo",
    "ObjectStore",
    "Payload",
    "check_key",
    "check_prefix",
    "open_store",
]

MAX_KEY_BYTES = 1024
"""S3's key length limit; enforced everywhere so a file:// repository can move to S3."""

ACCEPTED_URLS = "file:///absolute/path or s3://bucket[/prefix]"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What listing or ``head`` knows about one stored object."""

    key: str
    """The key relative to the repository root (no bucket, no repository prefix)."""

    size: int
    """The object's length in bytes."""


@runtime_checkable
class ObjectStore(Protocol):
    """A repository of objects addressed by '/'-separated keys.

    Implementations are safe to share between threads. Every method may raise
    :class:`StoreUnavailable` (transient, retry with backoff) or :class:`StoreError`
    (permanent, including an invalid key) in addition to what its own contract lists.
    A single operation is atomic; there are no multi-object transactions.
    """

    @property
    def url(self) -> str:
        """The repository URL (``file:///...`` or ``s3://bucket/prefix``).

        Safe to log: it never contains credentials or an endpoint secret.
        """
        ...

    def put(self, key: str, data: Payload, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        """Store ``data`` under ``key``: bytes, or a :class:`~daemon.spans.Gathered` of pieces
        stored as their concatenation (a file backend writes them as they are, with no join).

        Without ``create_only`` an existing object is replaced atomically: concurrent
        readers see the old bytes or the new bytes, never a mix or a partial object.

        With ``create_only=True`` the put succeeds only if no object exists under
        ``key``; otherwise it raises :class:`ObjectExists` and the stored bytes are left
        untouched. The check and the write are one atomic step (``If-None-Match: *`` on
        S3, an exclusive hard link on files): of many concurrent create-only puts of one
        key, exactly one succeeds. Caveat: if a create-only put is *retried* after an
        attempt whose response was lost (a timeout after the server stored the object),
        the retry raises :class:`ObjectExists` for the caller's own object; callers that
        retry must treat ObjectExists as "maybe mine" and compare contents.

        Once ``put`` returns, the object is durable and visible to ``get``, ``head`` and
        ``list`` from any client (read-after-write consistency).

        ``sha256``, when the caller has it already, is the SHA-256 digest of ``data``. A
        backend may have the server check the body against it (S3: ``x-amz-checksum-sha256``
        on a single PUT, in place of the CRC32 botocore would compute); a body that does not
        match is refused (StoreError) and nothing is stored. A backend that stores other
        bytes than ``data`` (encryption) or checks nothing in transit ignores it.
        """
        ...

    def get(self, key: str) -> bytes:
        """Return the whole object stored under ``key``.

        Raises :class:`ObjectNotFound` when there is no such object (including when
        ``key`` only names a "directory" of other keys).
        """
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Return up to ``length`` bytes of the object under ``key`` from offset ``start``.

        Returns fewer than ``length`` bytes when the object ends first, and ``b""`` when
        ``start`` is at or past its end or ``length`` is 0 (the object must still exist).
        Raises :class:`ObjectNotFound` when there is no such object and ``ValueError``
        when ``start`` or ``length`` is negative.
        """
        ...

    def head(self, key: str) -> ObjectInfo:
        """Return the object's key and size without reading it.

        Raises :class:`ObjectNotFound` when there is no such object. On S3 a missing
        *bucket* also reports ObjectNotFound here (a HEAD response has no error body to
        tell them apart); every other method reports it as :class:`StoreError`.
        """
        ...

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix`` and is strictly greater
        than ``start_after``, in ascending byte-wise (UTF-8) lexicographic order of key.

        ``prefix`` is a plain string prefix, not a directory: ``"seg"`` matches
        ``"segments/x"`` and ``"seg.json"``; ``""`` lists the whole repository. Pages are
        fetched lazily and transparently, so iterating may raise the store's errors
        part way. A prefix nothing matches (a missing "directory") yields nothing, never
        an error. Objects put or deleted while the iteration runs may or may not appear.
        Local temporary files of in-flight writes are never listed. ``start_after``
        need not be an existing key; ``list(p, start_after=k)`` resumes a listing after
        key ``k``.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove the object under ``key``. Deleting a missing key is not an error."""
        ...

    def delete_many(self, keys: Sequence[str]) -> dict[str, StoreError]:
        """Remove every object under ``keys`` (a missing key is not an error), in batches
        (S3: DeleteObjects, up to 1,000 keys a call; files: one directory sync per
        directory). Returns the keys that could not be removed, each with why: an
        :class:`~daemon.errors.ObjectLocked` for one under Object Lock retention, another
        StoreError otherwise. A failure of a whole call raises as ``delete`` would; the
        keys of earlier batches are then already gone, so callers simply retry."""
        ...

    def close(self) -> None:
        """Release connections and other resources. Idempotent; the store must not be
        used afterwards (operations then raise :class:`StoreError`)."""
        ...


_SEGMENT_HINT = (
    "keys are '/'-separated relative paths without empty, '.' or '..' segments, "
    "leading or trailing '/', NUL characters or the reserved '.vecwal-tmp-' prefix; "
    "this is a bug in the caller, please report it"
)


def get_view(store: ObjectStore, key: str) -> bytes | memoryview:
    """An object's bytes for a reader that only slices them: mapped from the file when the
    store can (``file://``: ``LocalStore.get_view``, no copy), else ``get``."""
    view = getattr(store, "get_view", None)
    return view(key) if view is not None else store.get(key)


def get_opened(store: ObjectStore, key: str) -> bytes | memoryview | RangeSource:
    """``get_view``, or for an encrypted store over mapped files the object opened chunk by
    chunk as its bytes are copied out (``EncryptedStore.get_opened``: a
    :class:`~daemon.spans.RangeSource`), for a writer that copies long ranges of it."""
    opened = getattr(store, "get_opened", None)
    return opened(key) if opened is not None else get_view(store, key)


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid key, else raise :class:`StoreError`.

    See the module documentation for the rules. Every backend calls this first, so an
    invalid key fails the same way everywhere, before any I/O.
    """
    if not isinstance(key, str) or not key:
        raise StoreError(f"invalid object key {key!r}: empty", _SEGMENT_HINT)
    _check_bytes(key)
    _check_segments(key, key.split("/"))
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it is a valid listing prefix, else raise
    :class:`StoreError`.

    A prefix is any beginning of a valid key: ``""``, ``"segments/"``, ``"seg"``,
    ``"segments/p=0"``. Everything up to its last '/' must be valid key segments; the
    part after it is free text (it is only compared, never turned into a path).
    """
    if not isinstance(prefix, str):
        raise StoreError(f"invalid listing prefix {prefix!r}", _SEGMENT_HINT)
    if not prefix:
        return prefix
    _check_bytes(prefix)
    directories, _, _tail = prefix.rpartition("/")
    if prefix.startswith("/"):
        raise StoreError(f"invalid listing prefix {prefix!r}: absolute", _SEGMENT_HINT)
    if directories:
        _check_segments(prefix, directories.split("/"))
    return prefix


def _check_bytes(text: str) -> None:
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise StoreError(f"invalid object key {text!r}: not valid UTF-8", _SEGMENT_HINT) from None
    if len(encoded) > MAX_KEY_BYTES:
        raise StoreError(
            f"invalid object key {text[:60]!r}...: longer than {MAX_KEY_BYTES} bytes",
            _SEGMENT_HINT,
        )
    if "\x00" in text:
        raise StoreError(f"invalid object key {text!r}: contains NUL", _SEGMENT_HINT)


def _check_segments(key: str, segments: list[str]) -> None:
    for segment in segments:
        if segment in ("", ".", ".."):
            what = "empty segment or absolute" if not segment else f"{segment!r} segment"
            raise StoreError(f"invalid object key {key!r}: {what}", _SEGMENT_HINT)
        if segment.startswith(TEMP_PREFIX):
            raise StoreError(
                f"invalid object key {key!r}: segment uses the reserved {TEMP_PREFIX!r} prefix",
                _SEGMENT_HINT,
            )


_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")


def open_store(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    sse: str | None = None,
    sse_kms_key_id: str | None = None,
    object_lock: str | None = None,
    lock_s: float = 0.0,
    file_mode: int | None = None,
    ca_bundle: str | None = None,
) -> ObjectStore:
    """Open the repository at ``url``.

    * ``file:///absolute/path`` opens a :class:`~daemon.objectstore.local.LocalStore`
      (the directory is created if missing; stale temp files of crashed writers are
      removed). Percent-escapes in the path are decoded (``file:///srv/my%20repo``).
      Its files are created with permissions ``file_mode`` (default 0600; directories
      0700), and a repository other users can write to is refused with a
      :class:`ConfigError` (:mod:`daemon.filemode`). S3 ignores ``file_mode``.
    * ``s3://bucket`` or ``s3://bucket/prefix`` opens an
      :class:`~daemon.objectstore.s3.S3Store`; keys are stored under ``prefix/``. The
      prefix is taken literally (no percent-decoding, like the AWS CLI). Credentials come
      from the standard AWS chain (environment, profiles, instance roles) -- never from
      the URL. ``endpoint_url`` selects an S3-compatible service (path-style
      addressing), ``region`` defaults to ``AWS_REGION``/``AWS_DEFAULT_REGION`` then
      ``us-east-1``, ``profile`` names an AWS profile, ``sse`` (``"AES256"`` or
      ``"aws:kms"``) and ``sse_kms_key_id`` request server-side encryption on every put.
      ``object_lock`` (``"governance"`` or ``"compliance"``) puts an S3 Object Lock of
      ``lock_s`` seconds on every create-only put of an immutable key, and makes deletes
      remove every version (:mod:`daemon.objectstore.s3lock`); call the store's
      ``check_object_lock()`` once to verify the bucket. ``ca_bundle`` (a PEM file) is the
      CA an https ``endpoint_url`` is verified against.

    Opening does not contact S3; the first operation does. Raises :class:`ConfigError`
    (with a hint showing the accepted forms) for a malformed URL, credentials in a URL,
    or options that do not apply to the scheme, and :class:`StoreError` when a local
    repository directory cannot be created.
    """
    scheme, sep, _rest = url.partition("://")
    if not sep:
        raise ConfigError(f"storage.url {_shown(url)!r} is not a repository URL", f"use {ACCEPTED_URLS}")
    scheme = scheme.lower()
    if scheme == "file":
        s3_only = {
            "endpoint_url": endpoint_url,
            "sse": sse,
            "sse_kms_key_id": sse_kms_key_id,
            "object_lock": object_lock,
            "ca_bundle": ca_bundle,
        }
        given = sorted(name for name, value in s3_only.items() if value is not None)
        if given:
            raise ConfigError(
                f"{', '.join(given)} only apply to s3:// repositories, not {_shown(url)!r}",
                "remove them from the storage section, or point storage.url at s3://",
            )
        from daemon.objectstore.local import LocalStore

        if file_mode is None:
            return LocalStore(_parse_file_url(url))
        return LocalStore(_parse_file_url(url), file_mode=file_mode)
    if scheme == "s3":
        bucket, prefix = _parse_s3_url(url)
        from daemon.objectstore.s3 import S3Store

        return S3Store(
            bucket,
            prefix,
            endpoint_url=endpoint_url,
            region=region,
            profile=profile,
            sse=sse,
            sse_kms_key_id=sse_kms_key_id,
            object_lock=object_lock,
            lock_s=lock_s,
            ca_bundle=ca_bundle,
        )
    raise ConfigError(
        f"storage.url {_shown(url)!r} has unsupported scheme {scheme!r}", f"use {ACCEPTED_URLS}"
    )


def _parse_file_url(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(f"storage.url {_shown(url)!r} has a query or fragment", f"use {ACCEPTED_URLS}")
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"storage.url {_shown(url)!r} is not an absolute file URL (it names a host)",
            "file URLs take three slashes and an absolute path: file:///var/lib/vecwal/repo",
        )
    path = urllib.parse.unquote(parts.path)
    if not path.startswith("/"):
        raise ConfigError(
            f"storage.url {_shown(url)!r} has a relative path",
            "file URLs take three slashes and an absolute path: file:///var/lib/vecwal/repo",
        )
    resolved = Path(path)
    if resolved == Path("/") or "\x00" in path:
        raise ConfigError(
            f"storage.url {_shown(url)!r} does not name a usable repository directory",
            "point it at a dedicated directory, e.g. file:///var/lib/vecwal/repo",
        )
    return resolved


def _parse_s3_url(url: str) -> tuple[str, str]:
    rest = url.partition("://")[2]
    if "?" in rest or "#" in rest:
        raise ConfigError(f"storage.url {_shown(url)!r} has a query or fragment", f"use {ACCEPTED_URLS}")
    netloc, _, prefix = rest.partition("/")
    if "@" in netloc:
        # Do not echo the URL: it contains credentials.
        raise ConfigError(
            "storage.url contains credentials (user:password@); refusing to use it",
            "remove them from the URL and provide credentials the standard AWS way: "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an instance role",
        )
    if not netloc:
        raise ConfigError(f"storage.url {_shown(url)!r} names no bucket", f"use {ACCEPTED_URLS}")
    if ":" in netloc:
        raise ConfigError(
            f"storage.url {_shown(url)!r} has a host:port instead of a bucket name",
            "s3://BUCKET[/prefix]; put the server address in storage.endpoint_url",
        )
    if not _BUCKET_RE.fullmatch(netloc):
        raise ConfigError(
            f"storage.url {_shown(url)!r}: {netloc!r} is not a valid bucket name",
            "bucket names are 3-255 letters, digits, '.', '-' or '_' (3-63 lowercase on AWS)",
        )
    prefix = prefix.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except StoreError as exc:
            raise ConfigError(
                f"storage.url {_shown(url)!r} has an invalid prefix: {exc.message}",
                "the prefix is a '/'-separated path without empty, '.' or '..' segments",
            ) from None
    return netloc, prefix


def _shown(url: str) -> str:
    """``url`` fit for an error message: any ``user:password@`` part is masked."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"
