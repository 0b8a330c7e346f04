"""S3 Object Lock for :class:`~daemon.objectstore.s3.S3Store`: what is locked, checking the
bucket, deleting every version, reading and extending retention, purging old versions.

With ``storage.object_lock`` set the repository's bucket must have Object Lock (and so
versioning) enabled, which :meth:`ObjectLockMixin.check_object_lock` verifies. Then:

* every create-only put of an immutable key (a segment, sidecar, manifest, data file...)
  carries ``ObjectLockMode`` and ``ObjectLockRetainUntilDate`` = now + ``lock_s``, with a
  ``Content-MD5`` (S3 refuses a lock put without an integrity header). Keys under
  :data:`MUTABLE_PREFIXES` (leases, watermarks, pins) and overwriting puts carry no lock:
  they are rewritten every few seconds;
* ``delete`` and ``delete_many`` remove every *version* of a key (a plain delete on a
  versioned bucket only adds a delete marker and frees nothing). The server refuses the
  versions still under retention or a legal hold; those keys come back as
  :class:`~daemon.errors.ObjectLocked` with the retain-until date read from HeadObject;
* overwritten mutable objects leave noncurrent versions behind: :meth:`purge_noncurrent`
  removes the old ones.

The server enforces the lock, not this code: a GOVERNANCE lock yields only to a caller
with ``s3:BypassGovernanceRetention`` sending the bypass header (vecwal never does); a
COMPLIANCE lock yields to nobody until it expires.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from daemon.errors import ConfigError, ObjectLocked, ObjectNotFound, StoreError
from daemon.objectstore import check_prefix
from daemon.objectstore.permissions import denied_hint

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import ObjectLockRetentionModeType
    from mypy_boto3_s3.type_defs import (
        ListObjectVersionsRequestTypeDef,
        ObjectIdentifierTypeDef,
        PutObjectRequestTypeDef,
    )

__all__ = ["LOCK_MODES", "MUTABLE_PREFIXES", "ObjectLockMixin", "lock_mode"]

MUTABLE_PREFIXES = ("locks/", "state/", "pins/", "keys/")
"""Keys rewritten in place (compaction leases, watermarks, pins, the keyring: a rotation
re-wraps it and `vecwal forget` destroys tenant keys): never locked."""

LOCK_MODES: dict[str, ObjectLockRetentionModeType] = {
    "governance": "GOVERNANCE",
    "compliance": "COMPLIANCE",
}
DELETE_BATCH = 1000  # S3's own maximum for DeleteObjects
_NO_LOCK_CONFIGURATION = frozenset(
    {"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound", "NotImplemented"}
)


def lock_mode(object_lock: str | None, lock_s: float) -> ObjectLockRetentionModeType | None:
    """The S3 retention mode for ``storage.object_lock`` (None: off); ConfigError if invalid."""
    if not object_lock:
        return None
    mode = LOCK_MODES.get(object_lock.lower())
    if mode is None:
        raise ConfigError(f"storage.object_lock is {object_lock!r}",
                          'use "governance", "compliance" or "" (off)')
    if not lock_s > 0:
        raise ConfigError(f"object lock needs a positive lock period, got {lock_s} s",
                          "set storage.lock_days, or a retention window")
    return mode


def is_mutable(key: str) -> bool:
    """True for keys rewritten in place, which are never locked."""
    return key.startswith(MUTABLE_PREFIXES)


@dataclass(frozen=True, slots=True)
class _Version:
    key: str  # object key (with the repository prefix)
    version_id: str
    is_latest: bool
    modified_ms: int
    size: int
    marker: bool  # a delete marker


def _ms(when: datetime | None) -> int:
    return int(when.timestamp() * 1000) if when is not None else 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectLockMixin:
    """The Object Lock half of S3Store (it provides the attributes declared here)."""

    _client: S3Client
    _bucket: str
    _root: str
    _lock_mode: ObjectLockRetentionModeType | None
    _lock_s: float

    if TYPE_CHECKING:
        @property
        def url(self) -> str: ...
        def _object_key(self, key: str) -> str: ...
        def _where(self, key: str) -> str: ...
        def _translated(self, action: str, key: str, *, missing_is_not_found: bool = False
                        ) -> contextlib.AbstractContextManager[None]: ...

    @property
    def object_lock(self) -> str | None:
        """"GOVERNANCE", "COMPLIANCE", or None when this store locks nothing."""
        return self._lock_mode

    def _add_lock(self, key: str, data: bytes | bytearray | memoryview,
                  request: PutObjectRequestTypeDef) -> None:
        """Lock a create-only put of an immutable key (the caller checked create_only)."""
        if self._lock_mode is None or is_mutable(key):
            return
        until = datetime.fromtimestamp(time.time() + self._lock_s, UTC)
        request["ObjectLockMode"] = self._lock_mode
        request["ObjectLockRetainUntilDate"] = until
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        request["ContentMD5"] = base64.b64encode(digest).decode("ascii")

    def check_object_lock(self) -> None:
        """With object_lock configured, raise ConfigError unless the bucket has Object Lock
        and versioning enabled (else nothing would be locked, and deletes would only hide
        objects behind delete markers). Without object_lock, does nothing."""
        if self._lock_mode is None:
            return
        with self._translated("checking the Object Lock configuration of", "/"):
            try:
                config = self._client.get_object_lock_configuration(Bucket=self._bucket)
                enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in _NO_LOCK_CONFIGURATION:
                    raise
                enabled = None
            versioning = self._client.get_bucket_versioning(Bucket=self._bucket).get("Status")
        if enabled == "Enabled" and versioning == "Enabled":
            return
        what = "Object Lock" if enabled != "Enabled" else "versioning"
        raise ConfigError(
            f"storage.object_lock is {self._lock_mode.lower()} but bucket {self._bucket!r} has "
            f"no {what} enabled: nothing vecwal writes could be locked",
            f"create the bucket with Object Lock enabled (`aws s3api create-bucket --bucket "
            f"{self._bucket} --object-lock-enabled-for-bucket`; on most servers it cannot be "
            "turned on later) and point storage.url at it, or remove storage.object_lock")

    def retain_until(self, key: str) -> int | None:
        """The current version's retain-until time (ms since the epoch), None without one.
        Raises ObjectNotFound when there is no such object."""
        object_key = self._object_key(key)
        with self._translated("inspecting", key, missing_is_not_found=True):
            head = self._client.head_object(Bucket=self._bucket, Key=object_key)
        until = head.get("ObjectLockRetainUntilDate")
        return _ms(until) if until is not None else None

    def extend_retention(self, key: str, until_ms: int) -> None:
        """Make every version of ``key`` retained until at least ``until_ms``; a version
        already retained longer is left alone (retention is never shortened). Keeps each
        version's mode (the store's mode for a version without one). Raises ObjectNotFound
        when the key has no version."""
        object_key = self._object_key(key)
        versions = [v for v in self._versions(object_key, None) if v.key == object_key
                    and not v.marker]
        if not versions:
            raise ObjectNotFound(f"object {key!r} not found in {self.url}",
                                 "check the key, and that storage.url points at the right repository")
        until = datetime.fromtimestamp(until_ms / 1000, UTC)
        for v in versions:
            with self._translated("extending the retention of", key, missing_is_not_found=True):
                head = self._client.head_object(Bucket=self._bucket, Key=object_key,
                                                VersionId=v.version_id)
                current = head.get("ObjectLockRetainUntilDate")
                if current is not None and _ms(current) >= until_ms:
                    continue
                mode = head.get("ObjectLockMode") or self._lock_mode
                if mode is None:
                    raise ConfigError(f"extending the retention of {self._where(key)}: it has no "
                                      "lock mode and storage.object_lock is not set",
                                      "set storage.object_lock")
                self._client.put_object_retention(
                    Bucket=self._bucket, Key=object_key, VersionId=v.version_id,
                    Retention={"Mode": mode, "RetainUntilDate": until})

    def purge_noncurrent(self, prefixes: Sequence[str], older_than_ms: int) -> tuple[int, int]:
        """Delete noncurrent versions and delete markers last modified before
        ``older_than_ms`` under ``prefixes`` (each under a mutable prefix: ``state/``...).
        A delete marker that is a key's latest version goes only with all the key's
        versions, so nothing deleted comes back. Returns (objects, bytes) removed; versions
        the server refuses (a bucket default retention) stay for a later purge."""
        removed = freed = 0
        for prefix in prefixes:
            check_prefix(prefix)
            if not is_mutable(prefix):
                raise ValueError(f"purge_noncurrent is for the mutable prefixes "
                                 f"{MUTABLE_PREFIXES}, not {prefix!r}")
            doomed: list[_Version] = []
            for entries in self._versions_by_key(self._root + prefix):
                doomed.extend(_purgeable(entries, older_than_ms))
                if len(doomed) >= DELETE_BATCH:
                    n, b = self._purge(doomed[:DELETE_BATCH])
                    removed, freed, doomed = removed + n, freed + b, doomed[DELETE_BATCH:]
            n, b = self._purge(doomed)
            removed, freed = removed + n, freed + b
        return removed, freed

    # -- internals -------------------------------------------------------------------------

    def _purge(self, versions: list[_Version]) -> tuple[int, int]:
        if not versions:
            return 0, 0
        errors = self._delete_versions_raw(versions)
        kept = {(e.get("Key"), e.get("VersionId")) for e in errors}
        gone = [v for v in versions if (v.key, v.version_id) not in kept]
        return len(gone), sum(v.size for v in gone)

    def _delete_all_versions(self, keys: Sequence[str]) -> dict[str, StoreError]:
        """delete_many on a lock-configured store: every version of every key."""
        failed: dict[str, StoreError] = {}
        for i in range(0, len(keys), DELETE_BATCH):
            wanted = {self._object_key(k): k for k in keys[i:i + DELETE_BATCH]}
            versions: list[_Version] = []
            for group in _by_directory(sorted(wanted)):
                versions.extend(v for v in self._versions_between(group) if v.key in wanted)
            for j in range(0, len(versions), DELETE_BATCH):
                batch = versions[j:j + DELETE_BATCH]
                for err in self._delete_versions_raw(batch):
                    key = wanted.get(err.get("Key", ""))
                    if key is None or key in failed:
                        continue
                    version = err.get("VersionId") or next(  # not every server says which
                        v.version_id for v in batch if v.key == err.get("Key"))
                    failed[key] = self._why_not_deleted(key, version, err)
        return failed

    def _delete_versions_raw(self, versions: list[_Version]) -> list[dict[str, str]]:
        objects: list[ObjectIdentifierTypeDef] = [
            {"Key": v.key, "VersionId": v.version_id} for v in versions]
        with self._translated("deleting", versions[0].key[len(self._root):]):
            response = self._client.delete_objects(
                Bucket=self._bucket, Delete={"Objects": objects, "Quiet": True})
        return [dict(e) for e in response.get("Errors", [])]  # type: ignore[arg-type]

    def _why_not_deleted(self, key: str, version: str, err: dict[str, str]) -> StoreError:
        """ObjectLocked (with the retain-until date from HeadObject) or another StoreError."""
        detail = f"{err.get('Code')}: {err.get('Message')}"
        head: dict[str, object] = {}
        with contextlib.suppress(StoreError), self._translated("inspecting", key):
            head = dict(self._client.head_object(
                Bucket=self._bucket, Key=self._root + key, VersionId=version))
        until = head.get("ObjectLockRetainUntilDate")
        until_ms = _ms(until) if isinstance(until, datetime) else None
        held = head.get("ObjectLockLegalHoldStatus") == "ON"
        if held or (until_ms is not None and until_ms > time.time() * 1000):
            why = "a legal hold" if held else \
                f"{head.get('ObjectLockMode', 'Object Lock')} retention until {_iso(until_ms or 0)}"
            return ObjectLocked(
                f"deleting {self._where(key)} refused: it is under {why} ({detail})",
                "the server keeps it until the lock ends; prune deletes it on a later run"
                if not held else "remove the legal hold (s3api put-object-legal-hold) first",
                None if held else until_ms)
        return StoreError(f"deleting {self._where(key)} failed: {detail}",
                          denied_hint("deleting", locked=True) if err.get("Code") == "AccessDenied"
                          else "check the S3 server's logs; prune retries it next run")

    def _versions(self, prefix: str, delimiter: str | None) -> Iterator[_Version]:
        """Every version and delete marker under ``prefix``, page by page, in key order."""
        request: ListObjectVersionsRequestTypeDef = {"Bucket": self._bucket, "Prefix": prefix}
        if delimiter:
            request["Delimiter"] = delimiter
        while True:
            with self._translated("listing versions of", prefix[len(self._root):] or "/"):
                page = self._client.list_object_versions(**request)
            entries = [_Version(v.get("Key", ""), v.get("VersionId", "null"),
                                bool(v.get("IsLatest")), _ms(v.get("LastModified")),
                                int(v.get("Size", 0)), False) for v in page.get("Versions", [])]
            entries += [_Version(m.get("Key", ""), m.get("VersionId", "null"),
                                 bool(m.get("IsLatest")), _ms(m.get("LastModified")), 0, True)
                        for m in page.get("DeleteMarkers", [])]
            entries.sort(key=lambda v: v.key)
            yield from entries
            if not page.get("IsTruncated"):
                return
            marker = (page.get("NextKeyMarker", ""), page.get("NextVersionIdMarker", ""))
            if not marker[0] or marker == (request.get("KeyMarker"), request.get("VersionIdMarker")):
                raise StoreError(f"listing versions of {self.url}: a truncated page without a "
                                 "usable next marker",
                                 "the S3 server violates ListObjectVersions pagination")
            request["KeyMarker"], request["VersionIdMarker"] = marker

    def _versions_between(self, group: list[str]) -> Iterator[_Version]:
        """Versions of the keys from group[0] to group[-1] (sorted, one directory): one
        listing from their common prefix, not descending into subdirectories, stopping
        past the last key."""
        prefix = _common_prefix(group)
        for v in self._versions(prefix, "/"):
            if v.key > group[-1]:
                return
            yield v

    def _versions_by_key(self, prefix: str) -> Iterator[list[_Version]]:
        """All versions under ``prefix``, one list per key."""
        current: list[_Version] = []
        for v in self._versions(prefix, None):
            if current and v.key != current[0].key:
                yield current
                current = []
            current.append(v)
        if current:
            yield current


def _purgeable(entries: list[_Version], older_than_ms: int) -> list[_Version]:
    """The versions of one key that purge_noncurrent removes."""
    old = [v for v in entries if not v.is_latest and v.modified_ms < older_than_ms]
    latest = [v for v in entries if v.is_latest]
    if (latest and latest[0].marker and latest[0].modified_ms < older_than_ms
            and len(old) == len(entries) - 1):
        old.append(latest[0])  # the key is deleted and nothing of it stays: the marker too
    return old


def _by_directory(object_keys: list[str]) -> Iterator[list[str]]:
    """Sorted keys grouped by their directory (everything up to the last '/')."""
    group: list[str] = []
    for key in object_keys:
        if group and key.rpartition("/")[0] != group[0].rpartition("/")[0]:
            yield group
            group = []
        group.append(key)
    if group:
        yield group


def _common_prefix(keys: list[str]) -> str:
    first, last = keys[0], keys[-1]  # sorted: their common prefix is everyone's
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]
