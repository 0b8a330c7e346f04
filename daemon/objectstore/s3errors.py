"""What an S3 failure means to vecwal: botocore's client and transport errors classified
into :class:`StoreError` (a configuration or permission problem: retrying will not help),
:class:`StoreUnavailable` (an outage, throttling, a transient server error: the caller backs
off) and :class:`ObjectNotFound`, each with a hint naming the setting or the fix.

Pure: ``client_error`` and ``transport_error`` build the error from the exception and what
the store knows of itself (``Where``); ``S3Store`` raises it. Server differences they absorb
are listed in :mod:`daemon.objectstore.s3`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import urllib3.exceptions
from botocore.exceptions import (
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)

from daemon.errors import ObjectNotFound, StoreError, StoreUnavailable
from daemon.objectstore.permissions import denied_hint
from daemon.objectstore.s3tls import tls_mistake

_THROTTLING = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
    }
)
_TRANSIENT = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "OperationAborted",
        "XMinioServerNotInitialized",
    }
)
_CREDENTIALS = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "MissingSecurityHeader",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "AccountProblem",
        "AllAccessDisabled",
        "NotSignedUp",
        "KMS.AccessDeniedException",
    }
)
_WRONG_REGION = frozenset(
    {
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
        "AuthorizationQueryParametersError",
    }
)

_CREDENTIALS_HINT = (
    "check the credentials vecwal runs with (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "AWS_PROFILE or the instance role)"
)
_UNREACHABLE_HINT = (
    "check that the S3 endpoint is up and reachable from this host (storage.endpoint_url, "
    "DNS, firewall, proxy); vecwal retries with backoff meanwhile"
)


@dataclass(frozen=True)
class StoreFacts:
    """What an error's hint names about the store that met it."""

    bucket: str
    region: str
    sse: str | None
    locked: bool
    endpoint_url: str | None
    ca_bundle: str | None


def client_error(exc: ClientError, action: str, where: str, facts: StoreFacts,
                 redact: Callable[[str], str], *, missing_is_not_found: bool = False
                 ) -> StoreError:
    """The vecwal error for an S3 error answer to ``action`` on ``where``."""
    code = error_code(exc)
    status = http_status(exc)
    server_message = str(exc.response.get("Error", {}).get("Message") or "").strip()
    detail = f"{code or 'error'} (HTTP {status or '?'})"
    message = redact(f"{action} {where} failed: {detail}"
                     + (f": {server_message}" if server_message else ""))
    kind, hint = _classify(code, status, server_message, action, facts, missing_is_not_found)
    return kind(message, hint)


def _classify(code: str, status: int, server_message: str, action: str, facts: StoreFacts,
              missing_is_not_found: bool) -> tuple[type[StoreError], str]:
    if code == "NoSuchBucket":
        return StoreError, (f"create bucket {facts.bucket!r} (vecwal never creates buckets) or "
                            "fix storage.url / storage.endpoint_url")
    if missing_is_not_found and (code in ("NoSuchKey", "NotFound") or status == 404):
        return ObjectNotFound, "check the key, and that storage.url points at the right repository"
    if code in ("PreconditionFailed",) or status == 412:
        return StoreError, "a conditional request failed; this is expected for create-only puts"
    if code == "InvalidRange" or status == 416:
        return StoreError, "the requested byte range is outside the object"
    if code in _THROTTLING or status == 429:
        return StoreUnavailable, "the S3 service is throttling requests; vecwal backs off"
    if code == "ConditionalRequestConflict":
        return StoreUnavailable, "a concurrent conditional write of the same key was in flight; retry"
    if code == "RequestTimeTooSkewed":
        return StoreError, "this host's clock is off by minutes; synchronize it (NTP)"
    if code in _WRONG_REGION or status == 301:
        return StoreError, (f"the bucket is not in region {facts.region!r}; set storage.region "
                            "(or AWS_REGION) to the bucket's region")
    if code.startswith("KMS.") or (facts.sse == "aws:kms" and "KMS" in server_message):
        return StoreError, "check storage.sse_kms_key_id and that the credentials may use that KMS key"
    if code == "AccessDenied" or (status == 403 and code not in _CREDENTIALS):
        return StoreError, denied_hint(action, facts.locked)
    if code in _CREDENTIALS or status in (401, 403):
        return StoreError, _CREDENTIALS_HINT
    if code == "NotImplemented" or status == 501:
        return StoreError, ("the S3 server does not implement a feature vecwal asked for: unset "
                            "storage.sse if set; create-only puts need If-None-Match support")
    if code in _TRANSIENT or status == 408 or status >= 500:
        return StoreUnavailable, "the S3 service reported a transient error; vecwal retries"
    return StoreError, "unexpected S3 error; check the request in the S3 server's logs"


_TRANSPORT = (ConnectionError, HTTPClientError, IncompleteReadError, OSError,
              urllib3.exceptions.HTTPError)


def transport_error(exc: BaseException, action: str, where: str, facts: StoreFacts,
                    redact: Callable[[str], str]) -> StoreError:
    """The vecwal error for a request to ``where`` that got no S3 answer (or a torn one)."""
    message = f"{action} {where} failed: {redact(str(exc) or type(exc).__name__)}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return StoreError(message, "no usable AWS credentials: set AWS_ACCESS_KEY_ID/"
                          "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the host an instance role")
    tls_hint = tls_mistake(exc, facts.endpoint_url, facts.ca_bundle)
    if tls_hint is not None:  # not an outage: retrying would hang on it
        return StoreError(message, tls_hint)
    if isinstance(exc, FlexibleChecksumError):
        return StoreUnavailable(message, "the object's bytes kept failing their checksum in "
                                "transit; retry, and check the network or the server if it "
                                "persists")
    if isinstance(exc, _TRANSPORT):
        return StoreUnavailable(message, _UNREACHABLE_HINT)
    return StoreError(message, "unexpected S3 client error; this may be a bug")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
