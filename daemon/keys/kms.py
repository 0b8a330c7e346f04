"""The ``aws-kms:`` key-encryption key: a key held by AWS KMS (or a KMS-compatible server),
reached through boto3's KMS client. Its material never leaves the service.

==============  =============================================================================
``generate``    GenerateDataKey(KeyId, KeySpec=AES_256, EncryptionContext): the key in
                plaintext and its CiphertextBlob, from one request
``wrap``        Encrypt(KeyId, Plaintext, EncryptionContext): re-wrapping during a rotation
``unwrap``      Decrypt(KeyId, CiphertextBlob, EncryptionContext); KeyId is always sent, so KMS
                refuses a blob another key made instead of decrypting it with that key
==============  =============================================================================

The encryption context is bound to the ciphertext by KMS (and logged by CloudTrail): a
wrapped key moved to another repository or id fails to unwrap.

Endpoint: ``endpoint_url`` when given, else whatever boto3 resolves (``AWS_ENDPOINT_URL_KMS``,
``AWS_ENDPOINT_URL``, the shared config, else AWS in ``region``). Region: ``region``, else
``AWS_REGION``, ``AWS_DEFAULT_REGION``, else us-east-1. Credentials: the standard AWS chain
only, never a setting. Requests fail fast (5 s connect, 10 s read timeouts, botocore's standard
retry mode with 3 attempts): the caller owns the real retry policy.

Errors (boto3's exceptions never leave this module):

* :class:`~daemon.errors.KeyServiceUnavailable` (transient; the caller backs off and retries):
  the endpoint cannot be reached, a timeout, throttling, KMS's internal and dependency errors,
  HTTP 5xx;
* :class:`~daemon.errors.EncryptionKeyError` (an operator must act), each with a hint naming
  the fix: access denied or credentials refused, no credentials at all, the key does not exist
  (wrong id or region), is disabled, is pending deletion (or otherwise unusable), is not a
  symmetric encryption key, or the blob was not made by this key under this context.

No message carries key material, a wrapped key or a credential: KMS's own error messages name
only the key, and secret credential values are blanked from every message as a second line of
defence.

The boto3 client is created on first use, not in the constructor, and dropped when the object
is pickled (it travels to worker processes inside a ``functools.partial``; each process makes
its own client). Safe to share between threads.
"""

from __future__ import annotations

import os
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, NoReturn

import boto3
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    SSLError,
)

from daemon.errors import ConfigError, EncryptionKeyError, KeyServiceUnavailable

__all__ = ["DEFAULT_REGION", "AwsKmsKek"]

DEFAULT_REGION = "us-east-1"
KEY_BYTES = 32

_TRANSIENT = frozenset({
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",  # AWS: "the specified KMS key was not available. You can retry"
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
})
_ACCESS = frozenset({
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "IncompleteSignature",
    "ExpiredTokenException",
    "ExpiredToken",
    "MissingAuthenticationToken",
})
_WRONG_KEY_OR_CONTEXT = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


class AwsKmsKek:
    """A :class:`~daemon.keys.KeyEncryptionKey` held by KMS: ``key_id`` is a key id, key ARN,
    alias name (``alias/...``) or alias ARN, used as configured. Nothing is sent to KMS until
    the first call. Raises :class:`~daemon.errors.ConfigError` for an empty key id or a
    malformed endpoint URL."""

    def __init__(
        self,
        key_id: str,
        *,
        endpoint_url: str = "",
        region: str = "",
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        key_id = key_id.strip()
        if not key_id:
            raise ConfigError("[encryption] kek is aws-kms: without a key",
                              'name the KMS key: "aws-kms:KEY_ID", an ARN or "aws-kms:alias/NAME"')
        endpoint_url = endpoint_url.strip()
        if endpoint_url:
            parsed = urllib.parse.urlsplit(endpoint_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ConfigError(f"[encryption] kms_endpoint_url {endpoint_url!r} is not an "
                                  "http(s) URL", "set it to https://HOST[:PORT], or leave it "
                                  "empty for AWS")
        self._key_id = key_id
        self._endpoint_url = endpoint_url
        self._region = (region.strip() or os.environ.get("AWS_REGION")
                        or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION)
        self._timeouts = (connect_timeout, read_timeout, max_attempts)
        self._lock = threading.Lock()
        self._session: Any = None
        self._client: Any = None

    @property
    def name(self) -> str:
        return f"aws-kms:{self._key_id}"

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def region(self) -> str:
        return self._region

    def __repr__(self) -> str:
        return f"AwsKmsKek({self.name}, region={self._region})"

    # -- pickling: the client (sockets, locks) stays behind; each process makes its own ----

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for transient in ("_lock", "_session", "_client"):
            del state[transient]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._session = None
        self._client = None

    @property
    def client(self) -> Any:
        """boto3's KMS client, created on first use (tests stub it)."""
        with self._lock:
            if self._client is None:
                connect_timeout, read_timeout, max_attempts = self._timeouts
                config = Config(
                    region_name=self._region,
                    connect_timeout=connect_timeout,
                    read_timeout=read_timeout,
                    retries={"mode": "standard", "max_attempts": max_attempts},
                    user_agent_extra="vecwal",
                )
                try:
                    session = boto3.session.Session(region_name=self._region)
                    self._client = session.client("kms", endpoint_url=self._endpoint_url or None,
                                                  config=config)
                except (BotoCoreError, ValueError) as exc:
                    raise EncryptionKeyError(
                        f"cannot set up the KMS client for {self.name}: "
                        f"{self._redact(str(exc))}",
                        "check [encryption] kms_endpoint_url and kms_region, and the AWS "
                        "configuration files (AWS_CONFIG_FILE, AWS_PROFILE)") from None
                self._session = session
            return self._client

    # -- the KeyEncryptionKey protocol ------------------------------------------------------

    def generate(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        try:
            reply = self.client.generate_data_key(KeyId=self._key_id, KeySpec="AES_256",
                                                  EncryptionContext=dict(context))
        except Exception as exc:
            self._raise("generate a data key with", exc)
        key, wrapped = bytes(reply["Plaintext"]), bytes(reply["CiphertextBlob"])
        self._check_length(key, "GenerateDataKey")
        return key, wrapped

    def wrap(self, key: bytes, context: Mapping[str, str]) -> bytes:
        if len(key) != KEY_BYTES:
            raise ValueError("a wrapped key is 32 bytes")
        try:
            reply = self.client.encrypt(KeyId=self._key_id, Plaintext=key,
                                        EncryptionContext=dict(context))
        except Exception as exc:
            self._raise("wrap a key with", exc)
        return bytes(reply["CiphertextBlob"])

    def unwrap(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        try:
            reply = self.client.decrypt(KeyId=self._key_id, CiphertextBlob=wrapped,
                                        EncryptionContext=dict(context))
        except Exception as exc:
            self._raise("unwrap a key with", exc)
        key = bytes(reply["Plaintext"])
        self._check_length(key, "Decrypt")
        return key

    # -- errors ------------------------------------------------------------------------------

    def _check_length(self, key: bytes, action: str) -> None:
        if len(key) != KEY_BYTES:
            raise EncryptionKeyError(
                f"KMS {action} with {self.name} returned a {len(key)}-byte key, not a 32-byte one",
                "the wrapped key was not made by vecwal, or the KMS server is not compatible")

    def _where(self) -> str:
        if self._endpoint_url:
            return f"at {self._endpoint_url}"
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
        return f"at {endpoint}" if isinstance(endpoint, str) else f"in region {self._region}"

    def _raise(self, action: str, exc: Exception) -> NoReturn:
        """Turn what boto3 raised into a vecwal error (see the module doc), or re-raise."""
        if isinstance(exc, EncryptionKeyError | KeyServiceUnavailable | ConfigError):
            raise exc
        if isinstance(exc, ClientError):
            self._raise_client_error(action, exc)
        if isinstance(exc, BotoCoreError | OSError | urllib3.exceptions.HTTPError):
            self._raise_transport_error(action, exc)
        raise exc

    def _raise_client_error(self, action: str, exc: ClientError) -> NoReturn:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        said = str(error.get("Message") or "").strip()
        message = self._redact(
            f"KMS refused to {action} {self.name} {self._where()}: {code or 'error'} "
            f"(HTTP {status or '?'})" + (f": {said}" if said else ""))
        key = self._key_id

        def fail(hint: str) -> NoReturn:
            raise EncryptionKeyError(message, hint) from None

        if code in _TRANSIENT or status == 429 or status >= 500:
            raise KeyServiceUnavailable(
                message, "KMS is throttling or failing for now; vecwal retries with backoff "
                "(if it persists, check the key service's health and request quotas)") from None
        if code in _ACCESS or status in (401, 403):
            fail(f"grant the identity vecwal runs as kms:GenerateDataKey, kms:Encrypt and "
                 f"kms:Decrypt on {key} (key policy or IAM), and check its credentials "
                 "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role)")
        if code == "NotFoundException":
            fail(f"no KMS key {key} {self._where()}: check [encryption] kek and the region "
                 "([encryption] kms_region, AWS_REGION); a key id names a key in one region only")
        if code == "DisabledException":
            fail(f"the key is disabled: `aws kms enable-key --key-id {key}` if that was not "
                 "intended")
        if code == "KMSInvalidStateException":
            fail(f"the key cannot be used in its state; if it is scheduled for deletion and "
                 f"that was not intended, `aws kms cancel-key-deletion --key-id {key}` then "
                 f"`aws kms enable-key --key-id {key}` (`aws kms describe-key` shows its state)")
        if code in _WRONG_KEY_OR_CONTEXT:
            fail("the wrapped key was not made by this KMS key for this repository: configure "
                 "the [encryption] kek that wrapped the keyring (`vecwal keys list` names it), "
                 "or finish an interrupted `vecwal keys rotate`")
        if code == "InvalidKeyUsageException":
            fail("use a symmetric encryption key (KeySpec SYMMETRIC_DEFAULT, KeyUsage "
                 "ENCRYPT_DECRYPT) as [encryption] kek")
        fail("unexpected KMS error; check [encryption] kek and the key service's logs")

    def _raise_transport_error(self, action: str, exc: BaseException) -> NoReturn:
        # botocore's parameter errors quote the values sent: never the (key) material here
        reason = ("invalid request parameters" if isinstance(exc, ParamValidationError)
                  else str(exc) or type(exc).__name__)
        message = self._redact(f"cannot {action} {self.name} {self._where()}: {reason}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            raise EncryptionKeyError(
                message, "no usable AWS credentials for KMS: set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or give the host a role") from None
        if isinstance(exc, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise EncryptionKeyError(
                message, "the KMS endpoint's TLS certificate is not trusted: fix it, or point "
                "AWS_CA_BUNDLE at the CA that signed it") from None
        transport = (ConnectionError, HTTPClientError, IncompleteReadError, OSError,
                     urllib3.exceptions.HTTPError)
        if isinstance(exc, transport):
            raise KeyServiceUnavailable(
                message, "check that the KMS endpoint is up and reachable from this host "
                "([encryption] kms_endpoint_url, DNS, firewall, proxy); vecwal retries with "
                "backoff meanwhile") from None
        raise EncryptionKeyError(message, "unexpected KMS client error; check [encryption] kek "
                                 "(a malformed key id?) and the AWS configuration") from None

    def _redact(self, text: str) -> str:
        """Blank out any secret credential value that found its way into ``text`` (never from
        KMS, which sees only a signature; a credential_process's output could)."""
        secrets = [os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")]
        try:
            credentials = self._session.get_credentials() if self._session is not None else None
            if credentials is not None:
                secrets += [credentials.secret_key, credentials.token]
        except Exception:  # redaction must never fail the error path
            pass
        for secret in secrets:
            if secret and len(secret) >= 8:
                text = text.replace(secret, "***")
        return text
