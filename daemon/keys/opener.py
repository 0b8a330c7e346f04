"""Opening a repository's store with its encryption: the raw store, its keyring unwrapped by
the configured KEK, and the :class:`~daemon.objectstore.encrypted.EncryptedStore` over both."""

from __future__ import annotations

from collections.abc import Callable

from daemon.errors import VecwalError
from daemon.keys import open_kek
from daemon.keys.keyring import Keyring
from daemon.objectstore import ObjectStore
from daemon.objectstore.encrypted import EncryptedStore


def open_encrypted(open_inner: Callable[[], ObjectStore], kek: str, kms_endpoint_url: str = "",
                   kms_region: str = "") -> EncryptedStore:
    """The encrypted view of the store ``open_inner`` opens (picklable with ``functools.partial``
    of top-level functions, so a worker process opens its own). A new repository gets its
    identity and first key here."""
    inner = open_inner()
    try:
        keyring = Keyring.open(inner, open_kek(kek, kms_endpoint_url=kms_endpoint_url,
                                                kms_region=kms_region))
    except VecwalError:
        inner.close()
        raise
    return EncryptedStore(inner, keyring)
