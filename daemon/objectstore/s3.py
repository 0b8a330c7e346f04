"""``s3://`` repositories on AWS S3 or any S3-compatible service, via boto3.

Keys live under an optional prefix: repository ``s3://bucket/backups/prod`` stores key
``segments/x`` as object ``backups/prod/segments/x``. Create-only puts use a
conditional ``PutObject`` with ``If-None-Match: *`` (AWS since 2024, MinIO, s3proxy...):
the server answers 412 PreconditionFailed when the key exists. A server that ignores
the header would silently break create-only semantics; the contract suite in
``tests/objectstore`` checks a server before vecwal is pointed at it.

Connections fail fast (3 s connect timeout, 30 s read timeout, at most 3 attempts
inside botocore): the caller owns the real retry policy and backs off on
:class:`StoreUnavailable`. Credentials come only from the standard AWS chain
(environment, shared config and credentials files, SSO, container and instance roles);
they are never accepted in a URL and never appear in an error message.

Observed server differences, handled here so callers see one behaviour:

* a ranged GET starting at or past the end of an object (or on an empty object) is a
  416 InvalidRange on AWS, MinIO, s3proxy and moto; it becomes ``b""``;
* HEAD on a missing bucket is a bare 404 like a missing key (no body), so ``head``
  reports ObjectNotFound; on AWS a missing key can also be a 403 when the credentials
  lack ``s3:ListBucket``, which the access-denied hint mentions;
* servers that do not implement server-side encryption (s3proxy) answer 501
  NotImplemented; that is a configuration problem (StoreError), not an outage;
* AWS answers 409 ConditionalRequestConflict when concurrent conditional writes race;
  AWS documents it as "retry", so it maps to StoreUnavailable: the retry then either
  succeeds or gets the definitive 412 (ObjectExists).

Object Lock (``object_lock``: what is locked, deleting every version, retention) is in
:mod:`daemon.objectstore.s3lock`; what each S3 failure means (StoreError, StoreUnavailable
or ObjectNotFound, and the hint) in :mod:`daemon.objectstore.s3errors`; uploads in parts in
:mod:`daemon.objectstore.s3multipart`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError, ProfileNotFound

from daemon.errors import ConfigError, ObjectExists, StoreError
from daemon.objectstore import ObjectInfo, check_key, check_prefix
from daemon.objectstore.permissions import denied_hint
from daemon.objectstore.s3errors import StoreFacts, client_error, error_code, http_status, transport_error
from daemon.objectstore.s3lock import ObjectLockMixin, lock_mode
from daemon.objectstore.s3multipart import DEFAULT_PART_SIZE, DEFAULT_THRESHOLD, MIN_PART_SIZE, put_in_parts
from daemon.objectstore.s3signing import use_known_payload_signer
from daemon.objectstore.s3tls import check_tls_settings
from daemon.spans import Payload, joined

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.literals import ServerSideEncryptionType
    from mypy_boto3_s3.type_defs import ListObjectsV2RequestTypeDef, PutObjectRequestTypeDef

__all__ = ["DEFAULT_REGION", "SSE_MODES", "S3Store"]

DEFAULT_REGION = "us-east-1"
SSE_MODES = ("AES256", "aws:kms")
MAX_PAGE_SIZE = 1000  # S3's own maximum for ListObjectsV2
DELETE_BATCH = 1000  # S3's own maximum for DeleteObjects



CHECKSUM_ATTEMPTS = 3
"""GETs of one object whose body fails its checksum before the mismatch is an error."""


class S3Store(ObjectLockMixin):
    """An :class:`~daemon.objectstore.ObjectStore` over ``bucket``, keys under ``prefix``.

    ``prefix`` is a key-like path without leading or trailing '/' (``""`` for the bucket
    root). ``endpoint_url`` selects an S3-compatible server and switches to path-style
    addressing; when it is None, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` from the
    environment are used, as every AWS SDK does. ``region`` defaults to ``AWS_REGION``,
    ``AWS_DEFAULT_REGION``, then us-east-1. ``profile`` selects a named AWS profile.
    ``sse`` (``"AES256"`` or ``"aws:kms"``, with an optional ``sse_kms_key_id``) is sent
    on every put. ``object_lock`` (``"governance"`` or ``"compliance"``) locks every
    create-only put of an immutable key for ``lock_s`` seconds (see s3lock).
    ``page_size`` caps keys per ListObjectsV2 call (1..1000; small values are for
    tests). A put larger than ``multipart_threshold`` goes in parts of ``part_size``
    (:mod:`~daemon.objectstore.s3multipart`). ``ca_bundle`` (PEM) verifies an https
    endpoint signed by a private CA; TLS mistakes are StoreErrors naming the setting
    (:mod:`~daemon.objectstore.s3tls`).
    The timeouts and ``max_attempts`` bound how long one operation can block
    before it raises :class:`StoreUnavailable`; ``max_pool_connections`` caps the
    connections kept for concurrent operations from many threads.

    Nothing is sent to S3 until the first operation. Raises :class:`ConfigError` for
    invalid options or an unknown profile. Safe to share between threads.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        object_lock: str | None = None,
        lock_s: float = 0.0,
        page_size: int = MAX_PAGE_SIZE,
        multipart_threshold: int = DEFAULT_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
        max_attempts: int = 3,
        max_pool_connections: int = 32,
        ca_bundle: str | None = None,
    ) -> None:
        if not bucket:
            raise ConfigError("no S3 bucket given", "use storage.url = s3://bucket[/prefix]")
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_key(prefix)
            except StoreError as exc:
                raise ConfigError(f"invalid S3 prefix: {exc.message}", exc.hint) from None
        if endpoint_url is None:
            # botocore honours these variables by itself; resolving them here as well
            # lets the store pick path-style addressing and name the endpoint in errors.
            endpoint_url = _endpoint_from_environment()
        if endpoint_url is not None:
            _check_endpoint_url(endpoint_url)
        check_tls_settings(endpoint_url, ca_bundle)
        if sse is not None and sse not in SSE_MODES:
            raise ConfigError(
                f"storage.sse {sse!r} is not a server-side encryption mode",
                "use AES256 (S3-managed keys) or aws:kms (KMS keys), or leave it unset",
            )
        if sse_kms_key_id is not None and sse != "aws:kms":
            raise ConfigError(
                "storage.sse_kms_key_id is set but storage.sse is not aws:kms",
                "set storage.sse = aws:kms, or remove the key id",
            )
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be in 1..{MAX_PAGE_SIZE}, got {page_size}")
        if part_size < MIN_PART_SIZE or multipart_threshold < part_size:
            raise ValueError(f"need {MIN_PART_SIZE} <= part_size <= multipart_threshold, "
                             f"got {part_size} and {multipart_threshold}")
        self._bucket = bucket
        self._root = f"{prefix}/" if prefix else ""
        self._endpoint_url = endpoint_url
        self._ca_bundle = ca_bundle
        self._sse = sse
        self._sse_kms_key_id = sse_kms_key_id
        self._lock_mode = lock_mode(object_lock, lock_s)
        self._lock_s = lock_s
        self._page_size = page_size
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._closed = False
        self._region = (
            region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        )
        self._facts = StoreFacts(bucket, self._region, sse, self._lock_mode is not None,
                                 endpoint_url, ca_bundle)
        config = Config(
            region_name=self._region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
            # S3-compatible servers rarely have wildcard DNS for virtual-hosted buckets.
            s3={"addressing_style": "path"} if endpoint_url else None,
            tcp_keepalive=True,
            max_pool_connections=max_pool_connections,
            user_agent_extra="vecwal",
        )
        try:
            self._session = boto3.session.Session(profile_name=profile, region_name=self._region)
            self._client: S3Client = self._session.client("s3", endpoint_url=endpoint_url, config=config,
                                                          verify=ca_bundle)
            use_known_payload_signer(self._client)  # a body with its SHA-256 is hashed once
        except ProfileNotFound:
            raise ConfigError(
                f"AWS profile {profile!r} is not defined",
                "define it in ~/.aws/config (or AWS_CONFIG_FILE), or unset storage.profile",
            ) from None
        except (BotoCoreError, ValueError) as exc:
            raise ConfigError(
                f"cannot set up the S3 client for {self.url}: {self._redact(str(exc))}",
                "check storage.endpoint_url, storage.region and the AWS configuration files",
            ) from None

    @property
    def url(self) -> str:
        return f"s3://{self._bucket}/{self._root.rstrip('/')}".rstrip("/")

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def prefix(self) -> str:
        """The repository prefix inside the bucket, without trailing '/' (may be "")."""
        return self._root.rstrip("/")

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self._endpoint_url!r}" if self._endpoint_url else ""
        return f"S3Store({self.url!r}{endpoint})"

    def put(self, key: str, data: Payload, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        body = joined(data)  # an HTTP body is one buffer
        request: PutObjectRequestTypeDef = {
            "Bucket": self._bucket,
            "Key": self._object_key(key),
            "Body": body,  # type: ignore[typeddict-item]  # botocore takes any bytes-like body
        }
        if sha256 is not None and len(body) <= self._multipart_threshold:
            # The server checks the body against the caller's digest (the sidecar's), and
            # botocore, given a checksum, computes no CRC32 of its own.
            request["ChecksumSHA256"] = base64.b64encode(sha256).decode("ascii")
        if create_only:
            request["IfNoneMatch"] = "*"
            self._add_lock(key, body, request)
        if self._sse is not None:
            request["ServerSideEncryption"] = _sse_mode(self._sse)
            if self._sse_kms_key_id is not None:
                request["SSEKMSKeyId"] = self._sse_kms_key_id
        with self._translated("writing", key):
            try:
                if len(body) > self._multipart_threshold:
                    put_in_parts(self._client, dict(request), body, self._part_size)
                else:
                    self._client.put_object(**request)
            except ClientError as exc:
                precondition_failed = error_code(exc) == "PreconditionFailed" or http_status(exc) == 412
                if create_only and precondition_failed:
                    raise ObjectExists(
                        f"object {key!r} already exists in {self.url}",
                        "create-only puts never overwrite; the existing object was kept",
                    ) from exc
                raise

    def get(self, key: str) -> bytes:
        object_key = self._object_key(key)
        with self._translated("reading", key, missing_is_not_found=True):
            return self._get_object(Bucket=self._bucket, Key=object_key)[0]

    def _get_object(self, **request: Any) -> tuple[bytes, int]:
        """GET and read the body: (bytes, HTTP status). A body that does not match the
        checksum sent with it (torn in transit, or, on S3-compatible servers whose
        overwrites are not atomic, a read that raced an overwrite) is read again; only
        repeated mismatches raise."""
        for attempt in range(CHECKSUM_ATTEMPTS):
            response = self._client.get_object(**request)
            try:
                with contextlib.closing(response["Body"]) as body:
                    return body.read(), response["ResponseMetadata"]["HTTPStatusCode"]
            except FlexibleChecksumError:
                if attempt == CHECKSUM_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"get_range needs start >= 0 and length >= 0, got {start}, {length}")
        object_key = self._object_key(key)
        if length == 0:
            # HTTP cannot express an empty range; the object must still exist.
            self.head(key)
            return b""
        with self._translated("reading", key, missing_is_not_found=True):
            try:
                data, status = self._get_object(
                    Bucket=self._bucket,
                    Key=object_key,
                    Range=f"bytes={start}-{start + length - 1}",
                )
            except ClientError as exc:
                if error_code(exc) == "InvalidRange" or http_status(exc) == 416:
                    return b""  # the range starts at or past the end of the object
                raise
        if status == 200:
            # The server ignored the Range header and sent the whole object.
            return data[start : start + length]
        return data

    def head(self, key: str) -> ObjectInfo:
        object_key = self._object_key(key)
        with self._translated("inspecting", key, missing_is_not_found=True):
            response = self._client.head_object(Bucket=self._bucket, Key=object_key)
        return ObjectInfo(key=key, size=response["ContentLength"])

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        self._check_open()
        return self._list_pages(prefix, start_after)

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        if self._lock_mode is not None:  # every version, or ObjectLocked
            for error in self._delete_all_versions([key]).values():
                raise error
            return
        with self._translated("deleting", key):
            self._client.delete_object(Bucket=self._bucket, Key=object_key)

    def delete_many(self, keys: Sequence[str]) -> dict[str, StoreError]:
        if self._lock_mode is not None:
            return self._delete_all_versions(keys)
        failed: dict[str, StoreError] = {}
        for i in range(0, len(keys), DELETE_BATCH):
            batch = list(keys[i:i + DELETE_BATCH])
            objects = [{"Key": self._object_key(k)} for k in batch]
            with self._translated("deleting", batch[0]):
                response = self._client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": objects, "Quiet": True})  # type: ignore[typeddict-item]
            for err in response.get("Errors", []):
                key = err.get("Key", "")[len(self._root):]
                denied = err.get("Code") == "AccessDenied"
                failed[key] = StoreError(f"deleting {self._where(key)} failed: "
                                         f"{err.get('Code')}: {err.get('Message')}",
                                         denied_hint("deleting") if denied else
                                         "check the S3 server's logs; prune retries it next run")
        return failed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()

    # -- internals -----------------------------------------------------------------

    def _object_key(self, key: str) -> str:
        check_key(key)
        self._check_open()
        return self._root + key

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.url} was used after close()", "this is a bug, please report it")

    def _list_pages(self, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        """ListObjectsV2 pages, each resumed with ``StartAfter`` = the last key seen.

        Resuming after the last key is what a continuation token means, and it is
        portable: s3proxy 4.0 url-encodes ``NextContinuationToken`` (boto3 always asks
        for ``EncodingType=url``) but does not decode it when it comes back, so with a
        key such as ``p=00001/x`` the token resumes *before* the page and the same page
        repeats forever. The token is only used for a truncated page without keys.
        Keys must arrive strictly ascending; anything else is a broken server and raises
        :class:`StoreError` rather than looping or yielding out of order.
        """
        request: ListObjectsV2RequestTypeDef = {
            "Bucket": self._bucket,
            "Prefix": self._root + prefix,
            "MaxKeys": self._page_size,
        }
        if start_after:
            request["StartAfter"] = self._root + start_after
        previous = start_after
        previous_token = ""
        while True:
            with self._translated("listing", prefix or "/"):
                response = self._client.list_objects_v2(**request)
            contents = response.get("Contents", [])
            for item in contents:
                key = item["Key"][len(self._root) :]
                if not item["Key"].startswith(self._root + prefix) or key <= previous:
                    raise StoreError(
                        f"listing {self.url} returned {item['Key']!r} out of order or "
                        f"outside prefix {prefix!r}",
                        "the S3 server violates ListObjectsV2 ordering; use a compliant one",
                    )
                previous = key
                yield ObjectInfo(key=key, size=item["Size"])
            if not response.get("IsTruncated"):
                return
            request.pop("ContinuationToken", None)
            if contents:
                request["StartAfter"] = self._root + previous
                continue
            token = response.get("NextContinuationToken", "")
            if not token or token == previous_token:
                raise StoreError(
                    f"listing {self.url}: truncated page without keys or a usable continuation token",
                    "the S3 server violates ListObjectsV2 pagination; use a compliant one",
                )
            previous_token = token
            request["ContinuationToken"] = token

    @contextlib.contextmanager
    def _translated(self, action: str, key: str, *, missing_is_not_found: bool = False) -> Iterator[None]:
        """Turn every botocore/transport exception raised inside into a vecwal error."""
        try:
            yield
        except ClientError as exc:
            raise client_error(exc, action, self._where(key), self._facts, self._redact,
                               missing_is_not_found=missing_is_not_found) from exc
        except (BotoCoreError, OSError, urllib3.exceptions.HTTPError) as exc:
            raise transport_error(exc, action, self._where(key), self._facts, self._redact) from exc

    def _where(self, key: str) -> str:
        location = f"{self.url}/{key}" if key != "/" else self.url
        if self._endpoint_url:
            location += f" at {self._endpoint_url}"
        return location

    def _redact(self, text: str) -> str:
        """Blank out any secret credential value that found its way into ``text``.

        Secrets never travel to the server (SigV4 only sends a signature), so this is a
        second line of defence against local sources such as a credential_process's
        error output. Access key ids are not secret and stay readable.
        """
        try:
            credentials = self._session.get_credentials()
            secrets = [credentials.secret_key, credentials.token] if credentials is not None else []
        except Exception:  # never let redaction itself fail the error path
            secrets = []
        for env in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            secrets.append(os.environ.get(env))
        for secret in secrets:
            if secret and len(secret) >= 8:
                text = text.replace(secret, "***")
        return text




def _sse_mode(sse: str) -> ServerSideEncryptionType:
    if sse == "AES256":
        return "AES256"
    return "aws:kms"


def _endpoint_from_environment() -> str | None:
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    for variable in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return None


def _check_endpoint_url(endpoint_url: str) -> None:
    parts = urllib.parse.urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"storage.endpoint_url {endpoint_url!r} is not an http(s) URL",
            "use e.g. http://127.0.0.1:9000 or https://s3.example.com",
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "storage.endpoint_url contains credentials (user:password@); refusing to use it",
            "remove them and provide credentials the standard AWS way "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an instance role)",
        )
