"""Key-encryption keys (KEKs): what wraps the repository's own keys.

vecwal's keys form a short hierarchy (like restic's and Kopia's, and the AWS Encryption SDK's
envelope):

* the **KEK**, configured as ``[encryption] kek``, never stored in the repository: a local key
  (``keyfile:/path``, ``env:VAR``) or a KMS key (``aws-kms:KEY_ID_OR_ARN``, ``daemon.keys.kms``);
* the **keyring** (:mod:`daemon.keys.keyring`): repository keys, each a random 256-bit key
  wrapped by the KEK and kept under ``keys/`` (outside Object Lock, so a rotation re-wraps
  them in place and ``vecwal forget`` can destroy a tenant's);
* a random **data key per object**, wrapped by the current repository key and stored in the
  object's header (:mod:`daemon.objectstore.encrypted`).

The KEK is used only to open the keyring (one unwrap per repository key, at start) and to
create or re-wrap a repository key; it never touches object data.

A :class:`KeyEncryptionKey` wraps with an *encryption context*: names and values bound to the
wrapped key as associated data (KMS's EncryptionContext), here the repository's id and the
key's id, so a wrapped key copied into another repository or under another id fails to unwrap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.errors import ConfigError, EncryptionKeyError

__all__ = ["KEY_BYTES", "KeyEncryptionKey", "LocalKek", "context_bytes", "open_kek", "parse_key_text"]

KEY_BYTES = 32
_NONCE = 12
_LOCAL_WRAP = b"vwk1"


class KeyEncryptionKey(Protocol):
    """Wraps and unwraps 32-byte keys. Implementations hold no state beyond the key (or the
    client that reaches it) and are safe to share between threads."""

    @property
    def name(self) -> str:
        """Identifies the KEK without revealing it, safe to log and to store: ``keyfile:`` or
        ``env:`` with a fingerprint of the key, ``aws-kms:`` with the key's id or ARN."""
        ...

    def generate(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        """A new random 32-byte key and its wrapped form (KMS GenerateDataKey)."""
        ...

    def wrap(self, key: bytes, context: Mapping[str, str]) -> bytes:
        """``key`` wrapped under this KEK (KMS Encrypt): re-wrapping during a rotation."""
        ...

    def unwrap(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """The key ``wrapped`` holds (KMS Decrypt). Raises :class:`EncryptionKeyError` when
        this KEK did not wrap it, the context differs or the key service refuses, and
        :class:`~daemon.errors.KeyServiceUnavailable` when the service cannot be reached."""
        ...


def context_bytes(context: Mapping[str, str]) -> bytes:
    """A canonical encoding of an encryption context (sorted ``name=value`` lines)."""
    return "".join(f"{k}={v}\n" for k, v in sorted(context.items())).encode()


class LocalKek:
    """A KEK held in this process (from a key file or an environment variable): wraps with
    AES-256-GCM, the context as associated data. Wrapped form: ``vwk1`` | nonce (12) |
    ciphertext and tag (48)."""

    def __init__(self, key: bytes, scheme: str) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a KEK is 32 bytes")
        self._aead = AESGCM(key)
        fingerprint = hmac.new(key, b"vecwal kek fingerprint", hashlib.sha256).hexdigest()[:16]
        self._name = f"{scheme}:{fingerprint}"

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"LocalKek({self._name})"

    def generate(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        key = os.urandom(KEY_BYTES)
        return key, self.wrap(key, context)

    def wrap(self, key: bytes, context: Mapping[str, str]) -> bytes:
        nonce = os.urandom(_NONCE)
        return _LOCAL_WRAP + nonce + self._aead.encrypt(nonce, key, context_bytes(context))

    def unwrap(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        if not wrapped.startswith(_LOCAL_WRAP):
            raise EncryptionKeyError(f"a key was not wrapped by a local KEK ({self._name})",
                                     "configure the [encryption] kek that wrapped the keyring")
        nonce = wrapped[4:4 + _NONCE]
        try:
            return self._aead.decrypt(nonce, wrapped[4 + _NONCE:], context_bytes(context))
        except InvalidTag:
            raise EncryptionKeyError(
                f"the key-encryption key {self._name} does not open a key of this repository",
                "configure the [encryption] kek that wrapped the keyring (`vecwal keys list` "
                "names it), or finish an interrupted `vecwal keys rotate`") from None


def parse_key_text(data: bytes, where: str) -> bytes:
    """A 32-byte key from its raw bytes, base64 or hex text (surrounding whitespace ignored)."""
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    decoders = ((64, binascii.unhexlify), (44, base64.b64decode), (43, base64.urlsafe_b64decode))
    for length, decode in decoders:
        if len(text) == length:
            try:
                key = decode(text + (b"=" if length == 43 else b""))
            except (binascii.Error, ValueError):
                continue
            if len(key) == KEY_BYTES:
                return key
    raise ConfigError(f"{where} does not hold a 32-byte key (raw, base64 or hex)",
                      "make one with `vecwal keys generate --out PATH` (or "
                      "`openssl rand -base64 32`)")


def read_key_file(path: Path) -> bytes:
    """The key in ``path``, refused when other users could read or replace it."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"[encryption] kek: key file {path} does not exist",
                          "make one with `vecwal keys generate --out PATH`") from None
    except OSError as exc:
        raise ConfigError(f"[encryption] kek: key file {path} cannot be read ({exc.strerror})",
                          "run vecwal as the user that owns the key file") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"[encryption] kek: key file {path} is open to other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod 600 {path}, and rotate the key (`vecwal keys rotate`) if others read it")
    return parse_key_text(data, f"key file {path}")


def open_kek(spec: str, *, kms_endpoint_url: str = "", kms_region: str = "",
             environ: Mapping[str, str] | None = None) -> KeyEncryptionKey:
    """The KEK ``spec`` names (``keyfile:/path``, ``env:VAR`` or ``aws-kms:KEY``)."""
    scheme, _, rest = spec.partition(":")
    if scheme == "keyfile":
        return LocalKek(read_key_file(Path(rest)), "keyfile")
    if scheme == "env":
        env = os.environ if environ is None else environ
        value = env.get(rest)
        if not value:
            raise ConfigError(f"[encryption] kek: environment variable {rest} is not set",
                              f"export {rest} with the base64 of 32 random bytes")
        return LocalKek(parse_key_text(value.encode(), f"environment variable {rest}"), "env")
    if scheme == "aws-kms":
        from daemon.keys.kms import AwsKmsKek

        return AwsKmsKek(rest, endpoint_url=kms_endpoint_url, region=kms_region)
    raise ConfigError(f"[encryption] kek is {spec!r}",
                      'use "keyfile:/path", "env:VARIABLE" or "aws-kms:KEY_ID_OR_ARN"')
