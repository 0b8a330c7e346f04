"""Typed errors. Library code raises these; only the CLI prints them and exits.

Every error carries a one-line ``hint`` telling the operator what to do about it.
"""

from __future__ import annotations


class VecwalError(Exception):
    """Root of every error vecwal raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class ConfigError(VecwalError):
    """The configuration file or an environment override is wrong."""

    exit_code = 2


class StoreError(VecwalError):
    """An object store operation failed for a reason retrying will not fix."""


class StoreUnavailable(StoreError):
    """The object store could not be reached, or answered with a transient error.

    Callers retry these with backoff; nothing is lost while they do.
    """


class ObjectNotFound(StoreError):
    """The object does not exist."""


class ObjectExists(StoreError):
    """A create-only put found an object already stored under the key."""


class IntegrityError(VecwalError):
    """Stored data contradicts what vecwal expected: a different object under an immutable
    key, a checksum mismatch, an undecodable segment. Never retried, never ignored."""

    exit_code = 3


class BadEvent(VecwalError):
    """One ingestion event failed validation. Capture quarantines it and carries on."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}", "the raw event is kept under quarantine/")
        self.reason = reason
        self.detail = detail


class ObjectLocked(StoreError):
    """The object is under S3 Object Lock retention (or a legal hold): the server refuses to
    delete or shorten it until ``retain_until_ms`` (None: a legal hold, or unknown)."""

    def __init__(self, message: str, hint: str = "", retain_until_ms: int | None = None) -> None:
        super().__init__(message, hint)
        self.retain_until_ms = retain_until_ms


class EncryptionKeyError(VecwalError):
    """An encryption key cannot be used: the key-encryption key is missing, unreadable by
    others' standards (a key file other users can read), refused by the key service, or not
    the one that wrapped the repository's keys; or a tenant's key was destroyed
    (:class:`TenantForgotten`). Retrying will not help; an operator must act."""

    exit_code = 2


class KeyServiceUnavailable(StoreUnavailable):
    """The key service (KMS) could not be reached or answered with a transient error;
    retried with backoff like a store outage."""
