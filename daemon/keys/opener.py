"""Opening the configured repository's store (``store_opener``, what every command and worker
process opens), with its encryption: the raw store, its keyring unwrapped by the configured KEK,
and the :class:`~daemon.objectstore.encrypted.EncryptedStore` over both."""

from __future__ import annotations

import functools
from collections.abc import Callable

from daemon.config import Config
from daemon.errors import VecwalError
from daemon.keys import open_kek
from daemon.keys.keyring import Keyring
from daemon.objectstore import ObjectStore
from daemon.objectstore.encrypted import EncryptedStore


def open_encrypted(open_inner: Callable[[], ObjectStore], kek: str, kms_endpoint_url: str = "",
                   kms_region: str = "", per_tenant_keys: bool | None = None) -> EncryptedStore:
    """The encrypted view of the store ``open_inner`` opens (picklable with ``functools.partial``
    of top-level functions, so a worker process opens its own). A new repository gets its
    identity and first key here. ``per_tenant_keys`` (None: either) must be what the
    repository was created with."""
    inner = open_inner()
    try:
        keyring = Keyring.open(inner, open_kek(kek, kms_endpoint_url=kms_endpoint_url,
                                                kms_region=kms_region),
                               per_tenant_keys=per_tenant_keys)
    except VecwalError:
        inner.close()
        raise
    return EncryptedStore(inner, keyring)


def store_opener(config: Config) -> Callable[[], ObjectStore]:
    """Opens the configured store; picklable, so a worker process can open its own.

    With [storage] object_lock, immutable objects are locked for ``lock_seconds(config)``;
    with [encryption] enabled, the store seals every object (``daemon.keys.opener``)."""
    from daemon.config_checks import lock_seconds
    from daemon.filemode import parse_file_mode
    from daemon.objectstore import open_store

    s = config.storage
    lock_s = lock_seconds(config)
    raw: Callable[[], ObjectStore] = functools.partial(
        open_store, s.url, endpoint_url=s.endpoint_url or None, region=s.region or None,
        sse=s.sse or None, sse_kms_key_id=s.sse_kms_key_id or None,
        object_lock=s.object_lock or None, lock_s=lock_s,
        file_mode=parse_file_mode(s.file_mode), ca_bundle=s.ca_bundle or None)
    e = config.encryption
    if not e.enabled:
        return raw
    return functools.partial(open_encrypted, raw, e.kek, e.kms_endpoint_url, e.kms_region,
                             e.per_tenant_keys)
